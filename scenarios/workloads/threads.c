/*
 * threads: N threads pass a token around a ring (mutex + condvar, so they sleep in futex waits), each with
 * thread-local state, a counter and its own signal mask; thread 0 naps in nanosleep once per round. One more thread
 * sits blocked in read() on an empty pipe.
 * Verify: the ring still turns (every counter advances), each thread finds its TLS (address and contents), tid,
 * pthread_self and signal mask as they were at ready, and the blocked reader wakes up with the bytes written now.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 64
#define GOLDEN 0x9E3779B97F4A7C15ull

struct tls_state {
	uint64_t magic, index, counter;
};
static __thread struct tls_state tls;

struct thread_rec {
	pid_t tid;
	pthread_t self;
	struct tls_state *tls_addr;
	sigset_t mask;
	uint64_t published;	/* copy of tls.counter, under the lock */
	int ready;
	char fail[512];
};

struct ring {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int n, turn, stop, nready;
	struct thread_rec rec[MAX_THREADS];
};

struct reader {
	int pipe[2];
	pid_t tid;
	volatile int done;
	char got[8];
	ssize_t n;
};

/* Blocks in read() until verify writes; every signal is blocked here so nothing but data wakes it. */
static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	__atomic_store_n(&rd->tid, gettid(), __ATOMIC_RELEASE);
	do
		rd->n = read(rd->pipe[0], rd->got, sizeof(rd->got));
	while (rd->n < 0 && errno == EINTR);
	rd->done = 1;
	return NULL;
}

struct worker {
	struct ring *r;
	int index;
};

/* Each thread blocks a different set; all block the verify signal so that the main thread receives it. */
static void thread_mask(int i, sigset_t *m)
{
	sigemptyset(m);
	sigaddset(m, SIGUSR2);
	sigaddset(m, SIGRTMIN + i % 16);
	if (i & 1)
		sigaddset(m, SIGUSR1);
	if (i % 3 == 0)
		sigaddset(m, SIGHUP);
}

static int same_mask(const sigset_t *a, const sigset_t *b, int *differs)
{
	for (int s = 1; s < 65; s++) {
		if (sigismember(a, s) != sigismember(b, s)) {
			*differs = s;
			return 0;
		}
	}
	return 1;
}

static void addf(char *buf, size_t len, const char *what, long long got, long long want)
{
	size_t used = strlen(buf);
	snprintf(buf + used, len - used, "%s%s is %lld, expected %lld", used ? "; " : "", what, got, want);
}

static void check_self(struct thread_rec *rec, int i)
{
	char *f = rec->fail;
	size_t n = sizeof(rec->fail);
	snprintf(f, n, "%s", "");
	if (gettid() != rec->tid)
		addf(f, n, "tid", gettid(), rec->tid);
	if (&tls != rec->tls_addr)
		addf(f, n, "TLS address", (long long)(uintptr_t)&tls, (long long)(uintptr_t)rec->tls_addr);
	if (tls.magic != GOLDEN * (uint64_t)(i + 1))
		addf(f, n, "TLS magic", (long long)tls.magic, (long long)(GOLDEN * (uint64_t)(i + 1)));
	if (tls.index != (uint64_t)i)
		addf(f, n, "TLS index", (long long)tls.index, i);
	if (tls.counter != rec->published)
		addf(f, n, "TLS counter", (long long)tls.counter, (long long)rec->published);
	if (!pthread_equal(pthread_self(), rec->self))
		addf(f, n, "pthread_self", (long long)pthread_self(), (long long)rec->self);
	sigset_t now;
	int sig;
	pthread_sigmask(SIG_SETMASK, NULL, &now);
	if (!same_mask(&now, &rec->mask, &sig)) {
		size_t used = strlen(f);
		snprintf(f + used, n - used, "%ssignal mask differs: signal %d is %s", used ? "; " : "", sig,
			 sigismember(&now, sig) ? "blocked but should not be" : "not blocked but should be");
	}
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	struct ring *r = w->r;
	int i = w->index;
	struct thread_rec *rec = &r->rec[i];

	tls.index = (uint64_t)i;
	tls.magic = GOLDEN * (uint64_t)(i + 1);
	thread_mask(i, &rec->mask);
	pthread_sigmask(SIG_SETMASK, &rec->mask, NULL);

	pthread_mutex_lock(&r->lock);
	rec->tid = gettid();
	rec->self = pthread_self();
	rec->tls_addr = &tls;
	rec->ready = 1;
	r->nready++;
	pthread_cond_broadcast(&r->cond);
	for (;;) {
		while (r->turn != i && !r->stop)
			pthread_cond_wait(&r->cond, &r->lock);
		if (r->stop)
			break;
		tls.counter++;
		rec->published = tls.counter;
		r->turn = (i + 1) % r->n;
		pthread_cond_broadcast(&r->cond);
		if (i == 0) {
			/* one nap per round keeps the ring at about 1000 rounds/s instead of spinning the CPUs */
			pthread_mutex_unlock(&r->lock);
			zt_sleep_ns(1000000);
			pthread_mutex_lock(&r->lock);
		}
	}
	check_self(rec, i);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int main(int argc, char **argv)
{
	struct zt_opt opts[] = { { "threads", 8, 1, MAX_THREADS, "number of threads in the ring" } };
	struct zt z;
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);

	static struct ring r = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	static struct worker workers[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	r.n = (int)opts[0].value;
	for (int i = 0; i < r.n; i++) {
		workers[i] = (struct worker){ .r = &r, .index = i };
		int err = pthread_create(&th[i], NULL, thread_main, &workers[i]);
		if (err) {
			errno = err;
			zt_setup_failed(&z, "pthread_create", "ring thread");
		}
	}
	pthread_mutex_lock(&r.lock);
	while (r.nready < r.n)
		pthread_cond_wait(&r.cond, &r.lock);
	pthread_mutex_unlock(&r.lock);
	static struct reader rd;
	pthread_t rth;
	if (pipe2(rd.pipe, O_CLOEXEC) < 0)
		zt_setup_failed(&z, "pipe2", "reader pipe");
	int err = pthread_create(&rth, NULL, reader_main, &rd);
	if (err) {
		errno = err;
		zt_setup_failed(&z, "pthread_create", "reader thread");
	}
	while (!__atomic_load_n(&rd.tid, __ATOMIC_ACQUIRE))
		zt_sleep_ns(1000000);

	char tids[MAX_THREADS * 12] = "";
	size_t len = (size_t)snprintf(tids, sizeof(tids), "%d", getpid());
	for (int i = 0; i < r.n; i++) {
		len += (size_t)snprintf(tids + len, sizeof(tids) - len, " %d", r.rec[i].tid);
		char key[32];
		snprintf(key, sizeof(key), "tls-%d", i);
		zt_info(&z, key, "%p", (void *)r.rec[i].tls_addr);
	}
	snprintf(tids + len, sizeof(tids) - len, " %d", rd.tid);
	zt_info(&z, "tids", "%s", tids);
	zt_info(&z, "reader", "%d %d", rd.tid, rd.pipe[0]);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);

	zt_wait_sleeping(&z);

	/* The ring must still turn: every thread's counter moves within 3 s. */
	uint64_t before[MAX_THREADS];
	pthread_mutex_lock(&r.lock);
	for (int i = 0; i < r.n; i++)
		before[i] = r.rec[i].published;
	pthread_mutex_unlock(&r.lock);
	uint64_t deadline = zt_now_ns() + 3000000000ull;
	int stuck;
	do {
		zt_sleep_ns(5000000);
		stuck = -1;
		pthread_mutex_lock(&r.lock);
		for (int i = 0; i < r.n && stuck < 0; i++)
			if (r.rec[i].published == before[i])
				stuck = i;
		pthread_mutex_unlock(&r.lock);
	} while (stuck >= 0 && zt_now_ns() < deadline);
	if (stuck >= 0)
		zt_fail(&z, "thread %d (tid %d) counter stuck at %llu for 3 s", stuck, r.rec[stuck].tid,
			(unsigned long long)before[stuck]);

	pthread_mutex_lock(&r.lock);
	r.stop = 1;
	pthread_cond_broadcast(&r.cond);
	pthread_mutex_unlock(&r.lock);
	for (int i = 0; i < r.n; i++) {
		pthread_join(th[i], NULL);
		if (r.rec[i].fail[0])
			zt_fail(&z, "thread %d (tid %d): %s", i, r.rec[i].tid, r.rec[i].fail);
	}
	if (rd.done)
		zt_fail(&z, "the blocked reader thread (tid %d) returned from read() before any data was written (%zd)",
			rd.tid, rd.n);
	if (write(rd.pipe[1], "wake-up", 8) != 8)
		zt_fail_sys(&z, "write", "reader pipe");
	deadline = zt_now_ns() + 2000000000ull;
	while (!rd.done && zt_now_ns() < deadline)
		zt_sleep_ns(1000000);
	if (!rd.done) {
		zt_fail(&z, "the blocked reader thread (tid %d) did not wake up within 2 s of a write", rd.tid);
		pthread_cancel(rth);	/* read() is a cancellation point: do not leave it behind */
	} else if (rd.n != 8 || memcmp(rd.got, "wake-up", 8)) {
		zt_fail(&z, "the blocked reader thread (tid %d) read %zd bytes, expected 8 ('wake-up')", rd.tid, rd.n);
	}
	pthread_join(rth, NULL);
	if (gettid() != getpid())
		zt_fail(&z, "main thread tid %d is not the pid %d", gettid(), getpid());
	printf("threads: %d threads, thread 0 made %llu rounds\n", r.n, (unsigned long long)r.rec[0].published);
	return zt_finish(&z);
}
