/*
 * cow: 4 MiB of private anonymous memory written by main and then shared copy-on-write with a forked child C
 * (zdtm cow00). A --leave-running snapshot must leave the pages shared: a dump that reads them with
 * process_vm_readv makes the kernel give main copies (it pins them), doubling the tree's memory.
 * Verify: every page of the region has the same frame in main and in C (/proc/PID/pagemap, read as root) and
 * the bytes are intact. Only meaningful in the host PID namespace and without a restore (a restore makes every
 * process's memory its own).
 */
#include "zdtm.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define LEN (4u << 20)
#define PFN_MASK ((1ull << 55) - 1)
#define PRESENT (1ull << 63)

/* Pagemap entries of [addr, addr + LEN) in `pid`, into out (LEN / PAGE entries); 0 or -1. */
static int pagemap(pid_t pid, const void *addr, uint64_t *out)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t want = (ssize_t)(LEN / PAGE * sizeof(uint64_t));
	ssize_t n = pread(fd, out, (size_t)want, (off_t)((uintptr_t)addr / PAGE * sizeof(uint64_t)));
	close(fd);
	return n == want ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	unsigned char *m = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "region");
	zt_fill_random(m, LEN, 42);
	pid_t c = fork();
	if (c < 0)
		zt_setup_failed(&z, "fork", "C");
	if (c == 0) {
		for (;;)
			pause();
	}
	zt_info(&z, "region", "%p", (void *)m);
	pid_t pids[] = { getpid(), c };
	zt_ready(&z, pids, 2);
	zt_wait_sleeping(&z);

	static uint64_t mine[LEN / PAGE], its[LEN / PAGE];
	if (pagemap(getpid(), m, mine) || pagemap(c, m, its))
		zt_fail_sys(&z, "pread", "pagemap");
	else {
		unsigned unshared = 0;
		for (unsigned i = 0; i < LEN / PAGE; i++)
			if (!(mine[i] & PRESENT) || (mine[i] & PFN_MASK) != (its[i] & PFN_MASK))
				unshared++;
		if (unshared)
			zt_fail(&z, "%u of %u pages are no longer shared copy-on-write with C", unshared, LEN / PAGE);
	}
	size_t bad = zt_check_random(m, LEN, 42);
	if (bad != (size_t)-1)
		zt_fail(&z, "region byte %zu differs", bad);
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	return zt_finish(&z);
}
