/*
 * aio: two AIO contexts (io_setup) of one process (CRIU's zdtm aio00, aio01):
 *   - an idle one (nothing ever submitted);
 *   - a busy one whose ring went round once and more: writes to /dev/null submitted and reaped until the ring
 *     wrapped, then three left completed and not reaped (aio_data 1001, 1002, 1003).
 * Verify: both context ids still work; the busy ring's nr, head and tail are as they were; the three events come
 * back in order; one more request completes at the next slot (tail + 1); the idle context has no events.
 */
#include "zdtm.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The ring's header as the kernel lays it out at the context id's address. */
struct ring {
	unsigned id, nr, head, tail, magic, compat, incompat, header_length;
};

static long io_setup(unsigned n, aio_context_t *c) { return syscall(SYS_io_setup, n, c); }
static long io_submit(aio_context_t c, long n, struct iocb **l) { return syscall(SYS_io_submit, c, n, l); }
static long io_getevents(aio_context_t c, long mn, long n, struct io_event *e) { return syscall(SYS_io_getevents, c, mn, n, e, NULL); }

static int submit(aio_context_t c, int fd, uint64_t data)
{
	static char byte;
	struct iocb cb;
	memset(&cb, 0, sizeof(cb));
	cb.aio_data = data;
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_fildes = (uint32_t)fd;
	cb.aio_buf = (uint64_t)(uintptr_t)&byte;
	cb.aio_nbytes = 1;
	struct iocb *l = &cb;
	return io_submit(c, 1, &l) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	aio_context_t idle = 0, busy = 0;
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null < 0 || io_setup(1, &idle) < 0 || io_setup(64, &busy) < 0)
		zt_setup_failed(&z, "open/io_setup", "aio contexts");
	volatile struct ring *r = (volatile struct ring *)busy;
	struct io_event ev[4];
	unsigned rounds = r->nr + 5;	/* past the end of the ring: its tail wraps */
	for (unsigned i = 0; i < rounds; i++)
		if (submit(busy, null, i) || io_getevents(busy, 1, 1, ev) != 1)
			zt_setup_failed(&z, "io_submit/io_getevents", "busy context");
	for (uint64_t d = 1001; d <= 1003; d++)
		if (submit(busy, null, d))
			zt_setup_failed(&z, "io_submit", "busy context (left unreaped)");
	while (r->tail != (r->head + 3) % r->nr)
		zt_sleep_ns(1000000);
	struct ring before = { .nr = r->nr, .head = r->head, .tail = r->tail };
	zt_info(&z, "aio", "nr %u head %u tail %u", before.nr, before.head, before.tail);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	if (r->nr != before.nr || r->head != before.head || r->tail != before.tail)
		zt_fail(&z, "busy ring: nr %u head %u tail %u, was %u %u %u", r->nr, r->head, r->tail, before.nr, before.head,
			before.tail);
	long n = io_getevents(busy, 3, 3, ev);
	if (n != 3 || ev[0].data != 1001 || ev[1].data != 1002 || ev[2].data != 1003 || ev[0].res != 1)
		zt_fail(&z, "busy ring: %ld events back, data %llu %llu %llu, expected 1001 1002 1003", n,
			n > 0 ? (unsigned long long)ev[0].data : 0ull, n > 1 ? (unsigned long long)ev[1].data : 0ull,
			n > 2 ? (unsigned long long)ev[2].data : 0ull);
	unsigned tail = r->tail;
	if (submit(busy, null, 2000) || io_getevents(busy, 1, 1, ev) != 1 || ev[0].data != 2000)
		zt_fail_sys(&z, "io_submit/io_getevents", "busy context after restore");
	else if (r->tail != (tail + 1) % r->nr)
		zt_fail(&z, "busy ring: a request completed at tail %u, expected %u", r->tail, (tail + 1) % r->nr);
	if ((n = io_getevents(idle, 0, 1, ev)) != 0)
		zt_fail(&z, "idle context: io_getevents gave %ld, expected 0", n);
	return zt_finish(&z);
}
