/*
 * unix-sockets: unix sockets with data queued in them.
 *   - a stream socketpair with bytes queued both ways (3000 and 100),
 *   - a datagram socketpair with datagrams of different sizes queued (boundaries matter),
 *   - a listening socket bound to DIR/sock with a connected client and its accepted peer, data queued both ways,
 *   - an abstract datagram socket with datagrams queued from a socket connected to it.
 * Verify: exactly the queued bytes/datagrams arrive, the names (bound path, abstract name, peer names) are as
 * before, every pair still carries data both ways, and the listener still accepts a new connection.
 */
#include "zdtm.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_MSGS 8

struct queued {	/* what one receiving socket must find: n messages of the given sizes from one seed each */
	const char *what;
	int fd, stream, n;
	size_t size[MAX_MSGS];
	uint64_t seed[MAX_MSGS];
};

static void send_msg(struct zt *z, int fd, size_t len, uint64_t seed, const char *what)
{
	char buf[4096];
	zt_fill_random(buf, len, seed);
	if (send(fd, buf, len, MSG_DONTWAIT) != (ssize_t)len)
		zt_setup_failed(z, "send", what);
}

static void queue_msgs(struct zt *z, struct queued *q, int from, int to, int stream, const size_t *sizes, int n,
		       uint64_t seed, const char *what)
{
	*q = (struct queued){ .what = what, .fd = to, .stream = stream, .n = n };
	for (int i = 0; i < n; i++) {
		q->size[i] = sizes[i];
		q->seed[i] = seed + (uint64_t)i;
		send_msg(z, from, sizes[i], q->seed[i], what);
	}
}

static void check_queued(struct zt *z, const struct queued *q)
{
	char buf[8192];
	if (q->stream) {
		/* a stream has no boundaries: the concatenation must match, nothing more */
		size_t want = 0, got = 0;
		for (int i = 0; i < q->n; i++)
			want += q->size[i];
		for (;;) {
			ssize_t r = recv(q->fd, buf + got, sizeof(buf) - got, MSG_DONTWAIT);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		if (got != want) {
			zt_fail(z, "%s (fd %d): %zu bytes were queued, expected %zu", q->what, q->fd, got, want);
			return;
		}
		size_t off = 0;
		for (int i = 0; i < q->n; off += q->size[i], i++) {
			size_t bad = zt_check_random(buf + off, q->size[i], q->seed[i]);
			if (bad != (size_t)-1) {
				zt_fail(z, "%s (fd %d): byte %zu differs", q->what, q->fd, off + bad);
				return;
			}
		}
		return;
	}
	for (int i = 0; i <= q->n; i++) {
		ssize_t r = recv(q->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (i == q->n) {
			if (r >= 0)
				zt_fail(z, "%s (fd %d): an extra datagram of %zd bytes was queued", q->what, q->fd, r);
			return;
		}
		if (r < 0) {
			zt_fail(z, "%s (fd %d): %d datagrams were queued, expected %d", q->what, q->fd, i, q->n);
			return;
		}
		if ((size_t)r != q->size[i]) {
			zt_fail(z, "%s (fd %d): datagram %d has %zd bytes, expected %zu", q->what, q->fd, i, r, q->size[i]);
			return;
		}
		if (zt_check_random(buf, (size_t)r, q->seed[i]) != (size_t)-1) {
			zt_fail(z, "%s (fd %d): datagram %d content differs", q->what, q->fd, i);
			return;
		}
	}
}

/* One fresh message each way, waiting up to a second for it. */
static void check_talks(struct zt *z, const char *what, int a, int b)
{
	int ends[2][2] = { { a, b }, { b, a } };
	for (int k = 0; k < 2; k++) {
		char msg[16] = "ping after ckpt", got[16] = "";
		if (send(ends[k][0], msg, sizeof(msg), MSG_DONTWAIT) != sizeof(msg)) {
			zt_fail(z, "%s: send on fd %d: %s", what, ends[k][0], strerror(errno));
			continue;
		}
		struct pollfd p = { .fd = ends[k][1], .events = POLLIN };
		if (poll(&p, 1, 1000) != 1 || recv(ends[k][1], got, sizeof(got), MSG_DONTWAIT) != sizeof(got) ||
		    memcmp(msg, got, sizeof(msg)))
			zt_fail(z, "%s: a message sent on fd %d did not arrive on fd %d", what, ends[k][0], ends[k][1]);
	}
}

static socklen_t unix_addr(struct sockaddr_un *a, const char *name, size_t len)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path, name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

static void check_name(struct zt *z, const char *what, int fd, int peer, const struct sockaddr_un *want,
		       socklen_t want_len)
{
	struct sockaddr_un got;
	socklen_t len = sizeof(got);
	memset(&got, 0, sizeof(got));
	int r = peer ? getpeername(fd, (struct sockaddr *)&got, &len) : getsockname(fd, (struct sockaddr *)&got, &len);
	if (r < 0)
		zt_fail_sys(z, peer ? "getpeername" : "getsockname", what);
	else if (len != want_len || memcmp(&got, want, len))
		zt_fail(z, "%s (fd %d): %s name is '%s%s' (%u bytes), expected '%s%s'", what, fd, peer ? "peer" : "own",
			got.sun_path[0] ? "" : "@", got.sun_path + !got.sun_path[0], (unsigned)len,
			want->sun_path[0] ? "" : "@", want->sun_path + !want->sun_path[0]);
}

static int sock(struct zt *z, int type)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		zt_setup_failed(z, "socket", "unix socket");
	return fd;
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	struct queued q[8];
	int nq = 0;

	int s[2], d[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0 ||
	    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, d) < 0)
		zt_setup_failed(&z, "socketpair", "pairs");
	queue_msgs(&z, &q[nq++], s[0], s[1], 1, (size_t[]){ 1000, 2000 }, 2, 0x510, "stream pair s0->s1");
	queue_msgs(&z, &q[nq++], s[1], s[0], 1, (size_t[]){ 100 }, 1, 0x520, "stream pair s1->s0");
	queue_msgs(&z, &q[nq++], d[0], d[1], 0, (size_t[]){ 10, 200, 1 }, 3, 0x530, "dgram pair d0->d1");
	queue_msgs(&z, &q[nq++], d[1], d[0], 0, (size_t[]){ 33 }, 1, 0x540, "dgram pair d1->d0");

	char path[PATH_MAX];
	zt_path(&z, path, sizeof(path), "sock");
	struct sockaddr_un path_addr;
	if (strlen(path) >= sizeof(path_addr.sun_path)) {
		errno = ENAMETOOLONG;
		zt_setup_failed(&z, "bind", path);
	}
	socklen_t path_len = unix_addr(&path_addr, path, strlen(path) + 1);
	int l = sock(&z, SOCK_STREAM), c = sock(&z, SOCK_STREAM);
	if (bind(l, (struct sockaddr *)&path_addr, path_len) < 0 || listen(l, 8) < 0)
		zt_setup_failed(&z, "bind/listen", path);
	if (connect(c, (struct sockaddr *)&path_addr, path_len) < 0)
		zt_setup_failed(&z, "connect", path);
	int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (a < 0)
		zt_setup_failed(&z, "accept4", path);
	queue_msgs(&z, &q[nq++], c, a, 1, (size_t[]){ 500 }, 1, 0x550, "client->accepted");
	queue_msgs(&z, &q[nq++], a, c, 1, (size_t[]){ 70 }, 1, 0x560, "accepted->client");

	char abs_name[64];
	int abs_len = snprintf(abs_name, sizeof(abs_name), "%cgodwit-scenario-%d", 0, getpid());
	struct sockaddr_un abs_addr;
	socklen_t abs_alen = unix_addr(&abs_addr, abs_name, (size_t)abs_len);
	int ab = sock(&z, SOCK_DGRAM), sender = sock(&z, SOCK_DGRAM);
	if (bind(ab, (struct sockaddr *)&abs_addr, abs_alen) < 0)
		zt_setup_failed(&z, "bind", "abstract socket");
	if (connect(sender, (struct sockaddr *)&abs_addr, abs_alen) < 0)
		zt_setup_failed(&z, "connect", "abstract socket");
	queue_msgs(&z, &q[nq++], sender, ab, 0, (size_t[]){ 64, 128 }, 2, 0x570, "abstract dgram");

	zt_info(&z, "stream-s1", "%d", s[1]);
	zt_info(&z, "dgram-d1", "%d", d[1]);
	zt_info(&z, "listener", "%d %s", l, path);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	for (int i = 0; i < nq; i++)
		check_queued(&z, &q[i]);
	check_name(&z, "listener", l, 0, &path_addr, path_len);
	check_name(&z, "client", c, 1, &path_addr, path_len);
	check_name(&z, "accepted", a, 0, &path_addr, path_len);
	check_name(&z, "abstract socket", ab, 0, &abs_addr, abs_alen);
	check_name(&z, "abstract sender", sender, 1, &abs_addr, abs_alen);
	int acc = 0;
	socklen_t optlen = sizeof(acc);
	if (getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &optlen) < 0 || !acc)
		zt_fail(&z, "listener (fd %d) is not listening", l);

	check_talks(&z, "stream pair", s[0], s[1]);
	check_talks(&z, "dgram pair", d[0], d[1]);
	check_talks(&z, "client/accepted", c, a);
	char ping[16] = "ping after ckpt", got[16];
	if (send(sender, ping, sizeof(ping), MSG_DONTWAIT) != sizeof(ping) || recv(ab, got, sizeof(got), MSG_DONTWAIT) != sizeof(got))
		zt_fail(&z, "abstract socket: a datagram from its connected sender did not arrive");

	/* The listener takes a new connection. */
	int n = sock(&z, SOCK_STREAM);
	struct pollfd p = { .fd = l, .events = POLLIN };
	if (connect(n, (struct sockaddr *)&path_addr, path_len) < 0)
		zt_fail(&z, "connect to %s after restore: %s", path, strerror(errno));
	else if (poll(&p, 1, 1000) != 1)
		zt_fail(&z, "listener (fd %d) did not see the new connection", l);
	else {
		int na = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (na < 0)
			zt_fail_sys(&z, "accept4", "listener");
		else
			check_talks(&z, "new connection", n, na);
	}
	return zt_finish(&z);
}
