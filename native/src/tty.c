/* TtyQueue: the bytes queued in a pty pair, from a copy of its master fd (pidfd_getfd) and a slave fd of our
 * own (TIOCGPTPEER, so a slave nobody holds open, or one outside our view of /dev/pts, is reached too).
 * A tty has no peek: the bytes are read, then written back at once, so the live pair holds them again (the
 * tree goes on after a --leave-running dump or a failed one). While that happens the slave's termios are set
 * aside: no echo, no input or output processing, so the bytes go back as they were read. checkpoint/tty.ts
 * documents the rule for the write-back mode; restore/tty.ts writes the image's bytes the same way. */
#define _GNU_SOURCE
#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif
/* One pty buffer (N_TTY_BUF_SIZE) per direction, with room to spare for the flip buffers not yet processed. */
#define TTY_QUEUE_MAX (64u << 10)

struct queue {
	uint8_t *data;
	size_t len;
};

/* Reads what fd holds now without waiting: FIONREAD first (the description may be blocking), then that much.
 * packet: a master in packet mode starts every read with a status byte, which is not queued data. */
static int drain(struct helper *h, int pid, int fd, int packet, struct queue *q, const char *what)
{
	q->data = malloc(TTY_QUEUE_MAX);
	if (!q->data)
		return gw_fail(&h->err, ENOMEM, "malloc", pid, "buffer for %s", what);
	q->len = 0;
	for (;;) {
		/* n_tty's poll flushes the flip buffers not yet processed, so FIONREAD counts them. */
		struct pollfd p = { .fd = fd, .events = POLLIN };
		poll(&p, 1, 0);
		int n = 0;
		if (ioctl(fd, FIONREAD, &n) < 0)
			return gw_fail_errno(&h->err, "ioctl(FIONREAD)", pid, "%s", what);
		if (n <= 0)
			return 0;
		if (q->len + (size_t)n + 1 > TTY_QUEUE_MAX)
			return gw_fail(&h->err, EFBIG, "read", pid, "%s holds more than %u bytes", what, TTY_QUEUE_MAX);
		ssize_t k = read(fd, q->data + q->len, (size_t)n + (packet ? 1 : 0));
		if (k < 0 && errno == EAGAIN)
			return 0;
		if (k <= 0)
			return gw_fail_errno(&h->err, "read", pid, "%s", what);
		if (packet) {
			memmove(q->data + q->len, q->data + q->len + 1, (size_t)k - 1);
			k--;
		}
		q->len += (size_t)k;
	}
}

static int put_back(struct helper *h, int pid, int to, int from, const struct queue *q, const char *what)
{
	for (size_t off = 0; off < q->len;) {
		ssize_t k = write(to, q->data + off, q->len - off);
		if (k <= 0)
			return gw_fail_errno(&h->err, "write", pid, "putting back %s", what);
		off += (size_t)k;
	}
	/* The other side's line discipline takes the bytes in a work item: wait for it (poll flushes it) before
	 * the termios change back, which would otherwise apply to them. */
	struct pollfd p = { .fd = from, .events = POLLIN };
	poll(&p, 1, 0);
	return 0;
}

/* Canonical mode (lines) is kept for the write-back when none of the bytes is a character canonical mode acts
 * on, so the reader gets its lines back one by one; otherwise the bytes go back raw (readable at once). */
static int canonical_ok(const struct termios2 *t, const struct queue *q)
{
	if (!(t->c_lflag & ICANON))
		return 0;
	static const int special[] = { VEOF, VEOL, VEOL2, VERASE, VKILL };
	for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++) {
		cc_t c = t->c_cc[special[i]];
		if (c && memchr(q->data, c, q->len))
			return 0;
	}
	return 1;
}

int op_tty_queue(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct fd_req q;
	if (parse_fd_req(h, req, len, &q, "TtyQueueReq"))
		return -1;
	int master AUTO_CLOSE = grab_fd(h, q.pid, q.fd);
	if (master < 0)
		return -1;
	int slave AUTO_CLOSE = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (slave < 0) {
		if (errno == EIO)
			return 0; /* locked (TIOCSPTLCK): no slave was ever opened, nothing can be queued */
		return gw_fail_errno(&h->err, "ioctl(TIOCGPTPEER)", q.pid, "slave of pty master fd %d", q.fd);
	}
	struct termios2 t, raw;
	if (ioctl(slave, TCGETS2, &t) < 0)
		return gw_fail_errno(&h->err, "ioctl(TCGETS2)", q.pid, "slave of pty master fd %d", q.fd);
	int packet = 0;
	ioctl(master, TIOCGPKT, &packet);
	raw = t;
	/* A master in packet mode is told of every change of IXON (a status byte its next read returns): kept. */
	raw.c_iflag = packet ? t.c_iflag & IXON : 0;
	raw.c_oflag = 0;
	raw.c_lflag = 0;
	raw.c_cc[VMIN] = 0;
	raw.c_cc[VTIME] = 0;
	/* Non-canonical mode makes a partial line readable too (n_tty hands the whole buffer over on the switch). */
	if (ioctl(slave, TCSETS2, &raw) < 0)
		return gw_fail_errno(&h->err, "ioctl(TCSETS2)", q.pid, "slave of pty master fd %d (raw mode)", q.fd);
	struct queue sin = { 0 }, min = { 0 };
	int rc = drain(h, q.pid, slave, 0, &sin, "the slave's input queue");
	if (!rc)
		rc = drain(h, q.pid, master, packet, &min, "the master's input queue");
	/* Whatever was read goes back, after a failure too: the tree runs on and must not lose its bytes (the first
	 * error is the one reported: gw_fail keeps it). */
	if (sin.len || min.len) {
		struct termios2 back = raw;
		if (canonical_ok(&t, &sin))
			back.c_lflag = ICANON;
		if (ioctl(slave, TCSETS2, &back) < 0)
			rc = gw_fail_errno(&h->err, "ioctl(TCSETS2)", q.pid, "slave of pty master fd %d", q.fd);
		rc |= put_back(h, q.pid, master, slave, &sin, "the slave's input queue");
		rc |= put_back(h, q.pid, slave, master, &min, "the master's input queue");
	}
	if (ioctl(slave, TCSETS2, &t) < 0 && !rc)
		rc = gw_fail_errno(&h->err, "ioctl(TCSETS2)", q.pid, "slave of pty master fd %d (its termios back)", q.fd);
	if (!rc) {
		if (sin.len)
			pb_bytes(out, F_TtyQueueResp_slave_in, sin.data, sin.len);
		if (min.len)
			pb_bytes(out, F_TtyQueueResp_master_in, min.data, min.len);
	}
	free(sin.data);
	free(min.data);
	return rc;
}
