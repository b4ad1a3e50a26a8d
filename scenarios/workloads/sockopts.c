/*
 * sockopts: per-socket and per-task settings beyond the usual ones (zdtm sock_opts00, groups).
 * - a TCP socket never bound, with SO_PRIORITY, SO_RCVLOWAT, SO_MARK, SO_DONTROUTE, SO_NO_CHECK, SO_OOBINLINE;
 * - a unix stream socket never connected (nothing to peek in it), with SO_PASSCRED and SO_PASSSEC;
 * - a unix datagram socket with SO_PRIORITY and SO_RCVLOWAT;
 * - supplementary groups of a root process, and its audit login uid (zdtm loginuid; left alone where the kernel
 *   does not let it be set: no audit, or an immutable one).
 * Verify: every option, the groups and the login uid read back as set.
 */
#include "zdtm.h"

#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
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

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
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
	return zt_finish(&z);
}
