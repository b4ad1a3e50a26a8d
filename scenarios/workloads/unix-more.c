/*
 * unix-more: unix socket state found lost by CRIU's zdtm tests sk-unix-rel, socket_close_data(01),
 * socket_snd_addr and sock_peercred; one case per run (--case N):
 *   1 relative names: the process works in DIR; a listener bound to the relative name "rel-listen.sock" with an
 *     accepted connection, a datagram socket bound to "rel-dgram.sock" holding a datagram from a sender closed
 *     since. Verify: the datagram reads back, the listener's name is still the relative one, a new connection
 *     to the relative name is accepted and carries data, the old connection still carries data.
 *   2 a datagram socketpair end whose other end was closed with a datagram still queued for it (unnamed, no
 *     peer left). Verify: the datagram reads back, then the queue is empty and sending fails as it did.
 *   3 sender addresses: a bound datagram server holding datagrams from an abstract-named sender closed since,
 *     a path-named sender closed (and its file removed) since, an unnamed one, and an abstract-named sender
 *     still open and connected to it. Verify: recvfrom gives each datagram with its sender's address, in
 *     order, and the open sender still reaches the server. Also a datagram socketpair whose one end was bound to
 *     a name after, holding a datagram from the other (unnamed) end: connected, it takes datagrams from that
 *     end alone. Verify: the datagram reads back without an address, and the pair still carries data.
 *   4 peer credentials: a child that changed its uid/gid made a datagram socketpair and exited, the parent
 *     holds one end (both clone()d with CLONE_FILES, so no fd passing is needed). Verify: SO_PEERCRED of it is
 *     the child's pid, uid and gid.
 */
#include "zdtm.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* NAME as an address: abstract (a leading NUL, no terminator) or a path (NUL-terminated). 0: too long. */
static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
	size_t len = strlen(name), at = abstract ? 1 : 0;
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (at + len + 1 > sizeof(a->sun_path))
		return 0;
	memcpy(a->sun_path + at, name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + at + len + (abstract ? 0 : 1));
}

static void expect_recv(struct zt *z, const char *what, int fd, const char *msg)
{
	char buf[64] = "";
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (n < 0)
		zt_fail_sys(z, "recv", what);
	else if (n != (ssize_t)strlen(msg) || memcmp(buf, msg, strlen(msg)))
		zt_fail(z, "%s: got '%.*s', expected '%s'", what, (int)n, buf, msg);
}

/* ---- case 1: relative names ---- */
struct rel {
	int listener, client, accepted, dgram;
};

static void setup_relative(struct zt *z, struct rel *r)
{
	struct sockaddr_un la, da;
	socklen_t llen = addr_of(&la, "rel-listen.sock", 0), dlen = addr_of(&da, "rel-dgram.sock", 0);
	if (chdir(z->dir) < 0)
		zt_setup_failed(z, "chdir", z->dir);
	r->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r->client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r->dgram = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int sender = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (r->listener < 0 || r->client < 0 || r->dgram < 0 || sender < 0)
		zt_setup_failed(z, "socket", "relative-name sockets");
	if (bind(r->listener, (struct sockaddr *)&la, llen) || listen(r->listener, 4) ||
	    connect(r->client, (struct sockaddr *)&la, llen))
		zt_setup_failed(z, "bind/listen/connect", "rel-listen.sock");
	r->accepted = accept4(r->listener, NULL, NULL, SOCK_CLOEXEC);
	if (r->accepted < 0)
		zt_setup_failed(z, "accept4", "rel-listen.sock");
	if (bind(r->dgram, (struct sockaddr *)&da, dlen) ||
	    sendto(sender, "queued", 6, 0, (struct sockaddr *)&da, dlen) != 6 || close(sender))
		zt_setup_failed(z, "bind/sendto", "rel-dgram.sock");
}

static void verify_relative(struct zt *z, const struct rel *r)
{
	struct sockaddr_un la, got;
	socklen_t llen = addr_of(&la, "rel-listen.sock", 0), glen = sizeof(got);
	expect_recv(z, "rel-dgram.sock, queued datagram", r->dgram, "queued");
	if (getsockname(r->listener, (struct sockaddr *)&got, &glen) < 0)
		zt_fail_sys(z, "getsockname", "rel-listen.sock");
	else if (strcmp(got.sun_path, "rel-listen.sock"))
		zt_fail(z, "the listener is bound to '%s' now, expected 'rel-listen.sock'", got.sun_path);
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&la, llen) < 0) {
		zt_fail_sys(z, "connect", "a new connection to rel-listen.sock");
	} else {
		int a = accept4(r->listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (a < 0)
			zt_fail_sys(z, "accept4", "rel-listen.sock");
		else if (write(c, "new", 3) != 3)
			zt_fail_sys(z, "write", "new connection");
		else
			expect_recv(z, "new connection", a, "new");
	}
	if (write(r->client, "old", 3) != 3)
		zt_fail_sys(z, "write", "old connection");
	else
		expect_recv(z, "old connection", r->accepted, "old");
}

/* ---- case 2: a datagram socketpair end whose other end is closed ---- */
static int setup_gone_peer(struct zt *z)
{
	int sks[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sks) < 0 || write(sks[1], "hello", 5) != 5 ||
	    close(sks[1]) < 0)
		zt_setup_failed(z, "socketpair/write/close", "datagram pair");
	return sks[0];
}

static void verify_gone_peer(struct zt *z, int s)
{
	char c;
	expect_recv(z, "datagram from the closed end", s, "hello");
	if (recv(s, &c, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN)
		zt_fail(z, "a second datagram, or an error other than EAGAIN, after the queued one");
	if (send(s, "x", 1, MSG_DONTWAIT) != -1 || errno != ECONNREFUSED)
		zt_fail(z, "sending to the closed end did not fail with ECONNREFUSED (errno %d)", errno);
}

/* ---- case 3: sender addresses ---- */
#define NSENDERS 4
struct senders {
	int server, open_sender;
	int pair[2]; /* pair[0] bound to a name, holding a datagram from pair[1] */
	struct sockaddr_un addr[NSENDERS]; /* sun_family 0: unnamed */
	socklen_t len[NSENDERS];
};

static void setup_senders(struct zt *z, struct senders *s)
{
	char name[80], path[PATH_MAX];
	struct sockaddr_un sa;
	snprintf(name, sizeof(name), "godwit-unix-more-%d-srv", (int)getpid());
	socklen_t slen = addr_of(&sa, name, 1);
	s->server = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->server < 0 || bind(s->server, (struct sockaddr *)&sa, slen))
		zt_setup_failed(z, "socket/bind", "server");
	zt_path(z, path, sizeof(path), "c2.sock");
	for (int i = 0; i < NSENDERS; i++) {
		memset(&s->addr[i], 0, sizeof(s->addr[i]));
		s->len[i] = 0;
		if (i == 0 || i == 3) {
			snprintf(name, sizeof(name), "godwit-unix-more-%d-c%d", (int)getpid(), i + 1);
			s->len[i] = addr_of(&s->addr[i], name, 1);
		} else if (i == 1) {
			s->len[i] = addr_of(&s->addr[i], path, 0);
			if (!s->len[i])
				zt_setup_failed(z, "addr_of", "state dir path longer than sun_path");
		}
		int c = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		char msg[8];
		snprintf(msg, sizeof(msg), "msg%d", i + 1);
		if (c < 0 || (s->len[i] && bind(c, (struct sockaddr *)&s->addr[i], s->len[i])) ||
		    connect(c, (struct sockaddr *)&sa, slen) || send(c, msg, strlen(msg), 0) != (ssize_t)strlen(msg))
			zt_setup_failed(z, "socket/bind/connect/send", msg);
		if (i == 3) {
			s->open_sender = c;
		} else {
			close(c);
			if (i == 1)
				unlink(path); /* the sender's file goes with it, as a tidy program does */
		}
	}
	snprintf(name, sizeof(name), "godwit-unix-more-%d-pair", (int)getpid());
	slen = addr_of(&sa, name, 1);
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s->pair) ||
	    bind(s->pair[0], (struct sockaddr *)&sa, slen) || send(s->pair[1], "pair", 4, 0) != 4)
		zt_setup_failed(z, "socketpair/bind/send", "named end of a datagram pair");
}

static void verify_senders(struct zt *z, const struct senders *s)
{
	for (int i = 0; i < NSENDERS; i++) {
		char buf[16] = "", msg[8];
		struct sockaddr_un from;
		socklen_t flen = sizeof(from);
		memset(&from, 0, sizeof(from));
		snprintf(msg, sizeof(msg), "msg%d", i + 1);
		ssize_t n = recvfrom(s->server, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
		if (n < 0) {
			zt_fail_sys(z, "recvfrom", msg);
			return;
		}
		if (n != (ssize_t)strlen(msg) || memcmp(buf, msg, strlen(msg)))
			zt_fail(z, "datagram %d: got '%.*s', expected '%s'", i + 1, (int)n, buf, msg);
		socklen_t want = s->len[i]; /* unnamed: no address at all */
		/* a path name may come back with or without its terminating NUL */
		int same = s->len[i] == 0 ? flen == want
					  : (flen == want || (s->addr[i].sun_path[0] && flen == want - 1)) &&
						    !memcmp(from.sun_path, s->addr[i].sun_path, flen - offsetof(struct sockaddr_un, sun_path));
		if (!same)
			zt_fail(z, "datagram %d: sender address of %u bytes ('%s%s'), expected %u bytes", i + 1, (unsigned)flen,
				from.sun_path[0] ? "" : "@", from.sun_path[0] ? from.sun_path : from.sun_path + 1, (unsigned)want);
	}
	struct stat st;
	if (lstat(s->addr[1].sun_path, &st) == 0)
		zt_fail(z, "the closed sender's socket file %s is there again", s->addr[1].sun_path);
	if (send(s->open_sender, "again", 5, 0) != 5)
		zt_fail_sys(z, "send", "the sender still open");
	else
		expect_recv(z, "the sender still open", s->server, "again");
	char buf[8] = "";
	struct sockaddr_un from;
	socklen_t flen = sizeof(from);
	ssize_t n = recvfrom(s->pair[0], buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
	if (n != 4 || memcmp(buf, "pair", 4) || flen != 0)
		zt_fail(z, "named end of the pair: got %zd bytes '%s' from an address of %u bytes, expected 'pair' from none",
			n, n > 0 ? buf : "", (unsigned)flen);
	if (send(s->pair[1], "more", 4, 0) != 4)
		zt_fail_sys(z, "send", "the unnamed end of the pair");
	else
		expect_recv(z, "the pair", s->pair[0], "more");
}

/* ---- case 4: peer credentials ---- */
static int peercred_fd = -1;
static int peercred_child(void *arg)
{
	(void)arg;
	int sks[2];
	if (setgid(getgid() + 1) || setuid(getuid() + 1))
		return 10;
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sks) < 0)
		return 11;
	peercred_fd = sks[0]; /* the fd table is shared: the parent keeps it once this child has exited */
	return 0;
}

static pid_t setup_peercred(struct zt *z)
{
	static char stack[64 * 1024] __attribute__((aligned(16)));
	pid_t pid = clone(peercred_child, stack + sizeof(stack), CLONE_FILES | CLONE_VM | SIGCHLD, NULL);
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) || peercred_fd < 0)
		zt_setup_failed(z, "clone/setuid/socketpair", "peer credentials child");
	return pid;
}

static void verify_peercred(struct zt *z, int fd, pid_t child)
{
	struct ucred u;
	socklen_t len = sizeof(u);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &u, &len) < 0)
		zt_fail_sys(z, "getsockopt(SO_PEERCRED)", "socketpair end");
	else if (u.pid != child || u.uid != getuid() + 1 || u.gid != getgid() + 1)
		zt_fail(z, "SO_PEERCRED is pid %d uid %u gid %u, expected %d %u %u", (int)u.pid, (unsigned)u.uid,
			(unsigned)u.gid, (int)child, (unsigned)getuid() + 1, (unsigned)getgid() + 1);
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "case", 1, 1, 4, "1 relative names, 2 closed datagram peer, 3 sender addresses, 4 peer credentials" } };
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	struct rel r = { -1, -1, -1, -1 };
	struct senders s = { 0 };
	int gone = -1;
	pid_t child = 0;
	switch (opts[0].value) {
	case 1: setup_relative(&z, &r); break;
	case 2: gone = setup_gone_peer(&z); break;
	case 3: setup_senders(&z, &s); break;
	case 4: child = setup_peercred(&z); zt_info(&z, "child", "%d", (int)child); break;
	}
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);
	switch (opts[0].value) {
	case 1: verify_relative(&z, &r); break;
	case 2: verify_gone_peer(&z, gone); break;
	case 3: verify_senders(&z, &s); break;
	case 4: verify_peercred(&z, peercred_fd, child); break;
	}
	return zt_finish(&z);
}
