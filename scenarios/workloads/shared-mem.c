/*
 * shared-mem: memory shared between a parent and its child, which a dump must keep shared (one object, not two
 * private copies):
 *   - an anonymous MAP_SHARED area: a pattern the parent wrote before the fork, a second pattern the child wrote
 *     after it, and a counter the child keeps advancing;
 *   - a memfd, open in the parent and mapped shared by both, with contents written through the fd.
 * Verify: both patterns, the counter still moves (the child's writes still reach the parent), a word the parent
 * writes now reaches the child through each object, and the memfd's fd and mapping still show the same bytes.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1024ul * 1024ul)
#define AREA_LEN (4 * MIB)
#define MEMFD_LEN (1 * MIB)
#define MEMFD_NAME "godwit-scenario"
#define SEED_PARENT 0x5a5a
#define SEED_CHILD 0xc41d
#define SEED_MEMFD 0x3e3f

/* Control words at the end of the shared area, after the two patterns. */
struct shared_ctl {
	volatile uint64_t counter;	/* advanced by the child */
	volatile uint64_t ping;		/* written by the parent at verify, checked by the child */
	volatile uint64_t child_ready;
};

struct objects {
	unsigned char *area;	/* [0, 1 MiB): parent's pattern; [1 MiB, 2 MiB): child's; ctl at 3 MiB */
	struct shared_ctl *ctl;
	int memfd;
	unsigned char *mem;	/* memfd mapping */
};

#define PING_AREA 0x1122334455667788ull
#define PING_MEMFD 0x0badc0ffee0ddf00ull
#define PING_MEMFD_OFF (MEMFD_LEN - 8)

static void check_pattern(struct zt *z, const char *what, const unsigned char *p, size_t len, uint64_t seed)
{
	size_t bad = zt_check_random(p, len, seed);
	if (bad != (size_t)-1)
		zt_fail(z, "%s: byte %zu (address %p) differs from its pattern", what, bad, (const void *)(p + bad));
}

__attribute__((noreturn)) static void run_child(struct zt *z, struct objects *o)
{
	zt_fill_random(o->area + MIB, MIB, SEED_CHILD);
	o->ctl->child_ready = 1;
	/* Only the parent's signal, not DIR/go: the parent writes the pings first, then forwards the request. */
	while (!zt_signalled()) {
		o->ctl->counter++;
		zt_sleep_ns(1000000);	/* 1 ms: a steady, cheap heartbeat */
	}
	check_pattern(z, "child: shared area, parent's half", o->area, MIB, SEED_PARENT);
	if (o->ctl->ping != PING_AREA)
		zt_fail(z, "child: the parent's write to the shared area did not arrive (ping is 0x%llx)",
			(unsigned long long)o->ctl->ping);
	uint64_t v;
	memcpy(&v, o->mem + PING_MEMFD_OFF, 8);
	if (v != PING_MEMFD)
		zt_fail(z, "child: the parent's write to the memfd did not reach the child's mapping (0x%llx)",
			(unsigned long long)v);
	exit(zt_finish_part(z, "child"));
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	struct objects o;
	o.area = mmap(NULL, AREA_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (o.area == MAP_FAILED)
		zt_setup_failed(&z, "mmap", "shared anonymous area");
	o.ctl = (struct shared_ctl *)(o.area + 3 * MIB);
	zt_fill_random(o.area, MIB, SEED_PARENT);

	o.memfd = memfd_create(MEMFD_NAME, MFD_CLOEXEC);
	if (o.memfd < 0 || ftruncate(o.memfd, MEMFD_LEN) < 0)
		zt_setup_failed(&z, "memfd_create", MEMFD_NAME);
	unsigned char *buf = malloc(MEMFD_LEN);
	if (!buf)
		zt_setup_failed(&z, "malloc", "memfd contents");
	zt_fill_random(buf, MEMFD_LEN, SEED_MEMFD);
	if (pwrite(o.memfd, buf, MEMFD_LEN, 0) != (ssize_t)MEMFD_LEN)
		zt_setup_failed(&z, "pwrite", MEMFD_NAME);
	o.mem = mmap(NULL, MEMFD_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, o.memfd, 0);
	if (o.mem == MAP_FAILED)
		zt_setup_failed(&z, "mmap", MEMFD_NAME);

	pid_t child = fork();
	if (child < 0)
		zt_setup_failed(&z, "fork", "child");
	if (child == 0) {
		close(o.memfd);	/* the child reaches the memfd through its mapping only */
		run_child(&z, &o);
	}
	uint64_t deadline = zt_now_ns() + 5000000000ull;
	while (!o.ctl->child_ready || o.ctl->counter == 0) {
		if (zt_now_ns() > deadline) {
			errno = ETIMEDOUT;
			zt_setup_failed(&z, "wait", "child to start");
		}
		zt_sleep_ns(1000000);
	}

	zt_info(&z, "area", "%p %lu", (void *)o.area, AREA_LEN);
	zt_info(&z, "memfd", "%d %p", o.memfd, (void *)o.mem);
	pid_t pids[] = { getpid(), child };
	zt_ready(&z, pids, 2);
	zt_wait_sleeping(&z);

	check_pattern(&z, "shared area, parent's half", o.area, MIB, SEED_PARENT);
	check_pattern(&z, "shared area, child's half", o.area + MIB, MIB, SEED_CHILD);
	uint64_t c0 = o.ctl->counter;
	deadline = zt_now_ns() + 2000000000ull;
	while (o.ctl->counter == c0 && zt_now_ns() < deadline)
		zt_sleep_ns(1000000);
	if (o.ctl->counter == c0)
		zt_fail(&z, "the child's counter in the shared area stayed at %llu for 2 s: the area is no longer shared",
			(unsigned long long)c0);
	check_pattern(&z, "memfd mapping", o.mem, MEMFD_LEN - 8, SEED_MEMFD);
	if (pread(o.memfd, buf, MEMFD_LEN, 0) != (ssize_t)MEMFD_LEN)
		zt_fail_sys(&z, "pread", "memfd");
	else
		check_pattern(&z, "memfd read through its fd", buf, MEMFD_LEN - 8, SEED_MEMFD);
	char link[64], want[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", o.memfd);
	ssize_t n = readlink(link, want, sizeof(want) - 1);
	want[n < 0 ? 0 : n] = 0;
	if (strcmp(want, "/memfd:" MEMFD_NAME " (deleted)"))
		zt_fail(&z, "memfd (fd %d) is '%s', expected '/memfd:%s (deleted)'", o.memfd, want, MEMFD_NAME);

	/* Writes now must reach the child, and the fd must see what the mapping wrote. */
	o.ctl->ping = PING_AREA;
	uint64_t ping = PING_MEMFD, back = 0;
	memcpy(o.mem + PING_MEMFD_OFF, &ping, 8);
	if (pread(o.memfd, &back, 8, PING_MEMFD_OFF) != 8 || back != PING_MEMFD)
		zt_fail(&z, "memfd: a write through the mapping is not seen through the fd (0x%llx)", (unsigned long long)back);
	kill(child, SIGUSR2);
	zt_collect_part(&z, "child", child);
	free(buf);
	return zt_finish(&z);
}
