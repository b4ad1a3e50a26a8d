/*
 * unix-pending: a listening unix socket bound to a file with its own mode and owner (0640, 4242:4343), one
 * connection accepted and two still waiting in its queue (zdtm sockets00), the second waiting one from a client
 * bound to a name of its own.
 * Verify: the socket file's mode and owner; the accepted pair still talks; accept() now returns the two waiting
 * connections, in the order they connected, each talking to its own client; then the queue is empty.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t addr_of(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1);
}

/* Sends `msg` on `from`, expects it on `to` within a second. */
static void talk(struct zt *z, const char *what, int from, int to, const char *msg)
{
	char buf[64] = "";
	struct pollfd p = { to, POLLIN, 0 };
	if (write(from, msg, strlen(msg)) != (ssize_t)strlen(msg)) {
		zt_fail_sys(z, "write", what);
		return;
	}
	if (poll(&p, 1, 1000) != 1) {
		zt_fail(z, "%s: nothing arrived", what);
		return;
	}
	ssize_t n = read(to, buf, sizeof(buf) - 1);
	if (n != (ssize_t)strlen(msg) || memcmp(buf, msg, strlen(msg)))
		zt_fail(z, "%s: got '%.*s', expected '%s'", what, n < 0 ? 0 : (int)n, buf, msg);
}

/* accept() without blocking forever: the connection must already be waiting. */
static int accept_waiting(struct zt *z, int l, const char *what)
{
	struct pollfd p = { l, POLLIN, 0 };
	if (poll(&p, 1, 1000) != 1) {
		zt_fail(z, "%s: no connection waits on the listener", what);
		return -1;
	}
	int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		zt_fail_sys(z, "accept4", what);
	return c;
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	char path[PATH_MAX], cpath[PATH_MAX];
	zt_path(&z, path, sizeof(path), "listener.sock");
	zt_path(&z, cpath, sizeof(cpath), "client2.sock");
	struct sockaddr_un a, ca;
	socklen_t alen = addr_of(&a, path), calen = addr_of(&ca, cpath);

	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, alen) < 0 || listen(l, 8) < 0)
		zt_setup_failed(&z, "socket/bind/listen", path);
	if (chmod(path, 0640) < 0 || chown(path, 4242, 4343) < 0)
		zt_setup_failed(&z, "chmod/chown", path);
	int c0 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c0 < 0 || connect(c0, (struct sockaddr *)&a, alen) < 0)
		zt_setup_failed(&z, "connect", "accepted client");
	int s0 = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s0 < 0)
		zt_setup_failed(&z, "accept4", "first connection");
	int c1 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c1 < 0 || connect(c1, (struct sockaddr *)&a, alen) < 0)
		zt_setup_failed(&z, "connect", "first waiting client");
	int c2 = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c2 < 0 || bind(c2, (struct sockaddr *)&ca, calen) < 0 || connect(c2, (struct sockaddr *)&a, alen) < 0)
		zt_setup_failed(&z, "bind/connect", "second waiting client");
	struct stat want;
	if (stat(path, &want) < 0)
		zt_setup_failed(&z, "stat", path);
	zt_info(&z, "listener-fd", "%d", l);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	struct stat st;
	if (stat(path, &st) < 0)
		zt_fail_sys(&z, "stat", path);
	else if (st.st_mode != want.st_mode || st.st_uid != want.st_uid || st.st_gid != want.st_gid)
		zt_fail(&z, "%s is mode 0%o owner %u:%u, expected 0%o %u:%u", path, st.st_mode, st.st_uid, st.st_gid,
			want.st_mode, want.st_uid, want.st_gid);
	talk(&z, "accepted pair", c0, s0, "zero");
	int s1 = accept_waiting(&z, l, "first waiting connection");
	int s2 = accept_waiting(&z, l, "second waiting connection");
	if (s1 >= 0) {
		talk(&z, "first waiting client to its connection", c1, s1, "one");
		talk(&z, "first waiting connection to its client", s1, c1, "uno");
	}
	if (s2 >= 0) {
		talk(&z, "second waiting client to its connection", c2, s2, "two");
		struct sockaddr_un peer;
		socklen_t plen = sizeof(peer);
		if (getpeername(s2, (struct sockaddr *)&peer, &plen) < 0 || strcmp(peer.sun_path, cpath))
			zt_fail(&z, "second waiting connection's peer is '%s', expected %s", plen > 2 ? peer.sun_path : "", cpath);
	}
	struct pollfd p = { l, POLLIN, 0 };
	if (poll(&p, 1, 0) != 0)
		zt_fail(&z, "the listener has more waiting connections than the two it had");
	return zt_finish(&z);
}
