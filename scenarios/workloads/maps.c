/*
 * maps: mappings whose shape matters (CRIU's zdtm maps00-07, mprotect00, mremap, madvise, growsdown):
 *   - a region split by mprotect into PROT_NONE / read-only / read-write parts, each with data;
 *   - a region moved with mremap (MREMAP_MAYMOVE|MREMAP_FIXED) to a new address, with data;
 *   - a MAP_GROWSDOWN region with data at its top;
 *   - madvise'd regions: MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK (VmFlags dc, dd, wf) and MAP_NORESERVE.
 * Verify: every byte, every protection (from /proc/self/maps), the VmFlags in /proc/self/smaps, and that the
 * moved region is at its new address and gone from the old one.
 * --advice 1 adds regions with MAP_LOCKED (VmFlags lo), MADV_SEQUENTIAL (sr), MADV_RANDOM (rr) and
 * MADV_MERGEABLE (mg; left out where the kernel has no KSM), each with data (CRIU's zdtm maps02).
 * --file-prot 1 adds a file of the state directory, opened read-write, mapped MAP_SHARED read-only with its
 * second page made writable by mprotect, the fd closed (zdtm maps_file_prot): after restore the second page
 * must take writes (reaching the file) and the first must still be allowed to become writable.
 * --guards 1 adds an 8-page region with data whose pages 1-2 and 5 are guard regions (MADV_GUARD_INSTALL, Linux
 * 6.13; CRIU's zdtm maps12): after restore they must still fault (a child's write dies of SIGSEGV, pagemap shows
 * the guard bit) and the other pages keep their data. --guards 2 also guards pages of a touched 80 MiB region,
 * which takes the dump's PAGEMAP_SCAN path (big processes).
 * --droppable 1 adds a MAP_DROPPABLE region (Linux 6.11; zdtm maps11) with data: after restore it must still be
 *   droppable (VmFlags dp; its data may be gone, as the kernel may drop it any time) and be wiped in a child.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096ul
#define SPLIT_PAGES 6
#define MOVED_PAGES 8
#define GROWS_PAGES 4
#define ADV_PAGES 4
#define MORE_PAGES 2

struct region {
	const char *name;
	unsigned char *addr;
	size_t len;
};

/* The line of /proc/self/smaps for `addr`, its perms and VmFlags. Returns 0 if found. */
static int vma_info(void *addr, char perms[5], char flags[256])
{
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -1;
	char line[512];
	int found = 0;
	unsigned long a = (unsigned long)addr;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3) { /* a mapping's header line */
			found = s <= a && a < e;
			if (found)
				memcpy(perms, p, 5);
			continue;
		}
		if (found && !strncmp(line, "VmFlags:", 8)) {
			snprintf(flags, 256, "%.250s", line + 8);
			fclose(f);
			return 0;
		}
	}
	fclose(f);
	return -1;
}

static void expect_vma(struct zt *z, const char *what, void *addr, const char *perms, const char *flag)
{
	char p[5] = "", fl[256] = "";
	if (vma_info(addr, p, fl)) {
		zt_fail(z, "%s: no mapping at %p", what, addr);
		return;
	}
	if (perms && strcmp(p, perms))
		zt_fail(z, "%s at %p: protection %s, expected %s", what, addr, p, perms);
	if (flag) {
		char pat[8];
		snprintf(pat, sizeof(pat), " %s", flag);
		if (!strstr(fl, pat))
			zt_fail(z, "%s at %p: VmFlags lack '%s' (%s)", what, addr, flag, fl);
	}
}

/* Bytes written through the file mapping of --file-prot, checked through the file too. */
#define FILE_MARK "written through the mapping"

/* A private anonymous region of MORE_PAGES with data; `advice` < 0: none. Returns NULL where the kernel refuses
 * the advice with EINVAL (not built in). */
static unsigned char *advised(struct zt *z, int extra_flags, int advice, uint64_t seed, const char *what)
{
	unsigned char *p = mmap(NULL, MORE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
	if (p == MAP_FAILED)
		zt_setup_failed(z, "mmap", what);
	zt_fill_random(p, MORE_PAGES * PAGE, seed);
	if (advice >= 0 && madvise(p, MORE_PAGES * PAGE, advice)) {
		if (errno != EINVAL)
			zt_setup_failed(z, "madvise", what);
		munmap(p, MORE_PAGES * PAGE);
		return NULL;
	}
	return p;
}

static void check_advised(struct zt *z, unsigned char *p, const char *flag, uint64_t seed, const char *what)
{
	if (!p)
		return;
	expect_vma(z, what, p, "rw-p", flag);
	if (zt_check_random(p, MORE_PAGES * PAGE, seed) != (size_t)-1)
		zt_fail(z, "%s: contents differ", what);
}

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#define GUARD_PAGES 8
#define BIG_LEN (80ul << 20)
static const int guarded[] = { 1, 2, 5 };
static const size_t big_guarded[] = { 100, 101, 102, 103, BIG_LEN / PAGE - 1 };

/* Whether the page at addr is a guard region: pagemap bit 58, and a child's write to it dies of SIGSEGV. */
static int is_guard(struct zt *z, unsigned char *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, &e, 8, (off_t)((uintptr_t)addr / PAGE) * 8) != 8)
		zt_fail_sys(z, "pread", "/proc/self/pagemap");
	if (fd >= 0)
		close(fd);
	pid_t pid = fork();
	if (pid == 0) {
		*(volatile unsigned char *)addr = 1;
		_exit(0);
	}
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		zt_fail_sys(z, "fork/waitpid", "guard probe");
	return (e >> 58 & 1) && WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = {
		{ "advice", 0, 0, 1, "also locked, sequential, random and mergeable regions" },
		{ "file-prot", 0, 0, 1, "also a shared file mapping, read-only with a writable page, its fd closed" },
		{ "guards", 0, 0, 2, "also guard regions (2: in an 80 MiB region too)" },
		{ "droppable", 0, 0, 1, "also a MAP_DROPPABLE region" },
	};
	zt_setup(&z, argc, argv, opts, 4, SIGUSR2);
	unsigned char *drop = NULL;
	if (opts[3].value) {
		drop = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE */ | MAP_ANONYMOUS, -1, 0);
		if (drop == MAP_FAILED)
			zt_setup_failed(&z, "mmap", "MAP_DROPPABLE region");
		memset(drop, 0x5a, 2 * PAGE);
	}
	unsigned char *guard = NULL, *big = NULL;
	if (opts[2].value) {
		guard = mmap(NULL, GUARD_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (guard == MAP_FAILED)
			zt_setup_failed(&z, "mmap", "guarded region");
		zt_fill_random(guard, GUARD_PAGES * PAGE, 31);
		for (size_t i = 0; i < sizeof(guarded) / sizeof(guarded[0]); i++)
			if (madvise(guard + guarded[i] * PAGE, PAGE, MADV_GUARD_INSTALL))
				zt_setup_failed(&z, "madvise", "MADV_GUARD_INSTALL");
	}
	if (opts[2].value == 2) {
		big = mmap(NULL, BIG_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (big == MAP_FAILED)
			zt_setup_failed(&z, "mmap", "big guarded region");
		for (size_t i = 0; i < BIG_LEN / PAGE; i++)
			memset(big + i * PAGE, (int)(i % 251) + 1, PAGE);
		for (size_t i = 0; i < sizeof(big_guarded) / sizeof(big_guarded[0]); i++)
			if (madvise(big + big_guarded[i] * PAGE, PAGE, MADV_GUARD_INSTALL))
				zt_setup_failed(&z, "madvise", "MADV_GUARD_INSTALL (big region)");
	}
	unsigned char *locked = NULL, *seq = NULL, *rnd = NULL, *merge = NULL;
	if (opts[0].value) {
		locked = advised(&z, MAP_LOCKED, -1, 21, "MAP_LOCKED region");
		seq = advised(&z, 0, MADV_SEQUENTIAL, 22, "MADV_SEQUENTIAL region");
		rnd = advised(&z, 0, MADV_RANDOM, 23, "MADV_RANDOM region");
		merge = advised(&z, 0, MADV_MERGEABLE, 24, "MADV_MERGEABLE region");
		zt_info(&z, "mergeable", "%s", merge ? "yes" : "no");
	}
	unsigned char *fmap = NULL;
	char fpath[PATH_MAX];
	if (opts[1].value) {
		zt_path(&z, fpath, sizeof(fpath), "mapped-file");
		int fd = open(fpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || ftruncate(fd, 2 * PAGE))
			zt_setup_failed(&z, "open", "mapped file");
		fmap = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
		if (fmap == MAP_FAILED || mprotect(fmap + PAGE, PAGE, PROT_READ | PROT_WRITE))
			zt_setup_failed(&z, "mmap", "mapped file");
		close(fd);
	}

	unsigned char *split = mmap(NULL, SPLIT_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *src = mmap(NULL, MOVED_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* Reserve a destination far from src, then move src there. */
	unsigned char *dst = mmap(NULL, MOVED_PAGES * PAGE * 3, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *grows = mmap(NULL, GROWS_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
	unsigned char *adv = mmap(NULL, 3 * ADV_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (split == MAP_FAILED || src == MAP_FAILED || dst == MAP_FAILED || grows == MAP_FAILED || adv == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "regions");
	zt_fill_random(split, SPLIT_PAGES * PAGE, 11);
	zt_fill_random(src, MOVED_PAGES * PAGE, 12);
	zt_fill_random(grows + (GROWS_PAGES - 1) * PAGE, PAGE, 13);
	zt_fill_random(adv, 3 * ADV_PAGES * PAGE, 14);
	if (mprotect(split, 2 * PAGE, PROT_NONE) || mprotect(split + 2 * PAGE, 2 * PAGE, PROT_READ))
		zt_setup_failed(&z, "mprotect", "split region");
	unsigned char *moved = dst + MOVED_PAGES * PAGE;
	if (mremap(src, MOVED_PAGES * PAGE, MOVED_PAGES * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, moved) != moved)
		zt_setup_failed(&z, "mremap", "moved region");
	if (madvise(adv, ADV_PAGES * PAGE, MADV_DONTFORK) || madvise(adv + ADV_PAGES * PAGE, ADV_PAGES * PAGE, MADV_DONTDUMP) ||
	    madvise(adv + 2 * ADV_PAGES * PAGE, ADV_PAGES * PAGE, MADV_WIPEONFORK))
		zt_setup_failed(&z, "madvise", "advised region");

	pid_t pids[] = { getpid() };
	zt_ready(&z, pids, 1);
	zt_wait_sleeping(&z);

	expect_vma(&z, "split region, PROT_NONE part", split, "---p", NULL);
	expect_vma(&z, "split region, read-only part", split + 2 * PAGE, "r--p", NULL);
	expect_vma(&z, "split region, read-write part", split + 4 * PAGE, "rw-p", NULL);
	if (mprotect(split, 4 * PAGE, PROT_READ) == 0) {
		size_t bad = zt_check_random(split, SPLIT_PAGES * PAGE, 11);
		if (bad != (size_t)-1)
			zt_fail(&z, "split region: byte %zu differs", bad);
	} else
		zt_fail_sys(&z, "mprotect", "split region for reading");

	expect_vma(&z, "moved region", moved, "rw-p", NULL);
	if (zt_check_random(moved, MOVED_PAGES * PAGE, 12) != (size_t)-1)
		zt_fail(&z, "moved region: contents differ");
	char p[5], fl[256];
	if (vma_info(src, p, fl) == 0)
		zt_fail(&z, "moved region: its old address %p is mapped again (%s)", (void *)src, p);

	expect_vma(&z, "grows-down region", grows + (GROWS_PAGES - 1) * PAGE, "rw-p", "gd");
	if (zt_check_random(grows + (GROWS_PAGES - 1) * PAGE, PAGE, 13) != (size_t)-1)
		zt_fail(&z, "grows-down region: contents differ");

	expect_vma(&z, "MADV_DONTFORK region", adv, "rw-p", "dc");
	expect_vma(&z, "MADV_DONTDUMP region", adv + ADV_PAGES * PAGE, "rw-p", "dd");
	expect_vma(&z, "MADV_WIPEONFORK region", adv + 2 * ADV_PAGES * PAGE, "rw-p", "wf");
	expect_vma(&z, "MAP_NORESERVE region", adv, NULL, "nr");
	if (zt_check_random(adv, 3 * ADV_PAGES * PAGE, 14) != (size_t)-1)
		zt_fail(&z, "advised regions: contents differ");

	if (opts[0].value) {
		check_advised(&z, locked, "lo", 21, "MAP_LOCKED region");
		check_advised(&z, seq, "sr", 22, "MADV_SEQUENTIAL region");
		check_advised(&z, rnd, "rr", 23, "MADV_RANDOM region");
		check_advised(&z, merge, "mg", 24, "MADV_MERGEABLE region");
	}
	if (drop) {
		expect_vma(&z, "MAP_DROPPABLE region", drop, "rw-p", "dp");
		memset(drop, 0x5a, 2 * PAGE);
		pid_t c = fork();
		if (c == 0)
			_exit(drop[0] != 0 || drop[2 * PAGE - 1] != 0);
		int st = 0;
		if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
			zt_fail(&z, "MAP_DROPPABLE region: a child does not see it wiped (status 0x%x)", st);
	}
	if (guard) {
		unsigned char *pat = malloc(GUARD_PAGES * PAGE);
		zt_fill_random(pat, GUARD_PAGES * PAGE, 31);
		for (size_t i = 0, g = 0; i < GUARD_PAGES; i++) {
			int want = g < sizeof(guarded) / sizeof(guarded[0]) && guarded[g] == (int)i;
			g += want;
			if (is_guard(&z, guard + i * PAGE) != want)
				zt_fail(&z, "guarded region: page %zu %s", i, want ? "is not a guard region any more" : "became a guard region");
			else if (!want && memcmp(guard + i * PAGE, pat + i * PAGE, PAGE))
				zt_fail(&z, "guarded region: page %zu: contents differ", i);
		}
		free(pat);
	}
	if (big) {
		for (size_t i = 0, g = 0; i < BIG_LEN / PAGE; i++) {
			int want = g < sizeof(big_guarded) / sizeof(big_guarded[0]) && big_guarded[g] == i;
			g += want;
			if (want ? !is_guard(&z, big + i * PAGE) : big[i * PAGE] != (unsigned char)(i % 251 + 1) || big[i * PAGE + PAGE - 1] != (unsigned char)(i % 251 + 1)) {
				zt_fail(&z, "big region: page %zu %s", i, want ? "is not a guard region any more" : "lost its contents");
				break;
			}
		}
	}
	if (fmap) {
		expect_vma(&z, "file mapping, read-only page", fmap, "r--s", "mw");
		expect_vma(&z, "file mapping, writable page", fmap + PAGE, "rw-s", NULL);
		memcpy(fmap + PAGE, FILE_MARK, sizeof(FILE_MARK)); /* a SIGSEGV here is the failure */
		if (mprotect(fmap, PAGE, PROT_READ | PROT_WRITE))
			zt_fail_sys(&z, "mprotect", "file mapping, read-only page made writable");
		char back[sizeof(FILE_MARK)] = "";
		int fd = open(fpath, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || pread(fd, back, sizeof(back), PAGE) != (ssize_t)sizeof(back))
			zt_fail_sys(&z, "pread", "mapped file");
		else if (memcmp(back, FILE_MARK, sizeof(back)))
			zt_fail(&z, "mapped file: a write through the mapping did not reach the file");
		if (fd >= 0)
			close(fd);
	}
	return zt_finish(&z);
}
