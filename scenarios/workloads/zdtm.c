/* zdtm.c - the workload side of the harness protocol (see zdtm.h). */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * The only global: a signal handler cannot be given a context, so the verify request is a flag it sets.
 */
static volatile sig_atomic_t zt_go_flag;

static void zt_on_verify_signal(int sig)
{
	(void)sig;
	zt_go_flag = 1;
}

static void zt_usage(const char *prog, const struct zt_opt *opts, size_t nopts)
{
	fprintf(stderr, "usage: %s --state DIR", prog);
	for (size_t i = 0; i < nopts; i++)
		fprintf(stderr, " [--%s N]", opts[i].name);
	fprintf(stderr, "\n  --state DIR  existing directory for ready/result/log files (the harness protocol)\n");
	for (size_t i = 0; i < nopts; i++)
		fprintf(stderr, "  --%s N  %s (%lld..%lld, default %lld)\n", opts[i].name, opts[i].help, opts[i].min,
			opts[i].max, opts[i].value);
}

__attribute__((noreturn)) static void zt_bad_usage(const char *prog, const struct zt_opt *opts, size_t nopts,
						   const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	zt_usage(prog, opts, nopts);
	exit(ZT_EXIT_USAGE);
}

static void zt_parse(struct zt *z, int argc, char **argv, struct zt_opt *opts, size_t nopts, const char **state)
{
	*state = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			zt_usage(z->prog, opts, nopts);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0)
			zt_bad_usage(z->prog, opts, nopts, "unexpected argument '%s': options are --name value", a);
		if (i + 1 >= argc)
			zt_bad_usage(z->prog, opts, nopts, "option %s needs a value", a);
		const char *v = argv[++i];
		if (!strcmp(a + 2, "state")) {
			*state = v;
			continue;
		}
		size_t k;
		for (k = 0; k < nopts; k++)
			if (!strcmp(a + 2, opts[k].name))
				break;
		if (k == nopts)
			zt_bad_usage(z->prog, opts, nopts, "unknown option %s", a);
		char *end;
		errno = 0;
		long long n = strtoll(v, &end, 0);
		if (errno || end == v || *end)
			zt_bad_usage(z->prog, opts, nopts, "option value '%s' is not an integer", v);
		if (n < opts[k].min || n > opts[k].max) {
			fprintf(stderr, "%s: --%s %lld is out of range %lld..%lld\n", z->prog, opts[k].name, n,
				opts[k].min, opts[k].max);
			exit(ZT_EXIT_USAGE);
		}
		opts[k].value = n;
	}
	if (!*state)
		zt_bad_usage(z->prog, opts, nopts, "%s", "--state DIR is required");
}

void zt_path(const struct zt *z, char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", z->dir, name);
	if (n < 0 || (size_t)n >= len) {
		fprintf(stderr, "%s: path %s/%s is too long\n", z->prog, z->dir, name);
		exit(ZT_EXIT_SETUP);
	}
}

/* Opens PATH with FLAGS and moves it to fd TARGET. */
static void zt_reopen(struct zt *z, const char *name, int flags, int target)
{
	char path[PATH_MAX];
	zt_path(z, path, sizeof(path), name);
	int fd = open(path, flags | O_CLOEXEC, 0644);
	if (fd < 0)
		zt_setup_failed(z, "open", path);
	if (fd != target) {
		if (dup2(fd, target) < 0)
			zt_setup_failed(z, "dup2", path);
		close(fd);
	} else if (fcntl(fd, F_SETFD, 0) < 0) {
		zt_setup_failed(z, "fcntl(F_SETFD)", path);
	}
}

void zt_setup(struct zt *z, int argc, char **argv, struct zt_opt *opts, size_t nopts, int verify_sig)
{
	memset(z, 0, sizeof(*z));
	const char *slash = strrchr(argv[0], '/');
	z->prog = slash ? slash + 1 : argv[0];
	z->verify_sig = verify_sig;

	const char *state;
	zt_parse(z, argc, argv, opts, nopts, &state);
	if (!realpath(state, z->dir)) {
		fprintf(stderr, "%s: state directory %s: %s (create it first)\n", z->prog, state, strerror(errno));
		exit(ZT_EXIT_USAGE);
	}
	struct stat st;
	if (stat(z->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: state directory %s is not a directory\n", z->prog, z->dir);
		exit(ZT_EXIT_USAGE);
	}

	/* Only files we own: the harness's pipes or a leaked fd would tie us to it across a restore. */
	zt_reopen(z, "stdin", O_RDONLY | O_CREAT, 0);
	zt_reopen(z, "log", O_WRONLY | O_CREAT | O_APPEND, 1);
	if (dup2(1, 2) < 0)
		zt_setup_failed(z, "dup2", "stderr");
	if (close_range(3, ~0U, 0) < 0)
		zt_setup_failed(z, "close_range", "inherited fds");
	setvbuf(stdout, NULL, _IONBF, 0);

	if (verify_sig) {
		/* No SA_RESTART: the request must interrupt whatever blocking call the workload waits in. */
		struct sigaction sa = { .sa_handler = zt_on_verify_signal };
		sigemptyset(&sa.sa_mask);
		if (sigaction(verify_sig, &sa, NULL) < 0)
			zt_setup_failed(z, "sigaction", "verify signal");
	}
	fprintf(stderr, "%s: pid %d started, state %s\n", z->prog, getpid(), z->dir);
}

void zt_setup_failed(struct zt *z, const char *syscall, const char *what)
{
	int err = errno;
	fprintf(stderr, "%s: pid %d: setup: %s: %s: %s\n", z->prog, getpid(), what, syscall, strerror(err));
	exit(ZT_EXIT_SETUP);
}

int zt_write_file(const struct zt *z, const char *name, const char *text, size_t len)
{
	char tmp[PATH_MAX], tmpname[NAME_MAX], path[PATH_MAX];
	snprintf(tmpname, sizeof(tmpname), ".%s.tmp.%d", name, getpid());
	zt_path(z, tmp, sizeof(tmp), tmpname);
	zt_path(z, path, sizeof(path), name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int ret = 0;
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		off += (size_t)n;
	}
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

ssize_t zt_read_file(const struct zt *z, const char *name, char *buf, size_t len)
{
	char path[PATH_MAX];
	zt_path(z, path, sizeof(path), name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t off = 0;
	while (off + 1 < len) {
		ssize_t n = read(fd, buf + off, len - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	buf[off] = 0;
	close(fd);
	return (ssize_t)off;
}

void zt_info(struct zt *z, const char *key, const char *fmt, ...)
{
	char val[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	int n = snprintf(z->info + z->info_len, sizeof(z->info) - z->info_len, "%s %s\n", key, val);
	if (n < 0 || (size_t)n >= sizeof(z->info) - z->info_len) {
		fprintf(stderr, "%s: ready info overflows %zu bytes at key %s\n", z->prog, sizeof(z->info), key);
		exit(ZT_EXIT_SETUP);
	}
	z->info_len += (size_t)n;
}

void zt_ready(struct zt *z, const pid_t *pids, size_t npids)
{
	char text[ZT_INFO_MAX + 1024];
	size_t len = 0;
	len += (size_t)snprintf(text + len, sizeof(text) - len, "pids");
	for (size_t i = 0; i < npids && len < 1000; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, " %d", pids[i]);
	len += (size_t)snprintf(text + len, sizeof(text) - len, "\nverify-signal %d\n%s", z->verify_sig, z->info);
	int ret = zt_write_file(z, "ready", text, len);
	if (ret < 0) {
		errno = -ret;
		zt_setup_failed(z, "write", "ready file");
	}
	fprintf(stderr, "%s: ready\n", z->prog);
}

bool zt_signalled(void)
{
	return zt_go_flag != 0;
}

bool zt_requested(const struct zt *z)
{
	if (zt_go_flag)
		return true;
	char path[PATH_MAX];
	zt_path(z, path, sizeof(path), "go");
	return access(path, F_OK) == 0;
}

void zt_wait_sleeping(const struct zt *z)
{
	/* 100 ms bounds the delay if the signal lands between the check and the sleep. */
	while (!zt_requested(z))
		zt_sleep_ns(100 * 1000 * 1000);
}

void zt_fail(struct zt *z, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: pid %d: FAIL: %s\n", z->prog, getpid(), msg);
	z->nfail++;
	size_t room = sizeof(z->fail) - z->fail_len;
	if (room <= 8)
		return;
	int n = snprintf(z->fail + z->fail_len, room, "%s%s", z->fail_len ? "; " : "", msg);
	if (n < 0)
		return;
	if ((size_t)n >= room) {
		/* Keep what fits and say that more was cut. */
		memcpy(z->fail + sizeof(z->fail) - 5, "...", 4);
		z->fail_len = sizeof(z->fail) - 1;
		return;
	}
	z->fail_len += (size_t)n;
}

int zt_fail_sys(struct zt *z, const char *syscall, const char *what)
{
	int err = errno;
	zt_fail(z, "%s: %s: %s", what, syscall, strerror(err));
	return -err;
}

static int zt_write_verdict(struct zt *z, const char *name)
{
	char text[ZT_FAIL_MAX + 16];
	int len = z->nfail ? snprintf(text, sizeof(text), "FAIL: %s\n", z->fail) : snprintf(text, sizeof(text), "PASS\n");
	int ret = zt_write_file(z, name, text, (size_t)len);
	if (ret < 0)
		fprintf(stderr, "%s: cannot write %s: %s\n", z->prog, name, strerror(-ret));
	fprintf(stderr, "%s: pid %d: %s: %s", z->prog, getpid(), name, text);
	return z->nfail || ret < 0 ? 1 : 0;
}

int zt_finish(struct zt *z)
{
	return zt_write_verdict(z, "result");
}

int zt_finish_part(struct zt *z, const char *tag)
{
	char name[NAME_MAX];
	snprintf(name, sizeof(name), "part-%s", tag);
	return zt_write_verdict(z, name);
}

void zt_collect_part(struct zt *z, const char *tag, pid_t pid)
{
	int st;
	pid_t r;
	do
		r = waitpid(pid, &st, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		zt_fail(z, "%s (pid %d): waitpid: %s", tag, pid, strerror(errno));
		return;
	}
	if (WIFSIGNALED(st)) {
		zt_fail(z, "%s (pid %d) was killed by signal %d", tag, pid, WTERMSIG(st));
		return;
	}
	char name[NAME_MAX], text[ZT_FAIL_MAX + 16];
	snprintf(name, sizeof(name), "part-%s", tag);
	ssize_t n = zt_read_file(z, name, text, sizeof(text));
	if (n < 0) {
		zt_fail(z, "%s (pid %d) exited with status %d and left no %s: %s", tag, pid, WEXITSTATUS(st), name,
			strerror((int)-n));
		return;
	}
	text[strcspn(text, "\n")] = 0;
	if (!strncmp(text, "FAIL: ", 6))
		zt_fail(z, "%s", text + 6);
	else if (strcmp(text, "PASS") != 0 || WEXITSTATUS(st) != 0)
		zt_fail(z, "%s (pid %d) exited with status %d, part says '%s'", tag, pid, WEXITSTATUS(st), text);
}

void zt_fill_random(void *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed | 1, *w = buf;
	size_t nw = len / 8;
	for (size_t i = 0; i < nw; i++)
		w[i] = zt_xorshift64(&s);
	uint64_t last = zt_xorshift64(&s);
	memcpy((char *)buf + nw * 8, &last, len % 8);
}

size_t zt_check_random(const void *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed | 1;
	const uint64_t *w = buf;
	size_t nw = len / 8;
	for (size_t i = 0; i < nw; i++) {
		uint64_t want = zt_xorshift64(&s);
		if (w[i] != want) {
			const unsigned char *a = (const void *)&w[i], *b = (const void *)&want;
			size_t k = 0;
			while (a[k] == b[k])
				k++;
			return i * 8 + k;
		}
	}
	uint64_t last = zt_xorshift64(&s);
	const unsigned char *t = (const unsigned char *)buf + nw * 8, *b = (const void *)&last;
	for (size_t k = 0; k < len % 8; k++)
		if (t[k] != b[k])
			return nw * 8 + k;
	return (size_t)-1;
}

uint64_t zt_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void zt_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull) };
	nanosleep(&ts, NULL);
}
