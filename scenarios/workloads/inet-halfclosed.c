/*
 * inet-halfclosed: TCP connections in every half-closed state, both ends in this process (loopback, --family 4
 * or 6), with data still queued behind or before the FINs:
 *   1. A FIN_WAIT2 / B CLOSE_WAIT: A sent 100 bytes and its FIN, B sent 200 bytes; nobody read.
 *   2. C FIN_WAIT1 / D ESTABLISHED: C filled D's small receive buffer and its own send buffer, then shut down:
 *      its FIN waits behind unsent bytes.
 *   3. E CLOSING / F FIN_WAIT2: E filled F's buffers and shut down (FIN_WAIT1), then F sent 70 bytes and its FIN
 *      and E read them to the end.
 *   4. G LAST_ACK / H FIN_WAIT2: H shut down, then G filled H's buffers and shut down.
 *   5. I and J closed both ways (CLOSE; I's port is held by its TIME_WAIT), their addresses still readable.
 * Verify: every socket is in its state still (or the next one, where the peer could take the bytes that waited
 * for its window; E may be LAST_ACK: a restore puts its FINs back in that order, the same to the application),
 * then each side reads what is left to the end and checks every byte, and the sides
 * that may still send do, so the FINs of both directions are seen to arrive. I and J read EOF, refuse writes and
 * still show their own and their peer's address (SO_PEERNAME: getpeername refuses a closed socket).
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536		/* SO_SNDBUF / SO_RCVBUF: the kernel doubles it; a few hundred KiB fill both */
#define STREAM (4u << 20)	/* bytes of random stream available to a filler */

static struct zt_opt opts[] = {
	{ "family", 4, 4, 6, "4: 127.0.0.1, 6: ::1" },
};

static struct zt z;
static bool verifying;		/* after zt_ready(): failures are findings, not setup errors */
static uint8_t *stream;		/* the bytes every sender writes from its start: seed 1 */

struct end {
	const char *name;
	int fd;
	size_t sent;		/* bytes written (from stream) */
};

static void pair(int family, struct end *a, struct end *b)
{
	struct sockaddr_storage ss;
	socklen_t sl = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = family;
	if (family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	int bufsz = BUF;
	int l = socket(family, SOCK_STREAM, 0);
	a->fd = socket(family, SOCK_STREAM, 0);
	if (l < 0 || a->fd < 0)
		zt_setup_failed(&z, "socket", a->name);
	/* Set before the handshake: the window scale is chosen then. The accepted end inherits the listener's. */
	if (setsockopt(l, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz)) || setsockopt(l, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz)) ||
	    setsockopt(a->fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz)) || setsockopt(a->fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz)))
		zt_setup_failed(&z, "setsockopt(SO_RCVBUF/SO_SNDBUF)", a->name);
	if (bind(l, (struct sockaddr *)&ss, sl) || listen(l, 1) || getsockname(l, (struct sockaddr *)&ss, &sl))
		zt_setup_failed(&z, "bind/listen", a->name);
	if (connect(a->fd, (struct sockaddr *)&ss, sl))
		zt_setup_failed(&z, "connect", a->name);
	b->fd = accept(l, NULL, NULL);
	if (b->fd < 0)
		zt_setup_failed(&z, "accept", b->name);
	close(l);
}

static void put(struct end *e, size_t n)
{
	if (send(e->fd, stream + e->sent, n, MSG_NOSIGNAL) != (ssize_t)n) {
		if (!verifying)
			zt_setup_failed(&z, "send", e->name);
		zt_fail_sys(&z, "send", e->name);
		return;
	}
	e->sent += n;
}

/* Writes without blocking until the peer's receive buffer and our send buffer are full. */
static void fill(struct end *e)
{
	for (;;) {
		ssize_t n = send(e->fd, stream + e->sent, 4096, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			/* Once more after the stack moved what it could: the peer's window closes a moment later. */
			usleep(50000);
			n = send(e->fd, stream + e->sent, 4096, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0 && errno == EAGAIN)
				return;
		}
		if (n <= 0 || e->sent + 2 * 4096 > STREAM)
			zt_setup_failed(&z, "send", e->name);
		e->sent += (size_t)n;
	}
}

static void shut(struct end *e)
{
	if (shutdown(e->fd, SHUT_WR)) {
		if (!verifying)
			zt_setup_failed(&z, "shutdown", e->name);
		zt_fail_sys(&z, "shutdown", e->name);
	}
}

static int state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) ? -1 : ti.tcpi_state;
}

/* Setup: waits (up to 2 s) for the stack to bring a socket to `want`. */
static void settle(struct end *e, int want)
{
	for (int i = 0; i < 200 && state(e->fd) != want; i++)
		usleep(10000);
	if (state(e->fd) != want) {
		errno = EPROTO;
		zt_setup_failed(&z, "TCP_INFO: not in the expected state", e->name);
	}
}

/* In state `want`, or `or_this`: where bytes were waiting for the peer's window, the peer may have opened it
 * (a restored receive queue can take less memory than the one that arrived) and taken the rest with the FIN. */
static void expect_state(struct end *e, int want, int or_this)
{
	int s = state(e->fd);
	if (s != want && s != or_this)
		zt_fail(&z, "%s: in TCP state %d, not %d", e->name, s, want);
}

/* Reads to the end: what `from` sent (from the start of the stream, less `skip` already read) then EOF. */
static void drain(struct end *e, const struct end *from, size_t skip)
{
	static uint8_t buf[65536];
	size_t at = skip;
	for (;;) {
		ssize_t n = read(e->fd, buf, sizeof(buf));
		if (n < 0) {
			zt_fail_sys(&z, "read", e->name);
			return;
		}
		if (n == 0)
			break;
		if (at + (size_t)n > from->sent) {
			zt_fail(&z, "%s: read %zu bytes, %s sent %zu", e->name, at + (size_t)n, from->name, from->sent);
			return;
		}
		if (memcmp(buf, stream + at, (size_t)n)) {
			zt_fail(&z, "%s: bytes from offset %zu differ from what %s sent", e->name, at, from->name);
			return;
		}
		at += (size_t)n;
	}
	if (at != from->sent)
		zt_fail(&z, "%s: got %zu bytes before EOF, %s sent %zu", e->name, at, from->name, from->sent);
}

struct names {
	struct sockaddr_storage self, peer;
	socklen_t self_len, peer_len;
};

static int names(int fd, struct names *n)
{
	n->self_len = n->peer_len = sizeof(n->self);
	if (getsockname(fd, (struct sockaddr *)&n->self, &n->self_len))
		return -1;
	/* SO_PEERNAME wants the exact size: that of our own address. */
	n->peer_len = n->self_len;
	return getsockopt(fd, SOL_SOCKET, SO_PEERNAME, &n->peer, &n->peer_len);
}

static void refuses_writes(struct end *e)
{
	errno = 0;
	ssize_t n = send(e->fd, "x", 1, MSG_NOSIGNAL);
	if (n != -1 || errno != EPIPE)
		zt_fail(&z, "%s: a write after shutdown returned %zd (%s), not EPIPE", e->name, n, strerror(errno));
}

int main(int argc, char **argv)
{
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	int family = opts[0].value == 6 ? AF_INET6 : AF_INET;
	stream = malloc(STREAM);
	if (!stream)
		zt_setup_failed(&z, "malloc", "stream");
	zt_fill_random(stream, STREAM, 1);

	struct end a = { .name = "A (FIN_WAIT2)" }, b = { .name = "B (CLOSE_WAIT)" }, c = { .name = "C (FIN_WAIT1)" },
		   d = { .name = "D (ESTABLISHED)" }, e = { .name = "E (CLOSING)" }, f = { .name = "F (FIN_WAIT2)" },
		   g = { .name = "G (LAST_ACK)" }, h = { .name = "H (FIN_WAIT2)" };
	pair(family, &a, &b);
	put(&a, 100);
	put(&b, 200);
	shut(&a);
	settle(&a, TCP_FIN_WAIT2);
	settle(&b, TCP_CLOSE_WAIT);

	pair(family, &c, &d);
	fill(&c);
	shut(&c);
	settle(&c, TCP_FIN_WAIT1);

	pair(family, &e, &f);
	fill(&e);
	shut(&e);
	put(&f, 70);
	shut(&f);
	drain(&e, &f, 0);
	settle(&e, TCP_CLOSING);
	settle(&f, TCP_FIN_WAIT2);

	pair(family, &g, &h);
	shut(&h);
	settle(&g, TCP_CLOSE_WAIT);
	fill(&g);
	shut(&g);
	settle(&g, TCP_LAST_ACK);
	settle(&h, TCP_FIN_WAIT2);
	struct end i = { .name = "I (CLOSE)" }, j = { .name = "J (CLOSE)" };
	struct names in, jn;
	pair(family, &i, &j);
	shut(&i);
	shut(&j);
	settle(&i, TCP_CLOSE);
	settle(&j, TCP_CLOSE);
	if (names(i.fd, &in) || names(j.fd, &jn))
		zt_setup_failed(&z, "getsockname/SO_PEERNAME", "closed pair");

	if (z.nfail) {
		errno = EPROTO;
		zt_setup_failed(&z, "setup reads", z.fail);
	}

	zt_info(&z, "queued", "%zu %zu %zu", c.sent, e.sent, g.sent);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);
	verifying = true;

	expect_state(&a, TCP_FIN_WAIT2, TCP_FIN_WAIT2);
	expect_state(&b, TCP_CLOSE_WAIT, TCP_CLOSE_WAIT);
	expect_state(&c, TCP_FIN_WAIT1, TCP_FIN_WAIT2);
	expect_state(&d, TCP_ESTABLISHED, TCP_CLOSE_WAIT);
	/* A restore brings E back as LAST_ACK (see the top); once its FIN is acked, E and the FIN_WAIT2 ends go on
	 * to TIME_WAIT, which leaves the descriptor's socket CLOSE. */
	int es = state(e.fd);
	if (es != TCP_CLOSING && es != TCP_LAST_ACK && es != TCP_CLOSE)
		zt_fail(&z, "%s: in TCP state %d, not %d", e.name, es, TCP_CLOSING);
	expect_state(&f, TCP_FIN_WAIT2, TCP_CLOSE);
	expect_state(&g, TCP_LAST_ACK, TCP_CLOSE);
	expect_state(&h, TCP_FIN_WAIT2, TCP_CLOSE);

	drain(&b, &a, 0);
	put(&b, 300);
	shut(&b);
	drain(&a, &b, 0);
	refuses_writes(&a);

	drain(&d, &c, 0);
	put(&d, 50);
	shut(&d);
	drain(&c, &d, 0);

	drain(&f, &e, 0);
	drain(&e, &f, f.sent); /* it read F's bytes before the dump: only the EOF is left */
	refuses_writes(&e);

	drain(&h, &g, 0);
	drain(&g, &h, 0);
	refuses_writes(&g);

	struct names now;
	expect_state(&i, TCP_CLOSE, TCP_CLOSE);
	expect_state(&j, TCP_CLOSE, TCP_CLOSE);
	if (names(i.fd, &now) || now.self_len != in.self_len || memcmp(&now.self, &in.self, in.self_len) ||
	    now.peer_len != in.peer_len || memcmp(&now.peer, &in.peer, in.peer_len))
		zt_fail(&z, "%s: its address or its peer's changed", i.name);
	if (names(j.fd, &now) || memcmp(&now.self, &jn.self, jn.self_len) || memcmp(&now.peer, &jn.peer, jn.peer_len))
		zt_fail(&z, "%s: its address or its peer's changed", j.name);
	drain(&i, &j, 0);
	drain(&j, &i, 0);
	refuses_writes(&i);
	refuses_writes(&j);
	return zt_finish(&z);
}
