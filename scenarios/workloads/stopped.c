/*
 * stopped: a child C in a job-control stop (zdtm stopped): C blocks in read() on a pipe, main stops it with
 * SIGSTOP, then writes a byte into the pipe (C would consume it the moment it ran).
 * Verify: C is still stopped: its stop is reported to main by waitpid(WUNTRACED) and it has neither exited nor
 * continued; after SIGCONT it reads the byte (still unread: it never ran) and exits 0. (No /proc: inside a new
 * pid namespace the host's /proc names other processes.)
 */
#include "zdtm.h"

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	int p[2];
	if (pipe(p) < 0)
		zt_setup_failed(&z, "pipe", "C's pipe");
	pid_t c = fork();
	if (c < 0)
		zt_setup_failed(&z, "fork", "C");
	if (c == 0) {
		char b;
		close(p[1]);
		_exit(read(p[0], &b, 1) == 1 && b == 'x' ? 0 : 1);
	}
	close(p[0]);
	siginfo_t si;
	if (kill(c, SIGSTOP) < 0 || waitid(P_PID, c, &si, WSTOPPED | WNOWAIT) < 0)
		zt_setup_failed(&z, "kill/waitid", "stop C");
	if (write(p[1], "x", 1) != 1)
		zt_setup_failed(&z, "write", "C's pipe");
	pid_t pids[] = { getpid(), c };
	zt_ready(&z, pids, 2);
	zt_wait_sleeping(&z);

	int st = 0;
	pid_t w = waitpid(c, &st, WUNTRACED);
	if (w != c || !WIFSTOPPED(st))
		zt_fail(&z, "C: waitpid(WUNTRACED) gave %d status 0x%x, expected a stop by SIGSTOP", w, st);
	/* Still stopped now, not only once: a second look must not see it continued or gone. */
	siginfo_t now = { 0 };
	if (waitid(P_PID, c, &now, WEXITED | WCONTINUED | WNOHANG | WNOWAIT) < 0 || now.si_pid != 0)
		zt_fail(&z, "C: not stopped any more (waitid reports code %d)", now.si_code);
	if (kill(c, SIGCONT) < 0)
		zt_fail_sys(&z, "kill(SIGCONT)", "C");
	w = waitpid(c, &st, 0);
	if (w != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		zt_fail(&z, "C: after SIGCONT it ended with status 0x%x (waitpid %d), expected exit 0 after reading the byte", st,
			w);
	return zt_finish(&z);
}
