/*
 * The container scenario's workload, built with gcc -static into the bundle's rootfs (busybox has no ipcmk).
 * It creates a SysV shm segment (key SHM_KEY) filled with a pattern derived from the seed, then counts:
 * every 20 ms it increments a counter, writes it to /tmp/count (a tmpfs in the container) and checks that
 * the segment still holds its pattern; a mismatch writes "FAIL ..." to /tmp/result and exits 1.
 * With MIB, it also holds MIB MiB of anonymous memory (a seeded pattern, half of it repeated so zstd has
 * something to compress) and checks a rotating slice of it on every tick; with "shared" after MIB, that memory
 * is a MAP_SHARED anonymous mapping (a shmem object of its own, restored as one), and a memfd is both mapped and
 * kept open: every tick writes the count through the mapping and reads it back through the fd (one object).
 *   ctr-workload SHM_KEY SHM_BYTES SEED [MIB [shared]]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static unsigned char pattern(unsigned seed, size_t i)
{
	return (unsigned char)((i * 131u + seed * 7u + (i >> 12)) & 0xff);
}

/* Odd MiBs repeat one byte per 64, even ones are a hash: about half compressible. */
static unsigned char mem_pattern(unsigned seed, size_t i)
{
	if ((i >> 20) & 1)
		return (unsigned char)((i >> 6) + seed);
	unsigned x = (unsigned)(i * 2654435761u) ^ seed;
	x ^= x >> 13;
	x *= 0x5bd1e995u;
	return (unsigned char)(x ^ (x >> 15));
}

static void put(const char *path, const char *text)
{
	char tmp[64];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 6 || (argc == 6 && strcmp(argv[5], "shared") != 0))
		return 2;
	size_t mem_bytes = argc >= 5 ? strtoul(argv[4], NULL, 0) << 20 : 0;
	int mem_share = argc == 6 ? MAP_SHARED : MAP_PRIVATE;
	key_t key = (key_t)strtol(argv[1], NULL, 0);
	size_t bytes = strtoul(argv[2], NULL, 0);
	unsigned seed = (unsigned)strtoul(argv[3], NULL, 0);
	/* Only fds of its own: the runtime's stdio pipes lead outside the container (godwit would need their
	 * other ends); /dev/null is the container's. */
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		for (int fd = 0; fd < 3; fd++)
			if (fd != null)
				dup2(null, fd);
		if (null > 2)
			close(null);
	}
	int id = shmget(key, bytes, IPC_CREAT | 0640);
	if (id < 0) {
		put("/tmp/result", "FAIL: shmget\n");
		return 3;
	}
	unsigned char *p = shmat(id, NULL, 0);
	if (p == (void *)-1) {
		put("/tmp/result", "FAIL: shmat\n");
		return 3;
	}
	for (size_t i = 0; i < bytes; i++)
		p[i] = pattern(seed, i);
	unsigned char *mem = NULL;
	if (mem_bytes) {
		mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, mem_share | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			put("/tmp/result", "FAIL: mmap\n");
			return 3;
		}
		for (size_t i = 0; i < mem_bytes; i++)
			mem[i] = mem_pattern(seed, i);
	}
	int mfd = -1;
	volatile unsigned long *mcount = NULL;
	if (mem_share == MAP_SHARED) {
		mfd = memfd_create("ctr-shared", MFD_CLOEXEC);
		if (mfd < 0 || ftruncate(mfd, 4096) < 0) {
			put("/tmp/result", "FAIL: memfd\n");
			return 3;
		}
		mcount = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
		if (mcount == MAP_FAILED) {
			put("/tmp/result", "FAIL: mmap memfd\n");
			return 3;
		}
	}
	size_t cursor = 0;
	char buf[128];
	snprintf(buf, sizeof(buf), "shm-id %d\n", id);
	put("/tmp/ready", buf);
	for (unsigned long n = 1;; n++) {
		snprintf(buf, sizeof(buf), "%lu\n", n);
		put("/tmp/count", buf);
		for (size_t i = 0; i < bytes; i += 4096)
			if (p[i] != pattern(seed, i)) {
				snprintf(buf, sizeof(buf), "FAIL: shm byte %zu changed\n", i);
				put("/tmp/result", buf);
				return 1;
			}
		/* 64 pages of the anonymous memory per tick, wrapping around. */
		for (int k = 0; mem && k < 64; k++, cursor = (cursor + 4096) % mem_bytes)
			if (mem[cursor] != mem_pattern(seed, cursor) || mem[cursor + 4095] != mem_pattern(seed, cursor + 4095)) {
				snprintf(buf, sizeof(buf), "FAIL: memory byte %zu changed\n", cursor);
				put("/tmp/result", buf);
				return 1;
			}
		if (mcount) {
			unsigned long back = 0;
			if (*mcount != n - 1) {
				snprintf(buf, sizeof(buf), "FAIL: memfd holds %lu, not the last count %lu\n", *mcount, n - 1);
				put("/tmp/result", buf);
				return 1;
			}
			*mcount = n;
			if (pread(mfd, &back, sizeof(back), 0) != sizeof(back) || back != n) {
				snprintf(buf, sizeof(buf), "FAIL: memfd fd reads %lu, the mapping holds %lu\n", back, n);
				put("/tmp/result", buf);
				return 1;
			}
		}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}
