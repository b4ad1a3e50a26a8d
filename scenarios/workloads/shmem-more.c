/*
 * shmem-more: the shared memory cases shared-mem does not cover (CRIU's zdtm memfd0x, shm-unaligned, maps0x):
 *   - a sealed memfd (F_SEAL_SHRINK | F_SEAL_GROW) open at a file position, with O_APPEND on a second
 *     description of it;
 *   - a memfd that is only mapped (its fd closed), shared, with a pattern;
 *   - a MAP_PRIVATE mapping of a memfd whose first page the process changed (copy-on-write: the memfd keeps
 *     the old bytes);
 *   - a shared anonymous area whose first and last pages were unmapped (the rest keeps its object offset) and
 *     whose middle page is read-only;
 *   - a shared anonymous area never written (must stay zero, and be writable);
 *   - a shared anonymous area shared with a child that keeps incrementing a counter in it.
 * Verify: contents, seals, positions, flags, the counter still moves, the COW page and the object differ.
 * --sysv 1 also attaches a SysV shm segment (removed at once, so it ends with the process): godwit refuses it.
 * --exec 1 also keeps a memfd holding a "#!/bin/true" script, run by execveat(fd, "", AT_EMPTY_PATH) in a child at
 *   setup and at verify (CRIU's zdtm memfd04: a restored fd open for writing made the kernel refuse it, ETXTBSY).
 * --mode 1 also keeps a memfd open whose mode (fchmod 0642, CRIU's zdtm memfd00) and owner were changed.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096ul
#define SEALED_LEN (16 * PAGE)
#define SEALED_POS 12345
#define MAPONLY_LEN (8 * PAGE)
#define PRIV_LEN (4 * PAGE)
#define HOLED_LEN (6 * PAGE)
#define ZERO_LEN (32 * PAGE)
#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW)
#define MODED_MODE 0642
#define MODED_UID 4321
#define MODED_GID 8765
#define SEED_SEALED 0x5ea1
#define SEED_MAPONLY 0x3a90
#define SEED_PRIV 0x9417
#define SEED_HOLED 0x401e
#define SEED_COW 0xc0c0

static void check(struct zt *z, const char *what, const void *p, size_t len, uint64_t seed)
{
	size_t bad = zt_check_random(p, len, seed);
	if (bad != (size_t)-1)
		zt_fail(z, "%s: byte %zu (address %p) differs from its pattern", what, bad, (const char *)p + bad);
}

static int new_memfd(struct zt *z, const char *name, unsigned flags, size_t len, uint64_t seed)
{
	int fd = memfd_create(name, flags);
	if (fd < 0 || ftruncate(fd, (off_t)len) < 0)
		zt_setup_failed(z, "memfd_create", name);
	unsigned char *buf = malloc(len);
	if (!buf)
		zt_setup_failed(z, "malloc", name);
	zt_fill_random(buf, len, seed);
	if (pwrite(fd, buf, len, 0) != (ssize_t)len)
		zt_setup_failed(z, "pwrite", name);
	free(buf);
	return fd;
}

/* Runs the script in memfd FD in a child; 0 when it exited 0, else an errno or -status. */
static int exec_memfd(int fd)
{
	pid_t pid = fork();
	if (pid == 0) {
		char *const argv[] = { "true", NULL }, *const envp[] = { NULL };
		syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
		_exit(errno);
	}
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -st;
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = {
		{ "sysv", 0, 0, 1, "also attach a SysV shm segment" },
		{ "mode", 0, 0, 1, "also a memfd with its mode and owner changed" },
		{ "exec", 0, 0, 1, "also a memfd holding a script, executed at setup and at verify" },
	};
	zt_setup(&z, argc, argv, opts, 3, SIGUSR2);
	int script = -1;
	if (opts[2].value) {
		static const char text[] = "#!/bin/true\n";
		/* Not close-on-exec: the interpreter gets the script as /dev/fd/N. */
		script = (int)syscall(SYS_memfd_create, "script", 0);
		if (script < 0 || write(script, text, sizeof(text) - 1) != sizeof(text) - 1)
			zt_setup_failed(&z, "memfd_create", "script memfd");
		int e = exec_memfd(script);
		if (e) {
			errno = e > 0 ? e : ECHILD;
			zt_setup_failed(&z, "execveat", "script memfd (before the dump)");
		}
	}
	int moded = -1;
	if (opts[1].value) {
		moded = new_memfd(&z, "moded", MFD_CLOEXEC, PAGE, SEED_MAPONLY);
		/* Owner first: fchown would clear set-id bits of the mode. */
		if (fchown(moded, MODED_UID, MODED_GID) || fchmod(moded, MODED_MODE))
			zt_setup_failed(&z, "fchmod", "moded memfd");
	}
	if (opts[0].value) {
		int id = shmget(IPC_PRIVATE, 4 * PAGE, IPC_CREAT | 0600);
		void *at = id < 0 ? (void *)-1 : shmat(id, NULL, 0);
		if (at == (void *)-1)
			zt_setup_failed(&z, "shmget", "SysV segment");
		shmctl(id, IPC_RMID, NULL);
		zt_info(&z, "sysv", "%d %p", id, at);
	}

	int sealed = new_memfd(&z, "sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING, SEALED_LEN, SEED_SEALED);
	if (fcntl(sealed, F_ADD_SEALS, SEALS) < 0 || lseek(sealed, SEALED_POS, SEEK_SET) != SEALED_POS)
		zt_setup_failed(&z, "fcntl", "seal the sealed memfd");
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", sealed);
	int appender = open(self, O_RDWR | O_APPEND | O_CLOEXEC);
	if (appender < 0)
		zt_setup_failed(&z, "open", "second description of the sealed memfd");

	int mo = new_memfd(&z, "map-only", MFD_CLOEXEC, MAPONLY_LEN, SEED_MAPONLY);
	unsigned char *maponly = mmap(NULL, MAPONLY_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, mo, 0);
	if (maponly == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "map-only memfd");
	close(mo);

	int pf = new_memfd(&z, "private", MFD_CLOEXEC, PRIV_LEN, SEED_PRIV);
	unsigned char *priv = mmap(NULL, PRIV_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, pf, 0);
	if (priv == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "private memfd mapping");
	zt_fill_random(priv, PAGE, SEED_COW); /* first page: a private copy now */

	unsigned char *holed = mmap(NULL, HOLED_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (holed == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "shared area with holes");
	zt_fill_random(holed, HOLED_LEN, SEED_HOLED);
	if (munmap(holed, PAGE) || munmap(holed + HOLED_LEN - PAGE, PAGE) ||
	    mprotect(holed + 2 * PAGE, PAGE, PROT_READ))
		zt_setup_failed(&z, "munmap", "edges of the shared area");

	unsigned char *zero = mmap(NULL, ZERO_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	volatile uint64_t *counter = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (zero == MAP_FAILED || counter == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "shared areas");

	pid_t child = fork();
	if (child < 0)
		zt_setup_failed(&z, "fork", "counter child");
	if (child == 0) {
		while (!zt_signalled()) {
			(*counter)++;
			zt_sleep_ns(1000000);
		}
		exit(zt_finish_part(&z, "child"));
	}
	while (*counter == 0)
		zt_sleep_ns(1000000);

	zt_info(&z, "sealed-fd", "%d", sealed);
	pid_t pids[] = { getpid(), child };
	zt_ready(&z, pids, 2);
	zt_wait_sleeping(&z);

	if (moded >= 0) {
		struct stat st;
		if (fstat(moded, &st))
			zt_fail_sys(&z, "fstat", "moded memfd");
		else if ((st.st_mode & 07777) != MODED_MODE || st.st_uid != MODED_UID || st.st_gid != MODED_GID)
			zt_fail(&z, "moded memfd: mode 0%o owner %u:%u, expected 0%o %u:%u", st.st_mode & 07777, st.st_uid,
				st.st_gid, MODED_MODE, MODED_UID, MODED_GID);
	}

	/* The sealed memfd: content, seals, the position of each description, O_APPEND. */
	unsigned char *buf = malloc(SEALED_LEN);
	if (!buf || pread(sealed, buf, SEALED_LEN, 0) != (ssize_t)SEALED_LEN)
		zt_fail_sys(&z, "pread", "sealed memfd");
	else
		check(&z, "sealed memfd", buf, SEALED_LEN, SEED_SEALED);
	int seals = fcntl(sealed, F_GET_SEALS);
	if (seals != SEALS)
		zt_fail(&z, "sealed memfd: seals are 0x%x, expected 0x%x", seals, SEALS);
	if (ftruncate(sealed, SEALED_LEN * 2) == 0 || errno != EPERM)
		zt_fail(&z, "sealed memfd: growing it was not refused (F_SEAL_GROW lost)");
	off_t pos = lseek(sealed, 0, SEEK_CUR);
	if (pos != SEALED_POS)
		zt_fail(&z, "sealed memfd: position %lld, expected %d", (long long)pos, SEALED_POS);
	if (lseek(appender, 0, SEEK_CUR) != 0)
		zt_fail(&z, "second description of the sealed memfd: position moved (shared with the first?)");
	int fl = fcntl(appender, F_GETFL);
	if (fl < 0 || !(fl & O_APPEND) || (fl & O_ACCMODE) != O_RDWR)
		zt_fail(&z, "second description of the sealed memfd: flags 0%o, expected O_RDWR|O_APPEND", fl);
	char link[128];
	ssize_t n = readlink(self, link, sizeof(link) - 1);
	link[n < 0 ? 0 : n] = 0;
	if (strcmp(link, "/memfd:sealed (deleted)"))
		zt_fail(&z, "sealed memfd is '%s'", link);

	check(&z, "map-only memfd", maponly, MAPONLY_LEN, SEED_MAPONLY);
	maponly[0] ^= 0xff; /* still writable */
	maponly[0] ^= 0xff;

	check(&z, "private memfd mapping, changed page", priv, PAGE, SEED_COW);
	unsigned char *want = malloc(PRIV_LEN);
	if (want) {
		zt_fill_random(want, PRIV_LEN, SEED_PRIV);
		if (memcmp(priv + PAGE, want + PAGE, PRIV_LEN - PAGE))
			zt_fail(&z, "private memfd mapping: the untouched pages differ from the memfd");
		if (pread(pf, buf, PAGE, 0) != (ssize_t)PAGE || memcmp(buf, want, PAGE))
			zt_fail(&z, "private memfd: the memfd itself took the private copy's bytes");
		free(want);
	}

	/* The holed area: pages 1..4 of the object keep their bytes (its offset into the object kept). */
	unsigned char *pat = malloc(HOLED_LEN);
	if (pat) {
		zt_fill_random(pat, HOLED_LEN, SEED_HOLED);
		if (memcmp(holed + PAGE, pat + PAGE, HOLED_LEN - 2 * PAGE))
			zt_fail(&z, "shared area with holes: contents moved or changed");
		free(pat);
	}

	for (size_t i = 0; i < ZERO_LEN; i += 512)
		if (zero[i]) {
			zt_fail(&z, "never-written shared area: byte %zu is 0x%x", i, zero[i]);
			break;
		}
	zero[ZERO_LEN - 1] = 1;

	uint64_t c0 = *counter;
	uint64_t deadline = zt_now_ns() + 2000000000ull;
	while (*counter == c0 && zt_now_ns() < deadline)
		zt_sleep_ns(1000000);
	if (*counter == c0)
		zt_fail(&z, "the child's counter stayed at %llu: the counter page is not shared any more", (unsigned long long)c0);
	if (script >= 0) {
		int e = exec_memfd(script);
		if (e)
			zt_fail(&z, "script memfd: execveat gave %s", e > 0 ? strerror(e) : "an abnormal exit");
	}
	kill(child, SIGUSR2);
	zt_collect_part(&z, "child", child);
	free(buf);
	return zt_finish(&z);
}
