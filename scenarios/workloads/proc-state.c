/*
 * proc-state: per-process and per-thread settings made with prctl() and friends (CRIU's zdtm prctl, pdeath_sig,
 * child_subreaper*, personality, rlimits00, umask00, thread names):
 *   - main: child subreaper, not dumpable, oom_score_adj 321, personality ADDR_NO_RANDOMIZE, RLIMIT_NOFILE
 *     200/300, umask 027, name "gw-proc-main"; a thread named "gw-proc-thr";
 *   - child C: parent-death signal SIGUSR1, name "gw-proc-child", nice -3;
 *   - main nice 1, its thread SCHED_BATCH (zdtm sched_policy00, sched_prio00);
 *   - main's working directory was removed (it reads "DIR/gone (deleted)");
 * Verify: each value read back; the subreaper flag also by behaviour (an orphan made now is re-parented to
 * main); C checks its own.
 * --affinity 1: main pinned to the host's last CPU, its thread to CPU 0 (zdtm cpu-affinity0); each checks its own
 *   mask (with one CPU both are CPU 0, which any restore gives: the check proves nothing there).
 * --ids 1: a child I switches to uids 1/2/3 and gids 5/6/7 with fsgid 8 and fsuid 3 (not the effective ids:
 *   zdtm pid00) and checks all eight after; it exits with the number of the first one that differs.
 * --membarrier 1: main registers for private expedited membarrier() (and the global and sync-core kinds the
 *   kernel has; zdtm membarrier): after, each registered command still works (unregistered ones fail with EPERM)
 *   and MEMBARRIER_CMD_GET_REGISTRATIONS, where the kernel has it, gives the same set.
 * --groups 1: main takes 900 supplementary groups (zdtm massive_groups: /proc/PID/status grows past 8 KiB, with
 *   SigIgn and SigCgt after the long "Groups:" line) and checks them all after.
 * --thp-off 1: main disables THP for its mm (prctl PR_SET_THP_DISABLE; zdtm thp_disable) and checks it still is.
 * --vfork 1: C instead vforks a child V that never execs (C stays blocked in vfork): godwit refuses that tree.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sched.h>
#include <linux/membarrier.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define OOM_ADJ 321

static int read_int(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoi(buf) : -1;
}

static void check_comm(struct zt *z, const char *who, const char *want)
{
	char name[32] = "";
	if (prctl(PR_GET_NAME, name) || strcmp(name, want))
		zt_fail(z, "%s: name '%s', expected '%s'", who, name, want);
}

static volatile int thread_go;
static char thread_name[32];
static int thread_policy = -1, thread_policy_after = -1;
static int pin_cpu = -1; /* the thread's CPU with --affinity, else -1 */
static int thread_cpus_ok = 1;

/* The calling thread runs on CPU `cpu` only. */
static int only_cpu(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	return sched_getaffinity(0, sizeof(s), &s) == 0 && CPU_COUNT(&s) == 1 && CPU_ISSET(cpu, &s);
}

static void *thread_fn(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "gw-proc-thr");
	struct sched_param sp = { 0 };
	if (sched_setscheduler(0, SCHED_BATCH, &sp) == 0)
		thread_policy = SCHED_BATCH;
	if (pin_cpu >= 0) {
		cpu_set_t s;
		CPU_ZERO(&s);
		CPU_SET(pin_cpu, &s);
		thread_cpus_ok = sched_setaffinity(0, sizeof(s), &s) == 0;
	}
	while (!thread_go)
		zt_sleep_ns(1000000);
	prctl(PR_GET_NAME, thread_name);
	thread_policy_after = sched_getscheduler(0);
	if (pin_cpu >= 0 && thread_cpus_ok)
		thread_cpus_ok = only_cpu(pin_cpu) ? 2 : 0;
	return NULL;
}

/* The calling thread's policy and nice are `policy` and `nice`. */
static void check_sched(struct zt *z, const char *who, int policy, int nice)
{
	int p = sched_getscheduler(0);
	errno = 0;
	int n = getpriority(PRIO_PROCESS, 0);
	if (p != policy || n != nice)
		zt_fail(z, "%s: scheduling policy %d nice %d, expected policy %d nice %d", who, p, n, policy, nice);
}

/* Child I (--ids): its exit status is 0, or which of its ids differs (1-8), or 9 if it could not set them. */
static pid_t ids_child(struct zt *z)
{
	pid_t pid = fork();
	if (pid < 0)
		zt_setup_failed(z, "fork", "ids child");
	if (pid)
		return pid;
	/* fsgid before the uid switch drops CAP_SETGID; fsuid 3 is the saved uid, allowed without it. */
	if (setresgid(5, 6, 7) || (setfsgid(8), setfsgid(-1)) != 8 || setresuid(1, 2, 3) || (setfsuid(3), setfsuid(-1)) != 3)
		_exit(9);
	while (!zt_signalled())
		zt_sleep_ns(1000000);
	uid_t r, e, s;
	gid_t rg, eg, sg;
	if (getresuid(&r, &e, &s) || getresgid(&rg, &eg, &sg))
		_exit(9);
	int fsu = setfsuid(-1), fsg = setfsgid(-1);
	_exit(r != 1 ? 1 : e != 2 ? 2 : s != 3 ? 3 : fsu != 3 ? 4 : rg != 5 ? 5 : eg != 6 ? 6 : sg != 7 ? 7 : fsg != 8 ? 8 : 0);
}

#define MEMBARRIER_GET_REGISTRATIONS (1 << 9) /* Linux 6.3; older headers lack it */

static int membarrier(int cmd)
{
	return (int)syscall(SYS_membarrier, cmd, 0, 0);
}

/* Register commands this kernel has, each paired with the command it allows. */
static const int barrier_kinds[][2] = {
	{ MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, MEMBARRIER_CMD_PRIVATE_EXPEDITED },
	{ MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, MEMBARRIER_CMD_GLOBAL_EXPEDITED },
	{ MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE },
};

/* Registers every kind the kernel offers; returns the registered set. */
static int register_barriers(struct zt *z)
{
	int have = membarrier(MEMBARRIER_CMD_QUERY), done = 0;
	if (have < 0 || !(have & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		zt_setup_failed(z, "membarrier", "query (no private expedited membarrier)");
	for (size_t i = 0; i < sizeof(barrier_kinds) / sizeof(barrier_kinds[0]); i++) {
		if (!(have & barrier_kinds[i][0]))
			continue;
		if (membarrier(barrier_kinds[i][0]))
			zt_setup_failed(z, "membarrier", "register");
		done |= barrier_kinds[i][0];
	}
	return done;
}

static void check_barriers(struct zt *z, int registered)
{
	for (size_t i = 0; i < sizeof(barrier_kinds) / sizeof(barrier_kinds[0]); i++)
		if ((registered & barrier_kinds[i][0]) && membarrier(barrier_kinds[i][1]))
			zt_fail(z, "membarrier command %d: %s (its registration was lost)", barrier_kinds[i][1], strerror(errno));
	int got = membarrier(MEMBARRIER_GET_REGISTRATIONS);
	if (got >= 0 && got != registered)
		zt_fail(z, "membarrier registrations 0x%x, expected 0x%x", got, registered);
}

#define MANY_GROUPS 900

static gid_t many_group(int i)
{
	return (gid_t)(1000000000 + 7 * i); /* large ids: long lines */
}

static void set_many_groups(struct zt *z)
{
	gid_t g[MANY_GROUPS];
	for (int i = 0; i < MANY_GROUPS; i++)
		g[i] = many_group(i);
	if (setgroups(MANY_GROUPS, g))
		zt_setup_failed(z, "setgroups", "900 supplementary groups");
}

static void check_many_groups(struct zt *z)
{
	gid_t g[MANY_GROUPS + 1];
	int n = getgroups(MANY_GROUPS + 1, g);
	if (n != MANY_GROUPS) {
		zt_fail(z, "%d supplementary groups, expected %d", n, MANY_GROUPS);
		return;
	}
	for (int i = 0; i < n; i++)
		if (g[i] != many_group(i)) {
			zt_fail(z, "supplementary group %d is %u, expected %u", i, g[i], many_group(i));
			return;
		}
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "vfork", 0, 0, 1, "the child waits in vfork() for a grandchild that never execs" },
				 { "affinity", 0, 0, 1, "main pinned to the last CPU, its thread to CPU 0" },
				 { "ids", 0, 0, 1, "a child with real, effective, saved and filesystem ids all different" },
				 { "membarrier", 0, 0, 1, "main registers for expedited membarrier()" },
				 { "groups", 0, 0, 1, "main takes 900 supplementary groups" },
				 { "thp-off", 0, 0, 1, "main disables THP (prctl PR_SET_THP_DISABLE)" } };
	zt_setup(&z, argc, argv, opts, 6, SIGUSR2);
	if (opts[5].value && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		zt_setup_failed(&z, "prctl", "PR_SET_THP_DISABLE");
	if (opts[4].value)
		set_many_groups(&z);
	int barriers = opts[3].value ? register_barriers(&z) : 0;
	pid_t ids = opts[2].value ? ids_child(&z) : 0;
	int main_cpu = -1;
	if (opts[1].value) {
		cpu_set_t s;
		CPU_ZERO(&s);
		if (sched_getaffinity(0, sizeof(s), &s))
			zt_setup_failed(&z, "sched_getaffinity", "main");
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &s))
				main_cpu = c;
		pin_cpu = 0;
	}
	pid_t child = fork();
	if (child < 0)
		zt_setup_failed(&z, "fork", "child");
	if (child == 0 && opts[0].value) {
		pid_t v = vfork();
		if (v == 0) {
			struct timespec ts = { 0, 10000000 };
			for (;;)
				syscall(SYS_nanosleep, &ts, NULL); /* shares C's memory: raw syscalls only */
		}
		exit(0);
	}
	if (child == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGUSR1) || prctl(PR_SET_NAME, "gw-proc-child") ||
		    setpriority(PRIO_PROCESS, 0, -3))
			exit(3);
		while (!zt_signalled())
			zt_sleep_ns(1000000);
		int sig = 0;
		if (prctl(PR_GET_PDEATHSIG, &sig) || sig != SIGUSR1)
			zt_fail(&z, "child: parent-death signal %d, expected %d", sig, SIGUSR1);
		check_comm(&z, "child", "gw-proc-child");
		check_sched(&z, "child", SCHED_OTHER, -3);
		exit(zt_finish_part(&z, "child"));
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) || prctl(PR_SET_NAME, "gw-proc-main"))
		zt_setup_failed(&z, "prctl", "subreaper/name");
	if (setpriority(PRIO_PROCESS, 0, 1))
		zt_setup_failed(&z, "setpriority", "main nice 1");
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || dprintf(fd, "%d\n", OOM_ADJ) < 0)
		zt_setup_failed(&z, "write", "oom_score_adj");
	close(fd);
	if (personality(ADDR_NO_RANDOMIZE) < 0)
		zt_setup_failed(&z, "personality", "ADDR_NO_RANDOMIZE");
	struct rlimit rl = { 200, 300 };
	if (setrlimit(RLIMIT_NOFILE, &rl))
		zt_setup_failed(&z, "setrlimit", "RLIMIT_NOFILE");
	umask(027);
	/* A working directory removed under main's feet (zdtm cwd01). */
	char gone[PATH_MAX];
	zt_path(&z, gone, sizeof(gone), "gone");
	if (mkdir(gone, 0751) || chdir(gone) || rmdir(gone))
		zt_setup_failed(&z, "mkdir/chdir/rmdir", gone);
	if (main_cpu >= 0) {
		cpu_set_t s;
		CPU_ZERO(&s);
		CPU_SET(main_cpu, &s);
		if (sched_setaffinity(0, sizeof(s), &s))
			zt_setup_failed(&z, "sched_setaffinity", "main");
	}
	pthread_t th;
	if (pthread_create(&th, NULL, thread_fn, NULL))
		zt_setup_failed(&z, "pthread_create", "named thread");
	if (prctl(PR_SET_DUMPABLE, 0))
		zt_setup_failed(&z, "prctl", "dumpable 0");

	if (opts[0].value) {
		/* Ready once C sits in its vfork (its syscall file names the call); the tree is only dumped, never verified. */
		char path[64], buf[64] = "";
		snprintf(path, sizeof(path), "/proc/%d/syscall", child);
		for (int i = 0; i < 5000; i++) {
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
			if (fd >= 0)
				close(fd);
			buf[n > 0 ? n : 0] = 0;
			if (!strncmp(buf, "58 ", 3) || !strncmp(buf, "56 ", 3) || !strncmp(buf, "435 ", 4))
				break;
			zt_sleep_ns(1000000);
		}
	}
	pid_t pids[] = { getpid(), child };
	zt_ready(&z, pids, 2);
	zt_wait_sleeping(&z);

	int v = prctl(PR_GET_CHILD_SUBREAPER, &v) == 0 ? v : -1;
	if (v != 1)
		zt_fail(&z, "child subreaper flag is %d, expected 1", v);
	if ((v = prctl(PR_GET_DUMPABLE)) != 0)
		zt_fail(&z, "dumpable is %d, expected 0", v);
	if ((v = read_int("/proc/self/oom_score_adj")) != OOM_ADJ)
		zt_fail(&z, "oom_score_adj is %d, expected %d", v, OOM_ADJ);
	if ((v = personality(0xffffffff)) != ADDR_NO_RANDOMIZE)
		zt_fail(&z, "personality is 0x%x, expected ADDR_NO_RANDOMIZE", v);
	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur != 200 || rl.rlim_max != 300)
		zt_fail(&z, "RLIMIT_NOFILE is %llu/%llu, expected 200/300", (unsigned long long)rl.rlim_cur,
			(unsigned long long)rl.rlim_max);
	mode_t m = umask(027);
	if (m != 027)
		zt_fail(&z, "umask is 0%o, expected 027", m);
	check_comm(&z, "main", "gw-proc-main");
	char cwd[PATH_MAX + 16], want[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/cwd", cwd, sizeof(cwd) - 1);
	cwd[n < 0 ? 0 : n] = 0;
	snprintf(want, sizeof(want), "%s (deleted)", gone);
	struct stat cst;
	if (strcmp(cwd, want))
		zt_fail(&z, "cwd is '%s', expected '%s'", cwd, want);
	else if (stat(".", &cst) || !S_ISDIR(cst.st_mode) || (cst.st_mode & 07777) != 0750)
		zt_fail(&z, "cwd: not the removed directory with mode 0750 (mode 0%o)", cst.st_mode);
	check_sched(&z, "main", SCHED_OTHER, 1);
	if (barriers)
		check_barriers(&z, barriers);
	if (opts[4].value)
		check_many_groups(&z);
	if (opts[5].value && (v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)) != 1)
		zt_fail(&z, "THP disable is %d, expected 1", v);
	if (main_cpu >= 0 && !only_cpu(main_cpu))
		zt_fail(&z, "main: CPU affinity is not {%d} alone", main_cpu);
	thread_go = 1;
	pthread_join(th, NULL);
	if (pin_cpu >= 0 && thread_cpus_ok != 2)
		zt_fail(&z, "thread: CPU affinity is not {%d} alone%s", pin_cpu, thread_cpus_ok ? "" : " (or could not be set)");
	if (strcmp(thread_name, "gw-proc-thr"))
		zt_fail(&z, "thread: name '%s', expected 'gw-proc-thr'", thread_name);
	if (thread_policy != SCHED_BATCH || thread_policy_after != SCHED_BATCH)
		zt_fail(&z, "thread: scheduling policy %d, expected SCHED_BATCH (%d; set at setup: %d)", thread_policy_after,
			SCHED_BATCH, thread_policy);

	/* Subreaper by behaviour: X forks Y and exits; Y must be re-parented to main, not to init. */
	int p[2];
	if (pipe2(p, O_CLOEXEC) == 0) {
		pid_t x = fork();
		if (x == 0) {
			pid_t y = fork();
			if (y == 0) {
				pid_t first = getppid();
				for (int i = 0; i < 5000 && getppid() == first; i++)
					zt_sleep_ns(1000000); /* until X is gone */
				pid_t pp = getppid();
				_exit(write(p[1], &pp, sizeof(pp)) == sizeof(pp) ? 0 : 1);
			}
			_exit(0);
		}
		int st;
		waitpid(x, &st, 0);
		pid_t reparent = 0;
		if (read(p[0], &reparent, sizeof(reparent)) != sizeof(reparent) || reparent != getpid())
			zt_fail(&z, "an orphan was re-parented to %d, not to main (%d): child subreaper lost", reparent, getpid());
		if (reparent == getpid())
			waitpid(-1, &st, 0); /* Y, now main's child */
		close(p[0]);
		close(p[1]);
	}
	kill(child, SIGUSR2);
	zt_collect_part(&z, "child", child);
	if (ids) {
		static const char *const what[] = { "", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid", "set-up" };
		int st;
		kill(ids, SIGUSR2);
		if (waitpid(ids, &st, 0) != ids || !WIFEXITED(st) || WEXITSTATUS(st) > 9)
			zt_fail(&z, "ids child: did not exit (status 0x%x)", st);
		else if (WEXITSTATUS(st))
			zt_fail(&z, "ids child: %s is not what it set", what[WEXITSTATUS(st)]);
	}
	return zt_finish(&z);
}
