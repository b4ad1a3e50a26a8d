/*
 * sockopts: per-socket and per-task settings beyond the usual ones (zdtm sock_opts00, groups).
 * - a TCP socket never bound, with SO_PRIORITY, SO_RCVLOWAT, SO_MARK, SO_DONTROUTE, SO_NO_CHECK, SO_OOBINLINE;
 * - a unix stream socket never connected (nothing to peek in it), with SO_PASSCRED and SO_PASSSEC;
 * - a unix datagram socket with SO_PRIORITY and SO_RCVLOWAT;
 * - supplementary groups of a root process, and its audit login uid (zdtm loginuid; left alone where the kernel
 *   does not let it be set: no audit, or an immutable one).
 * - with --reuseport 1 (zdtm socket-tcp-reuseport): two TCP listeners sharing a loopback port through
 *   SO_REUSEPORT, the first of which dropped SO_REUSEPORT once bound.
 * Verify: every option, the groups and the login uid read back as set; the listeners keep their port and
 *   SO_REUSEPORT values, and a connection to the port is accepted by one of them.
 */
#include "zdtm.h"

#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOGINUID 3

/* Writes our loginuid; -1 if the kernel will not have it. */
static int set_loginuid(unsigned uid)
{
	int fd = open("/proc/self/loginuid", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char text[16];
	int n = snprintf(text, sizeof(text), "%u", uid);
	int rc = write(fd, text, n) == n ? 0 : -1;
	close(fd);
	return rc;
}

static long read_loginuid(void)
{
	char text[16] = "";
	int fd = open("/proc/self/loginuid", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	return n > 0 ? strtol(text, NULL, 10) : -1;
}

struct opt {
	const char *name;
	int sk, opt, value;
};

static struct zt_opt opts[] = {
	{ "reuseport", 0, 0, 1, "1: two listeners sharing a port with SO_REUSEPORT, one dropped it after bind" },
};

/* A loopback TCP listener with SO_REUSEPORT on `port` (0: any; the port it got is returned there). */
static int reuseport_listener(struct zt *z, unsigned short *port)
{
	int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(*port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) || bind(l, (struct sockaddr *)&a, al) ||
	    listen(l, 4) || getsockname(l, (struct sockaddr *)&a, &al))
		zt_setup_failed(z, "socket/SO_REUSEPORT/bind/listen", "reuseport listener");
	*port = ntohs(a.sin_port);
	return l;
}

static unsigned short port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	return getsockname(fd, (struct sockaddr *)&a, &al) ? 0 : ntohs(a.sin_port);
}

static void check_reuseport(struct zt *z, int l1, int l2, unsigned short port)
{
	int v1 = -1, v2 = -1;
	socklen_t len = sizeof(int);
	getsockopt(l1, SOL_SOCKET, SO_REUSEPORT, &v1, &len);
	len = sizeof(int);
	getsockopt(l2, SOL_SOCKET, SO_REUSEPORT, &v2, &len);
	if (v1 != 0 || v2 != 1)
		zt_fail(z, "listeners' SO_REUSEPORT are %d and %d, expected 0 and 1", v1, v2);
	if (port_of(l1) != port || port_of(l2) != port)
		zt_fail(z, "listeners are on ports %u and %u, expected both on %u", port_of(l1), port_of(l2), port);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a))) {
		zt_fail_sys(z, "connect", "shared port");
		return;
	}
	struct pollfd p[2] = { { l1, POLLIN, 0 }, { l2, POLLIN, 0 } };
	int s = -1;
	if (poll(p, 2, 2000) > 0)
		s = accept(p[0].revents ? l1 : l2, NULL, NULL);
	if (s < 0)
		zt_fail(z, "no listener accepted the connection to the shared port");
	else
		close(s);
	close(c);
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int us = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ud = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (tcp < 0 || us < 0 || ud < 0)
		zt_setup_failed(&z, "socket", "sockets");
	struct opt o[] = {
		{ "tcp SO_PRIORITY", tcp, SO_PRIORITY, 4 },	{ "tcp SO_RCVLOWAT", tcp, SO_RCVLOWAT, 7 },
		{ "tcp SO_MARK", tcp, SO_MARK, 3 },		{ "tcp SO_DONTROUTE", tcp, SO_DONTROUTE, 1 },
		{ "tcp SO_NO_CHECK", tcp, SO_NO_CHECK, 1 },	{ "tcp SO_OOBINLINE", tcp, SO_OOBINLINE, 1 },
		{ "unix stream SO_PASSCRED", us, SO_PASSCRED, 1 }, { "unix stream SO_PASSSEC", us, SO_PASSSEC, 1 },
		{ "unix dgram SO_PRIORITY", ud, SO_PRIORITY, 5 }, { "unix dgram SO_RCVLOWAT", ud, SO_RCVLOWAT, 9 },
	};
	const size_t n = sizeof(o) / sizeof(o[0]);
	for (size_t i = 0; i < n; i++)
		if (setsockopt(o[i].sk, SOL_SOCKET, o[i].opt, &o[i].value, sizeof(int)) < 0)
			zt_setup_failed(&z, "setsockopt", o[i].name);
	gid_t groups[] = { 1234, 5678 };
	if (setgroups(2, groups) < 0)
		zt_setup_failed(&z, "setgroups", "supplementary groups");

	unsigned short port = 0;
	int l1 = -1, l2 = -1, zero = 0;
	if (opts[0].value) {
		l1 = reuseport_listener(&z, &port);
		l2 = reuseport_listener(&z, &port);
		if (setsockopt(l1, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof(zero)))
			zt_setup_failed(&z, "setsockopt(SO_REUSEPORT, 0)", "first listener");
	}

	int have_loginuid = set_loginuid(LOGINUID) == 0;
	zt_info(&z, "loginuid", "%s", have_loginuid ? "set" : "unsupported");

	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	for (size_t i = 0; i < n; i++) {
		int v = -1;
		socklen_t len = sizeof(v);
		if (getsockopt(o[i].sk, SOL_SOCKET, o[i].opt, &v, &len) < 0)
			zt_fail_sys(&z, "getsockopt", o[i].name);
		else if (v != o[i].value)
			zt_fail(&z, "%s is %d, expected %d", o[i].name, v, o[i].value);
	}
	gid_t now[8];
	int ng = getgroups(8, now);
	if (ng != 2 || now[0] != groups[0] || now[1] != groups[1])
		zt_fail(&z, "supplementary groups: %d of them (first %d), expected 1234 5678", ng, ng > 0 ? (int)now[0] : -1);
	if (have_loginuid && read_loginuid() != LOGINUID)
		zt_fail(&z, "loginuid is %ld, expected %d", read_loginuid(), LOGINUID);
	if (opts[0].value)
		check_reuseport(&z, l1, l2, port);
	return zt_finish(&z);
}
