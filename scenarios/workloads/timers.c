/*
 * timers: interval timers (ITIMER_REAL, ITIMER_VIRTUAL), POSIX timers (an armed monotonic one with a sigevent
 * value, a long realtime one, a long one aimed at the main thread by SIGEV_THREAD_ID — its tid must be the one
 * the task's pid namespace knows —, a disarmed one) and a timerfd.
 * Verify: every interval reads back exactly, every remaining time lies within its interval, the clocks did not go
 * backwards, and over a measured span each timer fires as often as its interval says, with the sigevent value
 * intact. Expirations are counted by the kernel for the POSIX timer (1 + si_overrun per signal) and the timerfd,
 * so those must reach half the nominal count; ITIMER_* signals merge while the process waits for a CPU, so those
 * must fire at least once. None may fire more than 1.5 times + 2 the nominal count (a shorter interval).
 * --dead-thread 1: also a fast SIGEV_THREAD_ID timer made by a thread that has exited since (zdtm
 * dead_thread_posix_timer): it must still exist with its interval, and never signal (there is no thread to).
 */
#include "zdtm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000ll
#define REAL_NS (50 * MS)
#define VIRT_NS (20 * MS)
#define POSIX_NS (30 * MS)
#define LONG_NS (10000 * MS)
#define TFD_NS (40 * MS)
#define SPAN_NS (330 * MS)	/* long enough for several expirations of each, short enough for a fast test */
#define TIMER_VALUE 42

struct counts {
	volatile long alrm, vtalrm, posix, posix_bad_value, orphan;
};
/* Handlers cannot be given a context: they count into this (set once in main). */
static struct counts *g_counts;

static void on_alrm(int sig)
{
	(void)sig;
	g_counts->alrm++;
}

static void on_vtalrm(int sig)
{
	(void)sig;
	g_counts->vtalrm++;
}

static void on_posix(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	g_counts->posix += 1 + si->si_overrun;	/* expirations that found the signal still queued */
	if (si->si_code != SI_TIMER || si->si_value.sival_int != TIMER_VALUE)
		g_counts->posix_bad_value++;
}

static void on_orphan(int sig)
{
	(void)sig;
	g_counts->orphan++;
}

static long long ts_ns(const struct timespec *t)
{
	return t->tv_sec * 1000000000ll + t->tv_nsec;
}

static long long tv_ns(const struct timeval *t)
{
	return t->tv_sec * 1000000000ll + t->tv_usec * 1000ll;
}

static struct timespec ns_ts(long long ns)
{
	return (struct timespec){ .tv_sec = ns / 1000000000ll, .tv_nsec = ns % 1000000000ll };
}

/* slack: CPU-time timers count in scheduler ticks, so their remaining time can read up to a tick over */
static void check_interval(struct zt *z, const char *what, long long interval, long long value, long long want,
			   long long slack)
{
	if (interval != want)
		zt_fail(z, "%s interval is %lld ns, expected %lld", what, interval, want);
	if (want && (value <= 0 || value > want + slack))
		zt_fail(z, "%s remaining time %lld ns is outside (0, %lld]", what, value, want);
	if (!want && value)
		zt_fail(z, "%s is armed (%lld ns left), expected disarmed", what, value);
}

/* exact: expirations counted by the kernel (at least half due); else signals that may merge (at least one) */
static void check_rate(struct zt *z, const char *what, long got, long long span, long long interval, int exact)
{
	long nominal = (long)(span / interval);
	long least = exact ? nominal / 2 : 1;
	if (got < least || got > nominal * 3 / 2 + 2)
		zt_fail(z, "%s fired %ld times in %lld ms, expected about %ld", what, got, span / MS, nominal);
}

static void sig_install(struct zt *z, int sig, void (*plain)(int), void (*info)(int, siginfo_t *, void *))
{
	struct sigaction sa = { .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	if (info) {
		sa.sa_sigaction = info;
		sa.sa_flags |= SA_SIGINFO;
	} else {
		sa.sa_handler = plain;
	}
	if (sigaction(sig, &sa, NULL) < 0)
		zt_setup_failed(z, "sigaction", "timer signal");
}

static timer_t make_timer(struct zt *z, clockid_t clock, int notify, int sig, long long value, long long interval)
{
	struct sigevent ev = { .sigev_notify = notify, .sigev_signo = sig };
	ev.sigev_value.sival_int = TIMER_VALUE;
	if (notify & SIGEV_THREAD_ID)
		ev._sigev_un._tid = gettid();
	timer_t t;
	if (timer_create(clock, &ev, &t) < 0)
		zt_setup_failed(z, "timer_create", "POSIX timer");
	struct itimerspec its = { .it_value = ns_ts(value), .it_interval = ns_ts(interval) };
	if (value && timer_settime(t, 0, &its, NULL) < 0)
		zt_setup_failed(z, "timer_settime", "POSIX timer");
	return t;
}

struct orphan_arg {
	timer_t t;
	int err;
};

/* A thread that makes a fast timer aimed at itself by SIGEV_THREAD_ID, then exits: the timer stays, signalling no one. */
static void *orphan_thread(void *p)
{
	struct orphan_arg *a = p;
	struct sigevent ev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 4 };
	ev._sigev_un._tid = gettid();
	struct itimerspec its = { .it_value = ns_ts(POSIX_NS), .it_interval = ns_ts(POSIX_NS) };
	if (timer_create(CLOCK_MONOTONIC, &ev, &a->t) < 0 || timer_settime(a->t, 0, &its, NULL) < 0)
		a->err = errno;
	return NULL;
}

static long drain_timerfd(struct zt *z, int fd)
{
	uint64_t n;
	ssize_t r = read(fd, &n, sizeof(n));
	if (r == sizeof(n))
		return (long)n;
	if (r < 0 && errno != EAGAIN)
		zt_fail_sys(z, "read", "timerfd");
	return 0;
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = {
		{ "dead-thread", 0, 0, 1, "also a timer aimed at a thread that has exited" },
	};
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	int dead_thread = (int)opts[0].value;
	static struct counts counts;
	g_counts = &counts;
	sig_install(&z, SIGALRM, on_alrm, NULL);
	sig_install(&z, SIGVTALRM, on_vtalrm, NULL);
	sig_install(&z, SIGRTMIN + 1, NULL, on_posix);
	sig_install(&z, SIGRTMIN + 4, on_orphan, NULL);
	struct orphan_arg orphan = { 0 };
	if (dead_thread) {
		pthread_t th;
		if (pthread_create(&th, NULL, orphan_thread, &orphan) != 0 || pthread_join(th, NULL) != 0)
			zt_setup_failed(&z, "pthread_create", "timer thread");
		errno = orphan.err;
		if (orphan.err)
			zt_setup_failed(&z, "timer_create", "timer of an exited thread");
	}

	struct itimerval real = { .it_interval = { 0, REAL_NS / 1000 }, .it_value = { 0, REAL_NS / 1000 } };
	struct itimerval virt = { .it_interval = { 0, VIRT_NS / 1000 }, .it_value = { 0, VIRT_NS / 1000 } };
	if (setitimer(ITIMER_REAL, &real, NULL) < 0 || setitimer(ITIMER_VIRTUAL, &virt, NULL) < 0)
		zt_setup_failed(&z, "setitimer", "interval timers");
	timer_t t_posix = make_timer(&z, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 1, POSIX_NS, POSIX_NS);
	timer_t t_long = make_timer(&z, CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 3, LONG_NS, LONG_NS);
	timer_t t_off = make_timer(&z, CLOCK_BOOTTIME, SIGEV_NONE, 0, 0, 0);
	timer_t t_tid = make_timer(&z, CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 3, LONG_NS, LONG_NS);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct itimerspec tfd_spec = { .it_value = ns_ts(TFD_NS), .it_interval = ns_ts(TFD_NS) };
	if (tfd < 0 || timerfd_settime(tfd, 0, &tfd_spec, NULL) < 0)
		zt_setup_failed(&z, "timerfd", "timerfd");

	struct timespec mono0, real0;
	clock_gettime(CLOCK_MONOTONIC, &mono0);
	clock_gettime(CLOCK_REALTIME, &real0);
	zt_info(&z, "timerfd", "%d", tfd);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	struct timespec mono1, real1;
	clock_gettime(CLOCK_MONOTONIC, &mono1);
	clock_gettime(CLOCK_REALTIME, &real1);
	if (ts_ns(&mono1) < ts_ns(&mono0))
		zt_fail(&z, "CLOCK_MONOTONIC went back by %lld ns", ts_ns(&mono0) - ts_ns(&mono1));
	if (ts_ns(&real1) < ts_ns(&real0))
		zt_fail(&z, "CLOCK_REALTIME went back by %lld ns", ts_ns(&real0) - ts_ns(&real1));

	struct itimerval iv;
	getitimer(ITIMER_REAL, &iv);
	check_interval(&z, "ITIMER_REAL", tv_ns(&iv.it_interval), tv_ns(&iv.it_value), REAL_NS, 0);
	getitimer(ITIMER_VIRTUAL, &iv);
	check_interval(&z, "ITIMER_VIRTUAL", tv_ns(&iv.it_interval), tv_ns(&iv.it_value), VIRT_NS, 10 * MS);
	struct itimerspec its;
	const struct { const char *what; timer_t t; long long want; } posix[] = {
		{ "POSIX timer (monotonic)", t_posix, POSIX_NS },
		{ "POSIX timer (realtime, long)", t_long, LONG_NS },
		{ "POSIX timer (disarmed)", t_off, 0 },
		{ "POSIX timer (thread id, long)", t_tid, LONG_NS },
	};
	for (int i = 0; i < 4; i++) {
		if (timer_gettime(posix[i].t, &its) < 0)
			zt_fail_sys(&z, "timer_gettime", posix[i].what);
		else
			check_interval(&z, posix[i].what, ts_ns(&its.it_interval), ts_ns(&its.it_value), posix[i].want, 0);
	}
	if (dead_thread && timer_gettime(orphan.t, &its) < 0)
		zt_fail_sys(&z, "timer_gettime", "timer of an exited thread");
	else if (dead_thread)
		check_interval(&z, "timer of an exited thread", ts_ns(&its.it_interval), ts_ns(&its.it_value), POSIX_NS, 0);
	if (timerfd_gettime(tfd, &its) < 0)
		zt_fail_sys(&z, "timerfd_gettime", "timerfd");
	else
		check_interval(&z, "timerfd", ts_ns(&its.it_interval), ts_ns(&its.it_value), TFD_NS, 0);

	/* They must still fire, at their rates. */
	long alrm0 = counts.alrm, posix0 = counts.posix;
	drain_timerfd(&z, tfd);
	uint64_t start = zt_now_ns();
	for (uint64_t el; (el = zt_now_ns() - start) < (uint64_t)SPAN_NS;)
		zt_sleep_ns((uint64_t)SPAN_NS - el);	/* signals cut the sleep short: sleep the rest */
	long long span = (long long)(zt_now_ns() - start);
	check_rate(&z, "ITIMER_REAL", counts.alrm - alrm0, span, REAL_NS, 0);
	check_rate(&z, "POSIX timer (monotonic)", counts.posix - posix0, span, POSIX_NS, 1);
	check_rate(&z, "timerfd", drain_timerfd(&z, tfd), span, TFD_NS, 1);
	if (counts.orphan)
		zt_fail(&z, "the timer of an exited thread sent %ld signals", counts.orphan);
	if (counts.posix_bad_value)
		zt_fail(&z, "%ld POSIX timer signals lacked SI_TIMER or value %d", counts.posix_bad_value, TIMER_VALUE);

	/* ITIMER_VIRTUAL counts only user-mode CPU time: burn 100 ms of it (the clock read itself is a syscall). */
	long vt0 = counts.vtalrm;
	struct timespec c0, c1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	do {
		for (volatile long spin = 0; spin < 100000; spin++)
			;
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
	} while (ts_ns(&c1) - ts_ns(&c0) < 100 * MS);
	check_rate(&z, "ITIMER_VIRTUAL", counts.vtalrm - vt0, ts_ns(&c1) - ts_ns(&c0), VIRT_NS, 0);
	printf("timers: %ld SIGALRM, %ld POSIX, %ld SIGVTALRM in total\n", counts.alrm, counts.posix, counts.vtalrm);
	return zt_finish(&z);
}
