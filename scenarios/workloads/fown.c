/*
 * fown: file descriptions with a SIGIO owner (zdtm file_fown). A pipe owned by this process (F_SETOWN, set
 * while euid is 1, so the owner's recorded credentials are uid 0 / euid 1) with F_SETSIG SIGIO and O_ASYNC; a
 * socketpair end owned by the process group (F_SETOWN_EX F_OWNER_PGRP) signalling SIGRTMIN+1; a pipe with no
 * owner at all, whose write end is non-blocking while a second open file description of that end (an open of
 * /proc/self/fd/N, zdtm pipe01) is not.
 * Verify: F_GETOWN_EX, F_GETSIG and F_GETOWNER_UIDS as they were, and the signals still arrive: a write into
 * the pipe raises SIGIO, data on the socket raises SIGRTMIN+1, in this process. Each description of the
 * unowned pipe's write end keeps its own flags.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

static volatile sig_atomic_t n_sigio, n_rt;

static void on_sigio(int sig)
{
	(void)sig;
	n_sigio++;
}

static void on_rt(int sig)
{
	(void)sig;
	n_rt++;
}

struct owned {
	const char *name;
	int fd, sig, type, pid;
	uint32_t uid, euid;
};

static void check_owner(struct zt *z, const struct owned *o)
{
	struct f_owner_ex ex = { 0, 0 };
	uint32_t uids[2] = { 0, 0 };
	if (fcntl(o->fd, F_GETOWN_EX, &ex) < 0) {
		zt_fail_sys(z, "fcntl(F_GETOWN_EX)", o->name);
		return;
	}
	if ((int)ex.type != o->type || ex.pid != o->pid)
		zt_fail(z, "%s (fd %d) owner is type %d pid %d, expected type %d pid %d", o->name, o->fd, (int)ex.type, ex.pid,
			o->type, o->pid);
	int sig = fcntl(o->fd, F_GETSIG);
	if (sig != o->sig)
		zt_fail(z, "%s (fd %d) SIGIO signal is %d, expected %d", o->name, o->fd, sig, o->sig);
	if (o->pid && fcntl(o->fd, F_GETOWNER_UIDS, uids) == 0 && (uids[0] != o->uid || uids[1] != o->euid))
		zt_fail(z, "%s (fd %d) owner credentials are uid %u euid %u, expected %u %u", o->name, o->fd, uids[0],
			uids[1], o->uid, o->euid);
}

/* Waits (bounded) until *count moves past before. */
static int wait_count(volatile sig_atomic_t *count, int before)
{
	for (int i = 0; i < 2000 && *count == before; i++)
		zt_sleep_ns(1000000);
	return *count != before;
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	int p[2], q[2], sk[2];
	if (pipe(p) < 0 || pipe(q) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sk) < 0)
		zt_setup_failed(&z, "pipe/socketpair", "owned files");
	struct sigaction sa = { .sa_handler = on_sigio };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGIO, &sa, NULL) < 0)
		zt_setup_failed(&z, "sigaction", "SIGIO");
	sa.sa_handler = on_rt;
	if (sigaction(SIGRTMIN + 1, &sa, NULL) < 0)
		zt_setup_failed(&z, "sigaction", "SIGRTMIN+1");

	/* The owner's credentials are taken at F_SETOWN time: set it with euid 1 (saved uid stays 0). */
	if (setresuid(-1, 1, -1) < 0)
		zt_setup_failed(&z, "setresuid", "euid 1");
	if (fcntl(p[0], F_SETOWN, getpid()) < 0)
		zt_setup_failed(&z, "fcntl(F_SETOWN)", "pipe");
	if (setresuid(-1, 0, -1) < 0)
		zt_setup_failed(&z, "setresuid", "euid 0");
	if (fcntl(p[0], F_SETSIG, SIGIO) < 0 || fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_ASYNC) < 0)
		zt_setup_failed(&z, "fcntl(F_SETSIG/O_ASYNC)", "pipe");
	struct f_owner_ex grp = { F_OWNER_PGRP, getpgrp() };
	if (fcntl(sk[0], F_SETOWN_EX, &grp) < 0 || fcntl(sk[0], F_SETSIG, SIGRTMIN + 1) < 0 ||
	    fcntl(sk[0], F_SETFL, fcntl(sk[0], F_GETFL) | O_ASYNC) < 0)
		zt_setup_failed(&z, "fcntl(F_SETOWN_EX/F_SETSIG/O_ASYNC)", "socket");

	char self_fd[64];
	snprintf(self_fd, sizeof(self_fd), "/proc/self/fd/%d", q[1]);
	int q2 = open(self_fd, O_WRONLY | O_CLOEXEC);
	if (q2 < 0 || fcntl(q[1], F_SETFL, O_NONBLOCK) < 0)
		zt_setup_failed(&z, "open/fcntl", "second description of a pipe's write end");
	struct owned o[3] = {
		{ "pipe owned by the process", p[0], SIGIO, F_OWNER_PID, getpid(), 0, 1 },
		{ "socket owned by the group", sk[0], SIGRTMIN + 1, F_OWNER_PGRP, getpgrp(), 0, 0 },
		{ "pipe without owner", q[0], 0, F_OWNER_TID, 0, 0, 0 },	/* what the kernel reports for none */
	};
	zt_info(&z, "pipe-fd", "%d", p[0]);
	zt_info(&z, "socket-fd", "%d", sk[0]);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	for (int i = 0; i < 3; i++)
		check_owner(&z, &o[i]);
	if (!(fcntl(q[1], F_GETFL) & O_NONBLOCK) || (fcntl(q2, F_GETFL) & O_NONBLOCK))
		zt_fail(&z, "pipe write end descriptions: flags 0%o and 0%o, expected O_NONBLOCK on the first only",
			fcntl(q[1], F_GETFL), fcntl(q2, F_GETFL));
	int before = n_sigio;
	if (write(p[1], "x", 1) != 1)
		zt_fail_sys(&z, "write", "owned pipe");
	else if (!wait_count(&n_sigio, before))
		zt_fail(&z, "no SIGIO after a write into the owned pipe");
	before = n_rt;
	if (write(sk[1], "y", 1) != 1)
		zt_fail_sys(&z, "write", "owned socket's peer");
	else if (!wait_count(&n_rt, before))
		zt_fail(&z, "no SIGRTMIN+1 after data reached the socket owned by the group");
	return zt_finish(&z);
}
