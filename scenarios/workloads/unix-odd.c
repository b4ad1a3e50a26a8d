/*
 * unix-odd: unix sockets in states the common workloads do not reach (zdtm sockets_dgram, sk-unix-unconn):
 *   - S: a datagram socket bound to a path and connected to its own name, with a datagram it sent itself queued;
 *   - U: a stream socket bound to an abstract name, neither listening nor connected;
 *   - V: a stream socket never bound nor connected.
 * Verify: S reads its queued datagram, then what it sends now comes back to it; U can listen() and V connect()
 * to it (the name is still U's), and data goes through.
 */
#include "zdtm.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The address of `path` (abstract: in the abstract namespace); 0 if it does not fit. */
static socklen_t addr_of(struct sockaddr_un *a, const char *path, int abstract)
{
	size_t len = strlen(path), at = abstract ? 1 : 0;
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (at + len + 1 > sizeof(a->sun_path))
		return 0;
	memcpy(a->sun_path + at, path, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + at + len + (abstract ? 0 : 1));
}

static void expect_read(struct zt *z, const char *what, int fd, const char *msg)
{
	char buf[64] = "";
	struct pollfd p = { fd, POLLIN, 0 };
	if (poll(&p, 1, 1000) != 1) {
		zt_fail(z, "%s: nothing to read", what);
		return;
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n != (ssize_t)strlen(msg) || memcmp(buf, msg, strlen(msg)))
		zt_fail(z, "%s: got '%.*s', expected '%s'", what, n < 0 ? 0 : (int)n, buf, msg);
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	char spath[PATH_MAX], uname[64];
	zt_path(&z, spath, sizeof(spath), "self.sock");
	snprintf(uname, sizeof(uname), "godwit-unix-odd-%d", getpid());
	struct sockaddr_un sa, ua;
	socklen_t salen = addr_of(&sa, spath, 0), ualen = addr_of(&ua, uname, 1);
	if (!salen || !ualen)
		zt_setup_failed(&z, "addr_of", "socket path longer than sun_path");

	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&sa, salen) < 0 || connect(s, (struct sockaddr *)&sa, salen) < 0)
		zt_setup_failed(&z, "socket/bind/connect", "self-connected datagram socket");
	if (write(s, "queued", 6) != 6)
		zt_setup_failed(&z, "write", "self-connected datagram socket");
	int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (u < 0 || bind(u, (struct sockaddr *)&ua, ualen) < 0)
		zt_setup_failed(&z, "socket/bind", "unconnected stream socket");
	int v = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (v < 0)
		zt_setup_failed(&z, "socket", "fresh stream socket");
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	expect_read(&z, "self-connected socket, queued datagram", s, "queued");
	if (write(s, "again", 5) != 5)
		zt_fail_sys(&z, "write", "self-connected socket");
	else
		expect_read(&z, "self-connected socket, new datagram", s, "again");
	if (listen(u, 1) < 0)
		zt_fail_sys(&z, "listen", "unconnected stream socket");
	else if (connect(v, (struct sockaddr *)&ua, ualen) < 0)
		zt_fail_sys(&z, "connect", "fresh socket to the unconnected one's name");
	else {
		int a = accept4(u, NULL, NULL, SOCK_CLOEXEC);
		if (a < 0)
			zt_fail_sys(&z, "accept4", "unconnected stream socket");
		else if (write(v, "hello", 5) != 5)
			zt_fail_sys(&z, "write", "fresh socket");
		else
			expect_read(&z, "accepted connection", a, "hello");
	}
	return zt_finish(&z);
}
