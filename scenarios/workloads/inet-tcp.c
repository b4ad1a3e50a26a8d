/*
 * inet-tcp: a TCP echo server and its client, both in the tree, exchanging numbered messages without pause.
 *   - the server (P0) listens on the loopback address (--family 4: 127.0.0.1, 6: ::1 with IPV6_V6ONLY; or on
 *     --addr, an IPv4 address given as its 32-bit number, for tests between hosts) with
 *     SO_REUSEADDR and a backlog of 7, accepts its child's connection (TCP_NODELAY on it), and also echoes bytes
 *     on any other connection it accepts (a client outside the tree, as a test has);
 *   - the client (P1) keeps up to WINDOW messages in flight: message n is [u64 n][u32 len][len bytes of the
 *     random stream of seed n], the reply [u64 n][u32 len'][len' bytes of seed n ^ REPLY_SEED]. Both sides
 *     check every number and byte, so a lost, duplicated or reordered byte shows as a failure where it happens.
 * Verify: the client sends EXTRA more messages (the connection works after a restore), collects every reply and
 * closes; the server checks the message count, that the listener kept its port, options and backlog, and that
 * it still accepts a new connection that carries data both ways.
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BACKLOG 7
#define WINDOW 4	      /* messages in flight: keeps both queues holding data at any moment */
#define EXTRA 5		      /* messages exchanged after the verify request */
#define MAX_MSG 16384	      /* largest message body: a few of them fill part of a socket buffer */
#define MAX_REPLY 4096
#define REPLY_SEED 0x5eedf00dull
#define MAX_EXTERNAL 8
#define PACE_NS 500000ull     /* between windows: the exchange runs on without taking a whole core */

static struct zt_opt opts[] = {
	{ "family", 4, 4, 6, "4: 127.0.0.1, 6: ::1" },
	/* Options are numbers: an address is given as its 32-bit value (198.18.0.1 = 3323068417). */
	{ "addr", 0, 0, 0xffffffffll, "IPv4 address to listen on, as a number (0: loopback)" },
};

/* Where the server listens (IPv4, host order); loopback unless --addr. */
static uint32_t listen_addr = INADDR_LOOPBACK;

static size_t msg_len(uint64_t n)
{
	return 1 + (size_t)((n * 7919u) % MAX_MSG);
}

static size_t reply_len(uint64_t n)
{
	return 1 + (size_t)((n * 31u) % MAX_REPLY);
}

/* Whole reads and writes; EINTR (the verify signal) is not a reason to stop half-way through a message. */
static int read_full(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 && got == 0 ? 0 : -1;
		got += (size_t)r;
	}
	return 1;
}

static int write_full(int fd, const void *buf, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t r = write(fd, (const char *)buf + put, len - put);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		put += (size_t)r;
	}
	return 0;
}

struct hdr {
	uint64_t n;
	uint32_t len;
} __attribute__((packed));

static int send_numbered(int fd, uint64_t n, size_t len, uint64_t seed)
{
	static char buf[sizeof(struct hdr) + MAX_MSG];
	struct hdr h = { n, (uint32_t)len };
	memcpy(buf, &h, sizeof(h));
	zt_fill_random(buf + sizeof(h), len, seed);
	return write_full(fd, buf, sizeof(h) + len);
}

/* Reads message n; 1 ok, 0 clean EOF before it, -1 with a failure recorded. */
static int recv_numbered(struct zt *z, int fd, uint64_t n, size_t len, uint64_t seed, const char *who)
{
	static char buf[MAX_MSG];
	struct hdr h;
	int r = read_full(fd, &h, sizeof(h));
	if (r == 0)
		return 0;
	if (r < 0) {
		zt_fail_sys(z, "read", who);
		return -1;
	}
	if (h.n != n || h.len != len) {
		zt_fail(z, "%s: expected message %llu of %zu bytes, got number %llu of %u bytes", who, (unsigned long long)n,
			len, (unsigned long long)h.n, h.len);
		return -1;
	}
	if (read_full(fd, buf, len) != 1) {
		zt_fail(z, "%s: message %llu cut short", who, (unsigned long long)n);
		return -1;
	}
	size_t bad = zt_check_random(buf, len, seed);
	if (bad != (size_t)-1) {
		zt_fail(z, "%s: byte %zu of message %llu differs", who, bad, (unsigned long long)n);
		return -1;
	}
	return 1;
}

static socklen_t loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == 6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons(port);
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(listen_addr);
	a->sin_port = htons(port);
	return sizeof(*a);
}

static uint16_t port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &l))
		return 0;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
}

static int connect_to(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t l = loopback(family, port, &ss);
	int s = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s >= 0 && connect(s, (struct sockaddr *)&ss, l)) {
		close(s);
		return -1;
	}
	return s;
}

static __attribute__((noreturn)) void run_client(struct zt *z, int s)
{
	uint64_t sent = 0, done = 0, stop_at = 0;
	bool stopping = false;
	for (;;) {
		if (!stopping && zt_requested(z)) {
			stopping = true;
			stop_at = sent + EXTRA;
		}
		while (sent - done < WINDOW && (!stopping || sent < stop_at)) {
			if (send_numbered(s, sent, msg_len(sent), sent)) {
				zt_fail_sys(z, "write", "client: message");
				_exit(zt_finish_part(z, "client"));
			}
			sent++;
		}
		if (done == sent)
			break;
		int r = recv_numbered(z, s, done, reply_len(done), done ^ REPLY_SEED, "client: reply");
		if (r <= 0) {
			if (r == 0)
				zt_fail(z, "client: the server closed the connection before reply %llu", (unsigned long long)done);
			_exit(zt_finish_part(z, "client"));
		}
		done++;
		if (!stopping && done % WINDOW == 0)
			zt_sleep_ns(PACE_NS);
	}
	/* A request right after ready may find nothing exchanged yet: EXTRA is what is certain. */
	if (done < EXTRA)
		zt_fail(z, "client: only %llu round trips", (unsigned long long)done);
	shutdown(s, SHUT_WR);
	char c;
	if (read(s, &c, 1) != 0)
		zt_fail(z, "client: the server did not close after the last reply");
	_exit(zt_finish_part(z, "client"));
}

struct server {
	int family, listener, conn;
	int ext[MAX_EXTERNAL];
	int next_ext;
	uint64_t served;
};

/* Bytes from a client outside the tree come back as they are. */
static void echo_external(struct server *sv, int i)
{
	char buf[4096];
	ssize_t r = read(sv->ext[i], buf, sizeof(buf));
	if (r < 0 && errno == EINTR)
		return;
	if (r <= 0 || write_full(sv->ext[i], buf, (size_t)r)) {
		close(sv->ext[i]);
		sv->ext[i] = -1;
	}
}

static void check_listener(struct zt *z, struct server *sv, uint16_t port)
{
	int v = 0;
	socklen_t l = sizeof(v);
	if (port_of(sv->listener) != port)
		zt_fail(z, "listener: port %u, expected %u", port_of(sv->listener), port);
	if (getsockopt(sv->listener, SOL_SOCKET, SO_REUSEADDR, &v, &l) || !v)
		zt_fail(z, "listener: SO_REUSEADDR is off");
	struct tcp_info ti;
	l = sizeof(ti);
	if (getsockopt(sv->listener, IPPROTO_TCP, TCP_INFO, &ti, &l) || ti.tcpi_state != TCP_LISTEN || ti.tcpi_sacked != BACKLOG)
		zt_fail(z, "listener: not listening with backlog %d (state %u, backlog %u)", BACKLOG, ti.tcpi_state, ti.tcpi_sacked);
	if (sv->family == 6) {
		l = sizeof(v);
		if (getsockopt(sv->listener, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) || !v)
			zt_fail(z, "listener: IPV6_V6ONLY is off");
	}
	l = sizeof(v);
	if (getsockopt(sv->conn, IPPROTO_TCP, TCP_NODELAY, &v, &l) || !v)
		zt_fail(z, "connection: TCP_NODELAY is off");
	/* Inherited from the listener; leaving TCP repair mode clears it (zdtm socket-tcp after --leave-running). */
	l = sizeof(v);
	if (getsockopt(sv->conn, SOL_SOCKET, SO_REUSEADDR, &v, &l) || !v)
		zt_fail(z, "connection: SO_REUSEADDR is off");
	/* A new connection: accepted, and data both ways. */
	int c = connect_to(sv->family, port);
	if (c < 0) {
		zt_fail_sys(z, "connect", "new connection to the listener");
		return;
	}
	int a = accept4(sv->listener, NULL, NULL, SOCK_CLOEXEC);
	if (a < 0) {
		zt_fail_sys(z, "accept4", "new connection");
		close(c);
		return;
	}
	char x = 'q', y = 0;
	if (write(c, &x, 1) != 1 || read(a, &y, 1) != 1 || y != 'q' || write(a, "r", 1) != 1 || read(c, &y, 1) != 1 || y != 'r')
		zt_fail(z, "new connection: data did not go through both ways");
	close(a);
	close(c);
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), SIGUSR2);
	struct server sv = { .family = (int)opts[0].value, .conn = -1 };
	if (sv.family != 4 && sv.family != 6) {
		fprintf(stderr, "inet-tcp: --family must be 4 or 6\n");
		return ZT_EXIT_USAGE;
	}
	if (opts[1].value) {
		if (sv.family != 4) {
			fprintf(stderr, "inet-tcp: --addr needs --family 4\n");
			return ZT_EXIT_USAGE;
		}
		listen_addr = (uint32_t)opts[1].value;
	}
	for (int i = 0; i < MAX_EXTERNAL; i++)
		sv.ext[i] = -1;
	sv.listener = socket(sv.family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sv.listener < 0)
		zt_setup_failed(&z, "socket", "listener");
	int one = 1;
	if (setsockopt(sv.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (sv.family == 6 && setsockopt(sv.listener, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one))))
		zt_setup_failed(&z, "setsockopt", "listener options");
	struct sockaddr_storage ss;
	socklen_t sl = loopback(sv.family, 0, &ss);
	if (bind(sv.listener, (struct sockaddr *)&ss, sl) || listen(sv.listener, BACKLOG))
		zt_setup_failed(&z, "bind/listen", "listener");
	uint16_t port = port_of(sv.listener);

	pid_t client = fork();
	if (client < 0)
		zt_setup_failed(&z, "fork", "client");
	if (client == 0) {
		close(sv.listener);
		int s = connect_to(sv.family, port);
		if (s < 0)
			zt_setup_failed(&z, "connect", "client");
		run_client(&z, s);
	}
	sv.conn = accept4(sv.listener, NULL, NULL, SOCK_CLOEXEC);
	if (sv.conn < 0 || setsockopt(sv.conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		zt_setup_failed(&z, "accept4", "the client's connection");
	zt_info(&z, "port", "%u", port);
	zt_info(&z, "family", "%d", sv.family);
	pid_t pids[] = { getpid(), client };
	zt_ready(&z, pids, 2);

	bool eof = false;
	while (!eof) {
		struct pollfd p[2 + MAX_EXTERNAL];
		p[0] = (struct pollfd){ sv.listener, POLLIN, 0 };
		p[1] = (struct pollfd){ sv.conn, POLLIN, 0 };
		for (int i = 0; i < MAX_EXTERNAL; i++)
			p[2 + i] = (struct pollfd){ sv.ext[i], POLLIN, 0 };
		if (poll(p, 2 + MAX_EXTERNAL, 1000) < 0) {
			if (errno == EINTR)
				continue;
			zt_fail_sys(&z, "poll", "server");
			break;
		}
		if (p[0].revents & POLLIN) {
			int a = accept4(sv.listener, NULL, NULL, SOCK_CLOEXEC);
			if (a >= 0) {
				if (sv.ext[sv.next_ext] >= 0)
					close(sv.ext[sv.next_ext]);
				sv.ext[sv.next_ext] = a;
				sv.next_ext = (sv.next_ext + 1) % MAX_EXTERNAL;
			}
		}
		for (int i = 0; i < MAX_EXTERNAL; i++)
			if (sv.ext[i] >= 0 && p[2 + i].revents)
				echo_external(&sv, i);
		if (p[1].revents) {
			int r = recv_numbered(&z, sv.conn, sv.served, msg_len(sv.served), sv.served, "server: message");
			if (r < 0)
				break;
			if (r == 0) {
				eof = true;
				break;
			}
			if (send_numbered(sv.conn, sv.served, reply_len(sv.served), sv.served ^ REPLY_SEED)) {
				zt_fail_sys(&z, "write", "server: reply");
				break;
			}
			sv.served++;
		}
	}
	if (!zt_requested(&z))
		zt_fail(&z, "server: the client stopped before the verify request");
	if (sv.served < EXTRA)
		zt_fail(&z, "server: only %llu messages served", (unsigned long long)sv.served);
	/* The verify signal may still be on its way (the client stops on DIR/go): it must not cut the checks' own
	 * connect and reads short. Blocked, it stays pending until exit. */
	sigset_t verify;
	sigemptyset(&verify);
	sigaddset(&verify, SIGUSR2);
	sigprocmask(SIG_BLOCK, &verify, NULL);
	check_listener(&z, &sv, port);
	close(sv.conn);
	zt_collect_part(&z, "client", client);
	return zt_finish(&z);
}
