/*
 * zdtm.h - the protocol every scenario workload speaks with the test harness (scenarios/workload.ts).
 *
 * A workload must survive checkpoint + kill + restore, so its only links to the harness are files in its state
 * directory and signals:
 *   PROG --state DIR [--name value ...]
 *   1. zt_setup(): parse options, reopen fds 0-2 onto DIR/stdin and DIR/log, close every other inherited fd,
 *      install the verify-signal handler (no SA_RESTART, so it interrupts blocking calls).
 *   2. the program builds its state, then zt_ready() writes DIR/ready atomically:
 *        pids P0 P1 ...        (P0 is the process that receives the verify signal)
 *        verify-signal N       (0: the workload only polls DIR/go)
 *        KEY VALUE...          (zt_info(): addresses, fd numbers... for tests that tamper with the state)
 *   3. it waits (its own way) until zt_requested(): the verify signal arrived or DIR/go exists.
 *   4. it checks every piece of its state, recording differences with zt_fail(), and zt_finish() writes
 *      DIR/result atomically ("PASS" or "FAIL: what differed, where; ...") and returns the exit code (0 or 1).
 * Setup errors go to DIR/log and exit with status 3 (bad usage: 2) before DIR/ready exists.
 */
#ifndef ZDTM_H
#define ZDTM_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ZT_EXIT_USAGE 2
#define ZT_EXIT_SETUP 3

/* Room for failure text and ready-file extras: enough for a few dozen findings, bounded on purpose. */
#define ZT_FAIL_MAX 4096
#define ZT_INFO_MAX 4096

/* One --name value option of a workload; value holds the default until zt_setup() parses argv. */
struct zt_opt {
	const char *name;
	long long value;
	long long min, max;
	const char *help;
};

struct zt {
	const char *prog;
	char dir[PATH_MAX];	/* absolute state directory */
	int verify_sig;		/* 0: poll DIR/go only */
	unsigned nfail;
	size_t fail_len;
	char fail[ZT_FAIL_MAX];
	size_t info_len;
	char info[ZT_INFO_MAX];
};

/* Parses argv (exits 2 with a usage message on bad input), sets up fds and the verify signal (0: none). */
void zt_setup(struct zt *z, int argc, char **argv, struct zt_opt *opts, size_t nopts, int verify_sig);

/* Setup failure: log "setup: WHAT: SYSCALL: strerror(errno)" and exit ZT_EXIT_SETUP. */
__attribute__((noreturn)) void zt_setup_failed(struct zt *z, const char *syscall, const char *what);

/* DIR/NAME into buf; exits on overflow (a state dir path is bounded by PATH_MAX). */
void zt_path(const struct zt *z, char *buf, size_t len, const char *name);

/* Writes DIR/NAME atomically (DIR/.NAME.tmp + rename). Returns 0 or -errno. */
int zt_write_file(const struct zt *z, const char *name, const char *text, size_t len);

/* Reads DIR/NAME into buf (NUL-terminated, truncated to len-1). Returns bytes read or -errno. */
ssize_t zt_read_file(const struct zt *z, const char *name, char *buf, size_t len);

/* Appends a "KEY VALUE" line to the ready file's extras. */
__attribute__((format(printf, 3, 4))) void zt_info(struct zt *z, const char *key, const char *fmt, ...);

/* Writes DIR/ready listing pids (pids[0] receives the verify signal) plus the zt_info() lines. */
void zt_ready(struct zt *z, const pid_t *pids, size_t npids);

/* True once the verify request arrived (signal flag, or DIR/go when polling). Async-signal-safe reads only. */
bool zt_requested(const struct zt *z);

/* The flag alone, for hot loops that cannot afford a syscall per iteration. */
bool zt_signalled(void);

/* Waits for the request, sleeping in nanosleep (the signal interrupts it; bounded delay if it races). */
void zt_wait_sleeping(const struct zt *z);

/* Records one difference ("what differed, where"). */
__attribute__((format(printf, 2, 3))) void zt_fail(struct zt *z, const char *fmt, ...);

/* Records "WHAT: SYSCALL: strerror(errno)" as a difference; returns -errno for the caller's flow. */
int zt_fail_sys(struct zt *z, const char *syscall, const char *what);

/* Writes DIR/result ("PASS" or "FAIL: ...") and returns the exit status (0 or 1). */
int zt_finish(struct zt *z);

/*
 * Trees: a helper process writes its findings to DIR/part-TAG with zt_finish_part() and exits;
 * its parent waits for it and merges them with zt_collect_part() (which also judges the exit status).
 */
int zt_finish_part(struct zt *z, const char *tag);
void zt_collect_part(struct zt *z, const char *tag, pid_t pid);

/* xorshift64: deterministic pseudo-random content that a workload can regenerate to verify. */
static inline uint64_t zt_xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Fills buf with the byte stream of seed (the same seed gives the same bytes). */
void zt_fill_random(void *buf, size_t len, uint64_t seed);

/* Compares buf with the stream of seed; returns the offset of the first difference or (size_t)-1. */
size_t zt_check_random(const void *buf, size_t len, uint64_t seed);

/* Monotonic time in nanoseconds. */
uint64_t zt_now_ns(void);
void zt_sleep_ns(uint64_t ns);

#endif
