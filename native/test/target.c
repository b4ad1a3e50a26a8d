/* A small workload for the native helper's tests (test/native-*.test.ts).
 *
 * usage: test-target THREADS spin|sleep
 * Sets up state the tests then read through the helper, prints one JSON line starting with READY on stdout,
 * and runs until killed: THREADS extra threads that spin (incrementing counters) or sleep in nanosleep.
 * - 4 MiB of anonymous memory filled with pattern(i) = (i*131 + (i>>12)*7 + 0x5a) & 0xff, and one page of the
 *   same pattern made PROT_NONE afterwards (unreadable to process_vm_readv).
 * - SIGUSR1: handler with SA_RESTART|SA_SIGINFO and SIGUSR2 in its mask; SIGUSR2 and SIGTRAP ignored; SIGALRM
 *   handler.
 * - SIGRTMIN+2 blocked everywhere, queued to the main thread (per-thread pending); SIGRTMIN+3 blocked and
 *   queued to the process (shared pending).
 * - ITIMER_REAL armed for 1000 s; a POSIX timer (SIGEV_NONE) armed for 500 s.
 * - A pipe holding 1000 bytes in flight; a stream socketpair with 300 bytes queued on one end; a datagram
 *   socketpair with two messages queued; a stream socket with a pending ECONNRESET; a sigaltstack on the main
 *   thread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MEM_LEN (4u << 20)

static volatile unsigned long counters[64];
static int spin;

static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 131 + (i >> 12) * 7 + 0x5a) & 0xff);
}

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
}

static void on_alrm(int sig)
{
	(void)sig;
}

static void *worker(void *arg)
{
	long idx = (long)arg;
	if (spin)
		for (;;)
			counters[idx]++;
	for (;;) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
		counters[idx]++;
	}
	return NULL;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: test-target THREADS spin|sleep\n");
		return 2;
	}
	int nthreads = atoi(argv[1]);
	spin = strcmp(argv[2], "spin") == 0;
	if (nthreads < 0 || nthreads > 60)
		return 2;

	unsigned char *mem = mmap(NULL, MEM_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *none = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || none == MAP_FAILED)
		die("mmap");
	for (size_t i = 0; i < MEM_LEN; i++)
		mem[i] = pattern(i);
	for (size_t i = 0; i < 4096; i++)
		none[i] = pattern(i);
	if (mprotect(none, 4096, PROT_NONE))
		die("mprotect");

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_RESTART | SA_SIGINFO;
	sigaddset(&sa.sa_mask, SIGUSR2);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction");
	signal(SIGUSR2, SIG_IGN);
	signal(SIGALRM, on_alrm);
	/* Injected syscalls must not raise SIGTRAP: one forced on an ignored SIGTRAP would reset it to SIG_DFL. */
	signal(SIGTRAP, SIG_IGN);

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGRTMIN + 2);
	sigaddset(&block, SIGRTMIN + 3);
	pthread_sigmask(SIG_BLOCK, &block, NULL); /* inherited by every thread */

	struct itimerval it = { { 0, 0 }, { 1000, 0 } };
	if (setitimer(ITIMER_REAL, &it, NULL))
		die("setitimer");
	timer_t timer;
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_NONE;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer))
		die("timer_create");
	struct itimerspec its = { { 7, 0 }, { 500, 0 } };
	if (timer_settime(timer, 0, &its, NULL))
		die("timer_settime");

	static char altstack[65536];
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0 };
	if (sigaltstack(&ss, NULL))
		die("sigaltstack");

	int p[2], st[2], dg[2];
	if (pipe(p) || socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg))
		die("pipe/socketpair");
	unsigned char buf[1000];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = pattern(i);
	if (write(p[1], buf, 1000) != 1000 || write(st[0], buf, 300) != 300 || write(dg[0], "first", 5) != 5 ||
	    write(dg[0], "second!", 7) != 7)
		die("write");

	/* A socket with a pending error: its peer is closed with unread data, which gives it ECONNRESET. */
	int e[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, e) || write(e[1], "x", 1) != 1 || close(e[0]))
		die("error socket");

	union sigval v = { .sival_int = 4242 };
	if (sigqueue(getpid(), SIGRTMIN + 3, v))
		die("sigqueue");
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	si.si_signo = SIGRTMIN + 2;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = 77;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMIN + 2, &si))
		die("rt_tgsigqueueinfo");

	pthread_t th[64];
	for (long i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)i))
			die("pthread_create");
	/* Wait until every thread has run (and so exists as a task) before saying READY. */
	for (long i = 0; i < nthreads; i++)
		while (!counters[i])
			usleep(1000);

	printf("READY {\"pid\":%d,\"mem\":\"0x%lx\",\"memLen\":%u,\"none\":\"0x%lx\",\"counters\":\"0x%lx\","
	       "\"pipe\":[%d,%d],\"stream\":[%d,%d],\"dgram\":[%d,%d],\"errsock\":%d,\"altstack\":\"0x%lx\",\"altstackSize\":%zu,"
	       "\"usr1\":\"0x%lx\",\"alrm\":\"0x%lx\"}\n",
	       getpid(), (unsigned long)mem, MEM_LEN, (unsigned long)none, (unsigned long)counters, p[0], p[1], st[0],
	       st[1], dg[0], dg[1], e[1], (unsigned long)altstack, sizeof(altstack), (unsigned long)on_usr1,
	       (unsigned long)on_alrm);
	fflush(stdout);
	for (;;)
		pause();
}
