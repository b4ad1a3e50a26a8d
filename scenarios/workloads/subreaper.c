/*
 * subreaper CMD [ARGS...]: runs CMD as a child subreaper would, so that orphans in CMD's tree (restored process
 * trees among them) are reparented to us and reaped at once instead of waiting for PID 1, which reaps late on
 * these machines. Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to CMD, and exits with CMD's status once CMD exits
 * (128 + N when a signal N ended it, as shells do). Orphans still running at that point pass on to our parent's
 * reaper.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct reaper {
	pid_t cmd;
	int status;	/* exit status to give, valid once done */
	int done;
};

/* Reaps every child that has exited; notes CMD's status. */
static void reap(struct reaper *r)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid <= 0)
			return;	/* 0: others still running; -1 ECHILD: none left */
		if (pid == r->cmd) {
			r->done = 1;
			r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help")) {
		fprintf(stderr, "usage: subreaper CMD [ARGS...]\n"
				"  runs CMD as a child subreaper: orphans in its tree are reaped here; exits with CMD's status\n");
		return argc < 2 ? 2 : 0;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
		fprintf(stderr, "subreaper: prctl(PR_SET_CHILD_SUBREAPER): %s\n", strerror(errno));
		return 1;
	}
	/* Blocked before the fork: a signal that arrives before we wait for it stays pending, not lost. */
	sigset_t set, old;
	sigemptyset(&set);
	int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&set, forwarded[i]);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);

	struct reaper r = { .cmd = fork() };
	if (r.cmd < 0) {
		fprintf(stderr, "subreaper: fork: %s\n", strerror(errno));
		return 1;
	}
	if (r.cmd == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		execvp(argv[1], argv + 1);
		fprintf(stderr, "subreaper: cannot run %s: %s\n", argv[1], strerror(errno));
		_exit(127);
	}
	while (!r.done) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);
		if (sig < 0)
			continue;	/* EINTR */
		if (sig == SIGCHLD)
			reap(&r);
		else
			kill(r.cmd, sig);
	}
	reap(&r);	/* orphans that exited meanwhile */
	return r.status;
}
