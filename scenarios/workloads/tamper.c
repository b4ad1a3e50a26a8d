/*
 * tamper: changes a running workload's state from outside, so that tests can show a workload's checker fails.
 * It reaches the workload's own fds through pidfd_getfd (the same open file description: offsets and contents are
 * shared) and its memory through /proc/PID/mem.
 *   tamper poke PID ADDR HEXBYTES        write bytes into its memory
 *   tamper lseek PID FD OFFSET           move the offset of one of its fds
 *   tamper drain PID FD                  read what is queued in its fd without blocking; prints the byte count
 *   tamper timerfd PID FD INTERVAL_NS    re-arm its timerfd with another interval
 *   tamper sigqueue PID SIG VALUE        queue a signal with a value
 * Exit status: 0 done, 1 a system call failed (named on stderr), 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

struct target {
	pid_t pid;
	const char *syscall;	/* what failed, for the message */
};

static int fail(struct target *t, const char *syscall)
{
	int err = errno;
	t->syscall = syscall;
	return -err;
}

static long long num(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 0);
	if (errno || end == s || *end) {
		fprintf(stderr, "tamper: %s '%s' is not a number\n", what, s);
		exit(2);
	}
	return v;
}

/* A copy of the target's fd FD (same open file description). */
static int grab(struct target *t, int fd)
{
	int pidfd = (int)syscall(SYS_pidfd_open, t->pid, 0);
	if (pidfd < 0)
		return fail(t, "pidfd_open");
	int mine = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	int err = errno;
	close(pidfd);
	errno = err;
	return mine < 0 ? fail(t, "pidfd_getfd") : mine;
}

static int poke(struct target *t, unsigned long long addr, const char *hex)
{
	size_t n = strlen(hex) / 2;
	unsigned char buf[256];
	if (n == 0 || n > sizeof(buf) || strlen(hex) % 2) {
		fprintf(stderr, "tamper: HEXBYTES must be 1..%zu bytes as pairs of hex digits\n", sizeof(buf));
		exit(2);
	}
	for (size_t i = 0; i < n; i++) {
		char pair[5] = { '0', 'x', hex[2 * i], hex[2 * i + 1], 0 };
		buf[i] = (unsigned char)num(pair, "hex byte");
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", t->pid);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail(t, "open /proc/PID/mem");
	ssize_t w = pwrite(fd, buf, n, (off_t)addr);
	int ret = w == (ssize_t)n ? 0 : fail(t, "pwrite /proc/PID/mem");
	close(fd);
	return ret;
}

static int drain(struct target *t, int fd, long long *total)
{
	int mine = grab(t, fd);
	if (mine < 0)
		return mine;
	char buf[65536];
	*total = 0;
	for (;;) {
		/* poll, not O_NONBLOCK: the flag would change the target's file too */
		struct pollfd p = { .fd = mine, .events = POLLIN };
		if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
			break;
		ssize_t n = read(mine, buf, sizeof(buf));
		if (n <= 0)
			break;
		*total += n;
	}
	close(mine);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: tamper poke PID ADDR HEXBYTES | lseek PID FD OFFSET | drain PID FD |\n"
				"              timerfd PID FD INTERVAL_NS | sigqueue PID SIG VALUE\n");
		return 2;
	}
	const char *op = argv[1];
	struct target t = { .pid = (pid_t)num(argv[2], "PID") };
	int ret;
	if (!strcmp(op, "poke") && argc == 5) {
		ret = poke(&t, (unsigned long long)num(argv[3], "ADDR"), argv[4]);
	} else if (!strcmp(op, "lseek") && argc == 5) {
		int fd = ret = grab(&t, (int)num(argv[3], "FD"));
		if (fd >= 0) {
			ret = lseek(fd, (off_t)num(argv[4], "OFFSET"), SEEK_SET) < 0 ? fail(&t, "lseek") : 0;
			close(fd);
		}
	} else if (!strcmp(op, "drain") && argc == 4) {
		long long total = 0;
		ret = drain(&t, (int)num(argv[3], "FD"), &total);
		if (!ret)
			printf("%lld\n", total);
	} else if (!strcmp(op, "timerfd") && argc == 5) {
		long long ns = num(argv[4], "INTERVAL_NS");
		int fd = ret = grab(&t, (int)num(argv[3], "FD"));
		if (fd >= 0) {
			struct timespec ts = { .tv_sec = ns / 1000000000ll, .tv_nsec = ns % 1000000000ll };
			struct itimerspec its = { .it_value = ts, .it_interval = ts };
			ret = timerfd_settime(fd, 0, &its, NULL) < 0 ? fail(&t, "timerfd_settime") : 0;
			close(fd);
		}
	} else if (!strcmp(op, "sigqueue") && argc == 5) {
		union sigval v = { .sival_int = (int)num(argv[4], "VALUE") };
		ret = sigqueue(t.pid, (int)num(argv[3], "SIG"), v) < 0 ? fail(&t, "sigqueue") : 0;
	} else {
		fprintf(stderr, "tamper: unknown operation '%s' or wrong number of arguments (run without any for usage)\n", op);
		return 2;
	}
	if (ret < 0) {
		fprintf(stderr, "tamper %s: %s: %s (pid %d)\n", op, t.syscall, strerror(-ret), t.pid);
		return 1;
	}
	return 0;
}
