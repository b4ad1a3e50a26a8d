/*
 * sessions: processes whose session is not their parent's (zdtm session00's CHANGESID cases). Main leads its
 * session; A forks A1 and then calls setsid(), so A1 stays in main's session under a parent of another session
 * (A1 also joins main's process group); B forks B1 and calls setsid(); B1 forks B2 and calls setsid() in turn, so
 * B2, two levels below main, is still in main's session. C just has a process group of its own.
 * Verify: getsid() and getpgid() of every process as they were at setup.
 * --orphan 1: also an orphan O in main's session and process group, outside the tree (its parent exited): a
 * restore in the host PID namespace cannot have main's PID while O holds it as its session id. Its pid is the
 * ready file's "orphan"; the test ends it (else it exits by itself after a minute).
 * --dead-group 1: also D, which makes its own process group, forks Z and E into it with CLONE_PARENT (main is their
 * parent) and exits (main reaps it): Z exits at once and stays main's zombie (zdtm zombie01), E lives on; both in
 * a group whose leader is gone. Verify also checks their groups (Z's through getpgid on the zombie).
 * --dead-session 1: also L, which calls setsid(), forks M with CLONE_PARENT (main is its parent) and exits: M is
 * in a session whose leader is gone, which main cannot hand down to a child (zdtm session02). Restore would need
 * a helper task for L, so dump refuses the tree before freezing it. Verify also checks M's session.
 */
#include "zdtm.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { A, A1, B, B1, B2, C, N };
static const char *names[N] = { "A", "A1", "B", "B1", "B2", "C" };

struct shared_pids {
	pid_t pid[N];
};

static void idle(void)
{
	for (;;)
		pause();
}

/* Child side: reports its pid on the pipe (index, pid) once its own setup is done. */
static void report(int w, int idx)
{
	int rec[2] = { idx, getpid() };
	if (write(w, rec, sizeof(rec)) != sizeof(rec))
		_exit(3);
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "orphan", 0, 0, 1, "leave an orphan in main's session, outside the tree" },
				 { "dead-group", 0, 0, 1, "a zombie and a live child in a process group whose leader exited" },
				 { "dead-session", 0, 0, 1, "a child in a session whose leader exited" } };
	zt_setup(&z, argc, argv, opts, 3, SIGUSR2);
	if (getsid(0) != getpid() && setsid() < 0)
		zt_setup_failed(&z, "setsid", "main");
	pid_t main_pid = getpid();
	int p[2];
	if (pipe(p) < 0)
		zt_setup_failed(&z, "pipe", "report pipe");

	pid_t a = fork();
	if (a < 0)
		zt_setup_failed(&z, "fork", "A");
	if (a == 0) {
		pid_t a1 = fork();
		if (a1 < 0)
			_exit(3);
		if (a1 == 0) {
			if (setpgid(0, main_pid) < 0)
				_exit(3);
			report(p[1], A1);
			idle();
		}
		if (setsid() < 0)
			_exit(3);
		report(p[1], A);
		idle();
	}
	pid_t b = fork();
	if (b < 0)
		zt_setup_failed(&z, "fork", "B");
	if (b == 0) {
		pid_t b1 = fork();
		if (b1 < 0)
			_exit(3);
		if (b1 == 0) {
			pid_t b2 = fork();
			if (b2 < 0)
				_exit(3);
			if (b2 == 0) {
				report(p[1], B2);
				idle();
			}
			if (setsid() < 0)
				_exit(3);
			report(p[1], B1);
			idle();
		}
		if (setsid() < 0)
			_exit(3);
		report(p[1], B);
		idle();
	}
	pid_t c = fork();
	if (c < 0)
		zt_setup_failed(&z, "fork", "C");
	if (c == 0) {
		if (setpgid(0, 0) < 0)
			_exit(3);
		report(p[1], C);
		idle();
	}
	pid_t orphan = 0;
	if (opts[0].value) {
		int op[2];
		if (pipe(op) < 0)
			zt_setup_failed(&z, "pipe", "orphan pipe");
		pid_t mid = fork();
		if (mid < 0)
			zt_setup_failed(&z, "fork", "orphan's parent");
		if (mid == 0) {
			pid_t o = fork();
			if (o == 0) {
				close(op[0]);
				pid_t me = getpid();
				if (write(op[1], &me, sizeof(me)) != sizeof(me))
					_exit(3);
				close(op[1]);
				zt_sleep_ns(60ull * 1000000000ull);
				_exit(0);
			}
			_exit(o < 0 ? 3 : 0);
		}
		close(op[1]);
		if (read(op[0], &orphan, sizeof(orphan)) != sizeof(orphan))
			zt_setup_failed(&z, "read", "the orphan's pid");
		close(op[0]);
		waitpid(mid, NULL, 0);
		zt_info(&z, "orphan", "%d", orphan);
	}
	pid_t dead_group = 0, zombie = 0, member = 0;
	if (opts[1].value) {
		int dp[2];
		if (pipe(dp) < 0)
			zt_setup_failed(&z, "pipe", "dead group pipe");
		dead_group = fork();
		if (dead_group < 0)
			zt_setup_failed(&z, "fork", "D");
		if (dead_group == 0) {
			if (setpgid(0, 0) < 0)
				_exit(3);
			pid_t kids[2];
			for (int k = 0; k < 2; k++) {
				kids[k] = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
				if (kids[k] < 0)
					_exit(3);
				if (kids[k] == 0) {
					if (k == 0)
						_exit(7); /* Z: main's zombie from now on */
					idle();
				}
			}
			_exit(write(dp[1], kids, sizeof(kids)) == sizeof(kids) ? 0 : 3);
		}
		close(dp[1]);
		pid_t kids[2];
		int st;
		if (read(dp[0], kids, sizeof(kids)) != sizeof(kids) || waitpid(dead_group, &st, 0) != dead_group ||
		    !WIFEXITED(st) || WEXITSTATUS(st))
			zt_setup_failed(&z, "read/waitpid", "D's children");
		close(dp[0]);
		zombie = kids[0], member = kids[1];
		siginfo_t si;
		/* Z has exited (a zombie now), without reaping it. */
		while (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) < 0)
			if (errno != EINTR)
				zt_setup_failed(&z, "waitid", "Z");
		zt_info(&z, "dead_group", "%d %d %d", dead_group, zombie, member);
	}
	pid_t dead_leader = 0, session_member = 0;
	if (opts[2].value) {
		int lp[2];
		if (pipe(lp) < 0)
			zt_setup_failed(&z, "pipe", "dead session pipe");
		dead_leader = fork();
		if (dead_leader < 0)
			zt_setup_failed(&z, "fork", "L");
		if (dead_leader == 0) {
			if (setsid() < 0)
				_exit(3);
			pid_t m = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
			if (m < 0)
				_exit(3);
			if (m == 0)
				idle();
			_exit(write(lp[1], &m, sizeof(m)) == sizeof(m) ? 0 : 3);
		}
		close(lp[1]);
		int st;
		if (read(lp[0], &session_member, sizeof(session_member)) != sizeof(session_member) ||
		    waitpid(dead_leader, &st, 0) != dead_leader || !WIFEXITED(st) || WEXITSTATUS(st))
			zt_setup_failed(&z, "read/waitpid", "L's child");
		close(lp[0]);
		if (getsid(session_member) != dead_leader)
			zt_setup_failed(&z, "getsid", "M is not in L's session");
		zt_info(&z, "dead_session", "%d %d", dead_leader, session_member);
	}
	close(p[1]);

	pid_t pids[N + 3] = { main_pid };
	for (int got = 0; got < N; got++) {
		int rec[2];
		if (read(p[0], rec, sizeof(rec)) != sizeof(rec) || rec[0] < 0 || rec[0] >= N)
			zt_setup_failed(&z, "read", "a child's report (a child failed its setup)");
		pids[1 + rec[0]] = rec[1];
	}
	close(p[0]);
	pid_t sid[N], pgid[N];
	for (int i = 0; i < N; i++) {
		sid[i] = getsid(pids[1 + i]);
		pgid[i] = getpgid(pids[1 + i]);
		zt_info(&z, names[i], "%d", pids[1 + i]);
	}
	/* The shape this workload is about, as the kernel made it. */
	if (sid[A1] != main_pid || pgid[A1] != main_pid || sid[A] != pids[1 + A] || sid[B2] != main_pid ||
	    sid[B1] != pids[1 + B1] || sid[B] != pids[1 + B] || pgid[C] != pids[1 + C] || sid[C] != main_pid)
		zt_setup_failed(&z, "getsid/getpgid", "sessions not as intended");
	if (member && (getpgid(zombie) != dead_group || getpgid(member) != dead_group))
		zt_setup_failed(&z, "getpgid", "D's group");
	int npids = N + 1;
	if (member)
		pids[npids++] = member;
	if (session_member)
		pids[npids++] = session_member;
	zt_ready(&z, pids, npids);
	zt_wait_sleeping(&z);

	if (getsid(0) != main_pid)
		zt_fail(&z, "main: session %d, expected %d", getsid(0), main_pid);
	for (int i = 0; i < N; i++) {
		pid_t s = getsid(pids[1 + i]), g = getpgid(pids[1 + i]);
		if (s != sid[i] || g != pgid[i])
			zt_fail(&z, "%s (pid %d): session %d group %d, expected session %d group %d", names[i], pids[1 + i], s,
				g, sid[i], pgid[i]);
	}
	if (member) {
		pid_t gz = getpgid(zombie), gm = getpgid(member);
		if (gz != dead_group || gm != dead_group)
			zt_fail(&z, "zombie %d in group %d, member %d in group %d, expected both in %d (its leader gone)",
				zombie, gz, member, gm, dead_group);
		siginfo_t si = { 0 };
		if (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) < 0 || si.si_code != CLD_EXITED || si.si_status != 7)
			zt_fail(&z, "zombie %d: not exited with status 7", zombie);
		kill(member, SIGKILL);
	}
	if (session_member) {
		if (getsid(session_member) != dead_leader)
			zt_fail(&z, "M (pid %d): session %d, expected %d (its leader gone)", session_member, getsid(session_member), dead_leader);
		kill(session_member, SIGKILL);
	}
	for (int i = 0; i < N; i++)
		kill(pids[1 + i], SIGKILL);
	while (waitpid(-1, NULL, 0) > 0)
		;
	return zt_finish(&z);
}
