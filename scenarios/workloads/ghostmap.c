/*
 * ghostmap: mappings of deleted files (what Python's multiprocessing and a package upgrade leave behind).
 * --sem 1: a POSIX semaphore (sem_open, value 3) and a 3-page data file in /dev/shm, both mapped MAP_SHARED,
 *   the data file also MAP_PRIVATE with its middle page written (a private copy), then both unlinked (sem_unlink),
 *   and two forked children that share the mappings. Verify: the semaphore's value and the data are there, the
 *   private page kept its own bytes while the file's did not change, the mapping is of a deleted file; then the
 *   parent tells the children (through the shared data file) to sem_wait once each and to check the data: the
 *   parent must see the semaphore at 1 and both answers, which holds only if all three map one inode again.
 * --exe 1: the program runs from a copy of itself in DIR, which it then deletes (text, data and RELRO are private
 *   mappings of a deleted file, /proc/self/exe names it); --exe 2: a new file is put at the copy's path too (an
 *   upgrade). Verify: /proc/self/exe is a deleted file with the copy's size and bytes, a global written before
 *   the dump kept its value, and with --exe 2 the new file is still at the path, a different inode.
 * --linked 1: a mapped file whose name was removed while another name still links it (refused by dump: a ghost
 *   copy would not be that inode). Verify: the mapping still reads the file's bytes.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define DATA_PAGES 3
#define CHILDREN 2
#define SEED 21

/* The last page of the shared data file is the parent's and children's mailbox (not random data). */
struct mailbox {
	volatile int go;
	volatile int ack[CHILDREN];
};

static volatile long data_word = 12345; /* .data of the (deleted) executable */

static uint64_t checksum(const unsigned char *b, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

/* Size and checksum of a whole file (the executable), or 0 on error. */
static uint64_t file_sum(const char *path, off_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	unsigned char *b = malloc(st.st_size);
	uint64_t h = 0;
	if (b && pread(fd, b, st.st_size, 0) == st.st_size)
		h = checksum(b, st.st_size);
	free(b);
	close(fd);
	*size = st.st_size;
	return h;
}

static bool mapping_deleted(const void *addr, size_t len)
{
	char link[96], target[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/self/map_files/%lx-%lx", (unsigned long)addr, (unsigned long)addr + len);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = 0;
	return n > 10 && !strcmp(target + n - 10, " (deleted)");
}

static void child(sem_t *sem, unsigned char *data, int i)
{
	struct mailbox *mb = (struct mailbox *)(data + (DATA_PAGES - 1) * PAGE);
	while (!mb->go)
		zt_sleep_ns(10 * 1000 * 1000);
	bool ok = zt_check_random(data, PAGE, SEED) == (size_t)-1 && zt_check_random(data + PAGE, PAGE, SEED + 1) == (size_t)-1;
	ok = sem_wait(sem) == 0 && ok;
	mb->ack[i] = ok ? 1 : 2;
	_exit(0);
}

static void setup_sem(struct zt *z, sem_t **sem, unsigned char **data, unsigned char **priv, pid_t *kids)
{
	char name[64];
	snprintf(name, sizeof(name), "/godwit-ghostmap-%d", getpid());
	*sem = sem_open(name, O_CREAT | O_EXCL, 0600, 3);
	if (*sem == SEM_FAILED || sem_unlink(name) < 0)
		zt_setup_failed(z, "sem_open/sem_unlink", name);
	snprintf(name, sizeof(name), "/dev/shm/godwit-ghostmap-data-%d", getpid());
	int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0 || ftruncate(fd, DATA_PAGES * PAGE) < 0)
		zt_setup_failed(z, "open/ftruncate", name);
	*data = mmap(NULL, DATA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	*priv = mmap(NULL, DATA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (*data == MAP_FAILED || *priv == MAP_FAILED)
		zt_setup_failed(z, "mmap", name);
	zt_fill_random(*data, PAGE, SEED);
	zt_fill_random(*data + PAGE, PAGE, SEED + 1);
	zt_fill_random(*priv + PAGE, PAGE, SEED + 2); /* a private copy of the middle page */
	if (close(fd) < 0 || unlink(name) < 0)
		zt_setup_failed(z, "close/unlink", name);
	for (int i = 0; i < CHILDREN; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			zt_setup_failed(z, "fork", "child");
		if (kids[i] == 0)
			child(*sem, *data, i);
	}
}

static void check_sem(struct zt *z, sem_t *sem, unsigned char *data, unsigned char *priv, pid_t *kids)
{
	int v = -1;
	if (sem_getvalue(sem, &v) < 0 || v != 3)
		zt_fail(z, "semaphore: value %d, expected 3", v);
	if (zt_check_random(data, PAGE, SEED) != (size_t)-1 || zt_check_random(data + PAGE, PAGE, SEED + 1) != (size_t)-1)
		zt_fail(z, "shared mapping of the deleted data file: its bytes changed");
	if (zt_check_random(priv + PAGE, PAGE, SEED + 2) != (size_t)-1 || zt_check_random(priv, PAGE, SEED) != (size_t)-1)
		zt_fail(z, "private mapping of the deleted data file: its own page or the file's page changed");
	if (!mapping_deleted(data, DATA_PAGES * PAGE))
		zt_fail(z, "shared mapping: /proc/self/map_files does not name a deleted file");
	struct mailbox *mb = (struct mailbox *)(data + (DATA_PAGES - 1) * PAGE);
	mb->go = 1;
	for (int t = 0; t < 500 && !(mb->ack[0] && mb->ack[1]); t++)
		zt_sleep_ns(10 * 1000 * 1000);
	for (int i = 0; i < CHILDREN; i++)
		if (mb->ack[i] != 1)
			zt_fail(z, "child %d: answer %d through the shared mapping, expected 1 (0: its mapping is not the parent's)", i, mb->ack[i]);
	if (sem_getvalue(sem, &v) < 0 || v != 3 - CHILDREN)
		zt_fail(z, "semaphore: value %d after the children's sem_wait, expected %d (not one semaphore any more)", v, 3 - CHILDREN);
	for (int i = 0; i < CHILDREN; i++) {
		int status;
		if (waitpid(kids[i], &status, 0) != kids[i] || !WIFEXITED(status) || WEXITSTATUS(status))
			zt_fail(z, "child %d: did not exit with 0", i);
	}
}

/* Runs the program again from a copy in DIR (once: the copy sees GHOSTMAP_COPY), which is then deleted. */
static void run_from_copy(struct zt *z, char **argv)
{
	char copy[PATH_MAX];
	zt_path(z, copy, sizeof(copy), "exe-copy");
	if (getenv("GHOSTMAP_COPY"))
		return;
	int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC), out = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	char buf[65536];
	ssize_t n;
	if (in < 0 || out < 0)
		zt_setup_failed(z, "open", copy);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, n) != n)
			zt_setup_failed(z, "write", copy);
	if (n < 0 || close(out) < 0)
		zt_setup_failed(z, "read/close", copy);
	setenv("GHOSTMAP_COPY", "1", 1);
	execv(copy, argv);
	zt_setup_failed(z, "execv", copy);
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = {
		{ "sem", 0, 0, 1, "1: a deleted semaphore and data file in /dev/shm mapped MAP_SHARED by two children too" },
		{ "exe", 0, 0, 2, "1: run from a deleted copy of the program; 2: and a new file at its path" },
		{ "linked", 0, 0, 1, "1: a mapping of a removed name of a file that has another name" },
	};
	zt_setup(&z, argc, argv, opts, 3, SIGUSR2);
	unsigned char *linked = NULL;
	sem_t *sem = NULL;
	unsigned char *data = NULL, *priv = NULL;
	pid_t kids[CHILDREN];
	char copy[PATH_MAX];
	off_t exe_size = 0;
	uint64_t exe_sum = 0;
	struct stat newst = { 0 };

	if (opts[1].value) {
		run_from_copy(&z, argv);
		zt_path(&z, copy, sizeof(copy), "exe-copy");
		exe_sum = file_sum("/proc/self/exe", &exe_size);
		if (!exe_sum || unlink(copy) < 0)
			zt_setup_failed(&z, "read/unlink", copy);
		if (opts[1].value == 2) {
			int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
			if (fd < 0 || write(fd, "new\n", 4) != 4 || fstat(fd, &newst) < 0 || close(fd) < 0)
				zt_setup_failed(&z, "open/write", copy);
		}
		data_word = 54321;
	}
	if (opts[0].value)
		setup_sem(&z, &sem, &data, &priv, kids);
	if (opts[2].value) {
		char name[PATH_MAX], other[PATH_MAX];
		zt_path(&z, name, sizeof(name), "linked");
		zt_path(&z, other, sizeof(other), "linked.other");
		int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		unsigned char page[PAGE];
		zt_fill_random(page, PAGE, SEED + 3);
		if (fd < 0 || write(fd, page, PAGE) != PAGE)
			zt_setup_failed(&z, "open/write", name);
		linked = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
		if (linked == MAP_FAILED || link(name, other) < 0 || unlink(name) < 0 || close(fd) < 0)
			zt_setup_failed(&z, "mmap/link/unlink", name);
	}

	pid_t pids[1 + CHILDREN] = { getpid() };
	size_t npids = 1;
	if (opts[0].value)
		for (int i = 0; i < CHILDREN; i++)
			pids[npids++] = kids[i];
	zt_ready(&z, pids, npids);
	zt_wait_sleeping(&z);

	if (opts[0].value)
		check_sem(&z, sem, data, priv, kids);
	if (opts[1].value) {
		char target[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", target, sizeof(target) - 1);
		struct stat st;
		off_t size = 0;
		if (n < 10 || strcmp(target + n - 10, " (deleted)"))
			zt_fail(&z, "/proc/self/exe does not name a deleted file");
		if (stat("/proc/self/exe", &st) < 0 || st.st_nlink != 0 || file_sum("/proc/self/exe", &size) != exe_sum || size != exe_size)
			zt_fail(&z, "/proc/self/exe: not the deleted copy (links %lu, size %lld, expected 0, %lld)", (unsigned long)st.st_nlink,
				(long long)size, (long long)exe_size);
		if (data_word != 54321)
			zt_fail(&z, "a global of the deleted executable holds %ld, expected 54321", data_word);
		if (opts[1].value == 2) {
			struct stat now;
			if (stat(copy, &now) < 0 || now.st_ino != newst.st_ino || now.st_size != 4 || now.st_ino == st.st_ino)
				zt_fail(&z, "the new file at %s is gone or is the executable", copy);
		}
	}
	if (linked && zt_check_random(linked, PAGE, SEED + 3) != (size_t)-1)
		zt_fail(&z, "mapping of the removed name: its bytes changed");
	return zt_finish(&z);
}
