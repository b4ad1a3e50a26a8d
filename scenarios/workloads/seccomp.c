/*
 * seccomp: filters and strict mode that must come back exactly (CRIU's zdtm seccomp_filter, _tsync, _inheritance,
 * seccomp_strict). Each filter makes one harmless syscall fail with its own errno, so the verify step can see which
 * filters a thread has:
 *   - main sets no_new_privs, installs A (sysinfo -> 77), starts worker W, installs B with TSYNC (times -> 78):
 *     W gets B too; W then installs C alone (sched_getscheduler -> 79);
 *   - child F (forked after B) inherits A+B and adds D with SECCOMP_FILTER_FLAG_LOG (getpriority -> 80);
 *   - child S enters strict mode and waits in read(): at verify it answers a byte, then calls getppid(), for
 *     which strict mode kills it.
 * Verify: in every thread, each filter's errno where it applies and the plain result where it does not, the
 * filter counts and modes in /proc, no_new_privs, and S's answer and clean exit.
 * --tsync 1 (zdtm seccomp_filter_tsync): at verify W installs E (getsid -> 81) with TSYNC, which the kernel only
 * allows while main's filter (B) is still an ancestor of W's (C on B): W's call must succeed and main must then
 * see E (and C, which came along).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/times.h>
#include <sys/wait.h>
#include <unistd.h>

#define ERR_A 77
#define ERR_B 78
#define ERR_C 79
#define ERR_D 80
#define ERR_E 81

static int install(unsigned nr, unsigned err, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

/* -errno of a call, or its (non-negative) result. */
#define RESULT(call) ((call) < 0 ? -errno : 0)

struct expect {
	int sysinfo, times, sched, prio; /* expected: 0 = works, else the errno */
};

static void probe(struct zt *z, const char *who, const struct expect *e)
{
	struct sysinfo si;
	struct tms t;
	int got[4];
	errno = 0;
	got[0] = RESULT(sysinfo(&si));
	got[1] = RESULT(syscall(SYS_times, &t)); /* glibc times() hides errors */
	got[2] = RESULT(sched_getscheduler(0));
	errno = 0;
	int p = getpriority(PRIO_PROCESS, 0);
	got[3] = p == -1 && errno ? -errno : 0;
	const char *names[] = { "sysinfo", "times", "sched_getscheduler", "getpriority" };
	int want[] = { e->sysinfo, e->times, e->sched, e->prio };
	for (int i = 0; i < 4; i++)
		if (got[i] != -want[i])
			zt_fail(z, "%s: %s gave %d, expected %d (a seccomp filter %s)", who, names[i], got[i], -want[i],
				want[i] ? "is missing" : "appeared");
}

/* "Seccomp:" and "Seccomp_filters:" of the calling thread, and its NoNewPrivs (thread-self: pids differ after a
 * restore into a new PID namespace, the /proc mount stays the host's). */
static void check_status(struct zt *z, const char *who, int mode, int filters, int nnp)
{
	char buf[4096];
	const char *path = "/proc/thread-self/status";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		zt_fail_sys(z, "read", path);
		return;
	}
	buf[n] = 0;
	char *m = strstr(buf, "\nSeccomp:"), *f = strstr(buf, "\nSeccomp_filters:"), *p = strstr(buf, "\nNoNewPrivs:");
	if (!m || atoi(m + 9) != mode)
		zt_fail(z, "%s: seccomp mode %d, expected %d", who, m ? atoi(m + 9) : -1, mode);
	if (filters >= 0 && (!f || atoi(f + 17) != filters))
		zt_fail(z, "%s: %d seccomp filters, expected %d", who, f ? atoi(f + 17) : -1, filters);
	if (!p || atoi(p + 12) != nnp)
		zt_fail(z, "%s: no_new_privs %d, expected %d", who, p ? atoi(p + 12) : -1, nnp);
}

static struct zt *gz;
static volatile int worker_go, worker_done;
static pid_t worker_tid;
static int worker_tsync; /* --tsync */
static pthread_mutex_t worker_lock = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = (pid_t)syscall(SYS_gettid);
	while (!worker_go)
		zt_sleep_ns(1000000);
	/* main has installed B with TSYNC by now */
	if (install(SYS_sched_getscheduler, ERR_C, 0))
		worker_done = -errno;
	else
		worker_done = 1;
	while (worker_go != 2)
		zt_sleep_ns(1000000);
	struct expect e = { ERR_A, ERR_B, ERR_C, 0 };
	pthread_mutex_lock(&worker_lock);
	probe(gz, "worker thread", &e);
	check_status(gz, "worker thread", SECCOMP_MODE_FILTER, 3, 1);
	if (worker_tsync && install(SYS_getsid, ERR_E, SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH))
		zt_fail(gz, "worker thread: a filter with TSYNC failed (%s): main's filters are not the worker's own any more",
			strerror(errno));
	pthread_mutex_unlock(&worker_lock);
	worker_done = 2;
	return NULL;
}

int main(int argc, char **argv)
{
	struct zt z;
	gz = &z;
	struct zt_opt opts[] = { { "tsync", 0, 0, 1, "at verify the worker installs a filter with TSYNC" } };
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	worker_tsync = (int)opts[0].value;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		zt_setup_failed(&z, "prctl", "no_new_privs");

	/* S: strict mode, blocked in read() until verify. */
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		zt_setup_failed(&z, "pipe2", "strict child's pipes");
	pid_t strict = fork();
	if (strict < 0)
		zt_setup_failed(&z, "fork", "strict child");
	if (strict == 0) {
		close(in[1]);
		close(out[0]);
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
			syscall(SYS_exit, 3);
		char c;
		while (syscall(SYS_read, in[0], &c, 1) != 1)
			; /* a signal may interrupt it: read() and rt_sigreturn are all strict mode allows */
		c++;
		syscall(SYS_write, out[1], &c, 1);
		/* Strict mode kills on anything but read/write/exit/sigreturn: still strict, this never returns. */
		syscall(SYS_getppid);
		syscall(SYS_exit, 0);
	}
	close(in[0]);
	close(out[1]);

	if (install(SYS_sysinfo, ERR_A, 0))
		zt_setup_failed(&z, "seccomp", "filter A");
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		zt_setup_failed(&z, "pthread_create", "worker");
	while (!worker_tid)
		zt_sleep_ns(1000000);
	if (install(SYS_times, ERR_B, SECCOMP_FILTER_FLAG_TSYNC))
		zt_setup_failed(&z, "seccomp", "filter B (TSYNC)");
	worker_go = 1;
	while (!worker_done)
		zt_sleep_ns(1000000);
	if (worker_done < 0) {
		errno = -worker_done;
		zt_setup_failed(&z, "seccomp", "filter C in the worker");
	}

	pid_t child = fork();
	if (child < 0)
		zt_setup_failed(&z, "fork", "filtered child");
	if (child == 0) {
		if (install(SYS_getpriority, ERR_D, SECCOMP_FILTER_FLAG_LOG))
			exit(3);
		while (!zt_signalled())
			zt_sleep_ns(1000000);
		struct expect e = { ERR_A, ERR_B, 0, ERR_D };
		probe(&z, "child", &e);
		check_status(&z, "child", SECCOMP_MODE_FILTER, 3, 1);
		exit(zt_finish_part(&z, "child"));
	}

	zt_info(&z, "worker", "%d", worker_tid);
	pid_t pids[] = { getpid(), child, strict };
	zt_ready(&z, pids, 3);
	zt_wait_sleeping(&z);

	struct expect e = { ERR_A, ERR_B, 0, 0 };
	pthread_mutex_lock(&worker_lock);
	probe(&z, "main thread", &e);
	pthread_mutex_unlock(&worker_lock);
	check_status(&z, "main thread", SECCOMP_MODE_FILTER, 2, 1);
	worker_go = 2;
	pthread_join(th, NULL);
	if (worker_tsync && RESULT(getsid(0)) != -ERR_E)
		zt_fail(&z, "main thread: the worker's TSYNC filter did not reach it (getsid gave %d)", RESULT(getsid(0)));

	char c = 41;
	if (write(in[1], &c, 1) != 1)
		zt_fail_sys(&z, "write", "strict child's pipe");
	struct pollfd pfd = { out[0], POLLIN, 0 };
	if (poll(&pfd, 1, 5000) != 1 || read(out[0], &c, 1) != 1 || c != 42)
		zt_fail(&z, "strict child: no answer (or a wrong one) to its byte");
	int st;
	if (waitpid(strict, &st, 0) != strict || !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		zt_fail(&z, "strict child: ended with status 0x%x, expected SIGKILL for its getppid() (strict mode lost?)", st);

	kill(child, SIGUSR2);
	zt_collect_part(&z, "child", child);
	return zt_finish(&z);
}
