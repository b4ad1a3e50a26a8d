/*
 * signals: dispositions with various flags (SA_RESTART, SA_SIGINFO, SA_ONSTACK on a sigaltstack, SA_NODEFER,
 * SA_RESETHAND, an sa_mask, an ignored signal), blocked signals left pending (a process-wide one, a thread-directed
 * one, and real-time signals queued with sigqueue values), and a blocked signal that is not pending.
 * Verify: every disposition reads back the same (handler, flags, restorer, mask), the blocked mask, the pending
 * set and the sigaltstack; then each blocked signal is unblocked on its own and must be delivered exactly as
 * queued (count, order of values, si_code, sender pid, alternate stack); finally raised signals reach their
 * handlers with the right flags in effect.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALTSTACK_SIZE (64 * 1024)
#define MAX_DELIVERIES 64

struct delivery {
	int sig, code, value, on_altstack, term_blocked;
	pid_t pid;
};

struct deliveries {
	volatile int n;
	struct delivery d[MAX_DELIVERIES];
	char *alt_lo, *alt_hi;
};

/* Handlers cannot be given a context: they append to this record (set once in main). */
static struct deliveries *g_rec;

static void note(int sig, const siginfo_t *si)
{
	char here;
	struct deliveries *r = g_rec;
	if (r->n >= MAX_DELIVERIES)
		return;
	struct delivery *d = &r->d[r->n];
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	*d = (struct delivery){ .sig = sig, .on_altstack = &here >= r->alt_lo && &here < r->alt_hi,
				.term_blocked = sigismember(&cur, SIGTERM) == 1 };
	if (si) {
		d->code = si->si_code;
		d->value = si->si_value.sival_int;
		d->pid = si->si_pid;
	}
	r->n++;
}

static void on_plain(int sig)
{
	note(sig, NULL);
}

static void on_info(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	note(sig, si);
}

enum kind { PLAIN, INFO, IGNORE };

struct disp {
	const char *name;
	int sig;
	enum kind kind;
	int flags;
	int mask1, mask2;	/* signals in sa_mask (0: none) */
	struct sigaction installed;	/* read back right after installing: what verify expects */
};

static void install(struct zt *z, struct disp *d)
{
	struct sigaction sa = { .sa_flags = d->flags };
	sigemptyset(&sa.sa_mask);
	if (d->mask1)
		sigaddset(&sa.sa_mask, d->mask1);
	if (d->mask2)
		sigaddset(&sa.sa_mask, d->mask2);
	if (d->kind == INFO)
		sa.sa_sigaction = on_info;
	else
		sa.sa_handler = d->kind == PLAIN ? on_plain : SIG_IGN;
	if (sigaction(d->sig, &sa, NULL) < 0 || sigaction(d->sig, NULL, &d->installed) < 0)
		zt_setup_failed(z, "sigaction", d->name);
}

static int first_diff(const sigset_t *a, const sigset_t *b)
{
	for (int s = 1; s < 65; s++)
		if (sigismember(a, s) != sigismember(b, s))
			return s;
	return 0;
}

static void check_disposition(struct zt *z, const struct disp *d)
{
	struct sigaction now;
	if (sigaction(d->sig, NULL, &now) < 0) {
		zt_fail_sys(z, "sigaction", d->name);
		return;
	}
	const struct sigaction *w = &d->installed;
	if (now.sa_handler != w->sa_handler)
		zt_fail(z, "%s handler is %p, expected %p", d->name, (void *)now.sa_handler, (void *)w->sa_handler);
	if (now.sa_flags != w->sa_flags)
		zt_fail(z, "%s sa_flags are 0x%x, expected 0x%x", d->name, (unsigned)now.sa_flags, (unsigned)w->sa_flags);
	if (now.sa_restorer != w->sa_restorer)
		zt_fail(z, "%s sa_restorer is %p, expected %p", d->name, (void *)now.sa_restorer, (void *)w->sa_restorer);
	int s = first_diff(&now.sa_mask, &w->sa_mask);
	if (s)
		zt_fail(z, "%s sa_mask differs at signal %d", d->name, s);
}

static void describe(char *buf, size_t len, const struct deliveries *r, int from, int sig)
{
	size_t used = 0;
	buf[0] = 0;
	for (int i = from; i < r->n && used < len; i++)
		if (r->d[i].sig == sig)
			used += (size_t)snprintf(buf + used, len - used, " %d", r->d[i].value);
}

/*
 * Unblocks one signal and checks what its handler saw: the queued values in order (want[], nwant entries), the
 * si_code, the sender (this process), and whether it ran on the alternate stack.
 */
static void release(struct zt *z, struct deliveries *r, const char *name, int sig, const int *want, int nwant,
		    int code, int altstack)
{
	int from = r->n;
	sigset_t one;
	sigemptyset(&one);
	sigaddset(&one, sig);
	sigprocmask(SIG_UNBLOCK, &one, NULL);
	int got = 0;
	for (int i = from; i < r->n; i++) {
		const struct delivery *d = &r->d[i];
		if (d->sig != sig) {
			zt_fail(z, "unblocking %s delivered signal %d too", name, d->sig);
			continue;
		}
		if (got < nwant && code && (d->value != want[got] || d->code != code || d->pid != getpid()))
			zt_fail(z, "%s delivery %d: value %d code %d from pid %d, expected value %d code %d from pid %d",
				name, got, d->value, d->code, d->pid, want[got], code, getpid());
		if (d->on_altstack != altstack)
			zt_fail(z, "%s ran %s the alternate stack", name, d->on_altstack ? "on" : "off");
		got++;
	}
	if (got != nwant) {
		char seen[256];
		describe(seen, sizeof(seen), r, from, sig);
		zt_fail(z, "%s was delivered %d times (values:%s), expected %d", name, got, seen, nwant);
	}
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	static struct deliveries rec;
	g_rec = &rec;

	stack_t ss = { .ss_size = ALTSTACK_SIZE };
	ss.ss_sp = malloc(ALTSTACK_SIZE);
	if (!ss.ss_sp)
		zt_setup_failed(&z, "malloc", "alternate stack");
	rec.alt_lo = ss.ss_sp;
	rec.alt_hi = rec.alt_lo + ALTSTACK_SIZE;
	if (sigaltstack(&ss, NULL) < 0)
		zt_setup_failed(&z, "sigaltstack", "alternate stack");

	const int RT2 = SIGRTMIN + 2, RT5 = SIGRTMIN + 5;
	struct disp disps[] = {
		{ "SIGUSR1", SIGUSR1, PLAIN, SA_RESTART, SIGTERM, 0, {} },
		{ "SIGHUP", SIGHUP, INFO, SA_SIGINFO | SA_NODEFER, 0, 0, {} },
		{ "SIGWINCH", SIGWINCH, PLAIN, SA_ONSTACK, SIGUSR1, SIGQUIT, {} },
		{ "SIGINT", SIGINT, PLAIN, SA_RESETHAND, 0, 0, {} },
		{ "SIGALRM", SIGALRM, INFO, SA_SIGINFO, 0, 0, {} },
		{ "SIGRTMIN+2", RT2, INFO, SA_SIGINFO | SA_RESTART, 0, 0, {} },
		{ "SIGRTMIN+5", RT5, INFO, SA_SIGINFO | SA_ONSTACK, SIGTERM, 0, {} },
		{ "SIGPIPE", SIGPIPE, IGNORE, 0, 0, 0, {} },
		{ "SIGTTIN", SIGTTIN, PLAIN, 0, 0, 0, {} },
	};
	const size_t ndisps = sizeof(disps) / sizeof(disps[0]);
	for (size_t i = 0; i < ndisps; i++)
		install(&z, &disps[i]);

	sigset_t blocked;
	sigemptyset(&blocked);
	int blocked_sigs[] = { SIGUSR1, SIGALRM, RT2, RT5, SIGTTIN };
	for (size_t i = 0; i < 5; i++)
		sigaddset(&blocked, blocked_sigs[i]);
	if (sigprocmask(SIG_BLOCK, &blocked, NULL) < 0)
		zt_setup_failed(&z, "sigprocmask", "block");
	sigprocmask(SIG_BLOCK, NULL, &blocked);	/* the whole expected mask */

	const int rt2_values[] = { 100, 101, 102, 103, 104 }, rt5_values[] = { 7, 8 };
	pid_t self = getpid();
	if (kill(self, SIGUSR1) < 0)	/* process-wide pending */
		zt_setup_failed(&z, "kill", "SIGUSR1");
	if (tgkill(self, gettid(), SIGALRM) < 0)	/* thread-directed pending */
		zt_setup_failed(&z, "tgkill", "SIGALRM");
	for (int i = 0; i < 5; i++)
		if (sigqueue(self, RT2, (union sigval){ .sival_int = rt2_values[i] }) < 0)
			zt_setup_failed(&z, "sigqueue", "SIGRTMIN+2");
	for (int i = 0; i < 2; i++)
		if (sigqueue(self, RT5, (union sigval){ .sival_int = rt5_values[i] }) < 0)
			zt_setup_failed(&z, "sigqueue", "SIGRTMIN+5");
	sigset_t pending_want;
	sigemptyset(&pending_want);
	sigaddset(&pending_want, SIGUSR1);
	sigaddset(&pending_want, SIGALRM);
	sigaddset(&pending_want, RT2);
	sigaddset(&pending_want, RT5);

	zt_info(&z, "rt2", "%d", RT2);
	zt_info(&z, "blocked-not-pending", "%d", SIGTTIN);
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	for (size_t i = 0; i < ndisps; i++)
		check_disposition(&z, &disps[i]);
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	int s = first_diff(&cur, &blocked);
	if (s)
		zt_fail(&z, "signal mask: signal %d is %s", s, sigismember(&cur, s) ? "blocked, should not be" : "not blocked, should be");
	sigpending(&cur);
	s = first_diff(&cur, &pending_want);
	if (s)
		zt_fail(&z, "pending set: signal %d is %s", s, sigismember(&cur, s) ? "pending, should not be" : "not pending, should be");
	stack_t now;
	if (sigaltstack(NULL, &now) < 0)
		zt_fail_sys(&z, "sigaltstack", "query");
	else if (now.ss_sp != ss.ss_sp || now.ss_size != ss.ss_size || now.ss_flags != 0)
		zt_fail(&z, "sigaltstack is %p+%zu flags %d, expected %p+%zu flags 0", now.ss_sp, now.ss_size, now.ss_flags,
			ss.ss_sp, ss.ss_size);

	rec.n = 0;
	release(&z, &rec, "SIGRTMIN+2", RT2, rt2_values, 5, SI_QUEUE, 0);
	release(&z, &rec, "SIGRTMIN+5", RT5, rt5_values, 2, SI_QUEUE, 1);
	release(&z, &rec, "SIGALRM", SIGALRM, (const int[]){ 0 }, 1, SI_TKILL, 0);
	release(&z, &rec, "SIGUSR1", SIGUSR1, NULL, 1, 0, 0);
	if (rec.n > 0 && rec.d[rec.n - 1].sig == SIGUSR1 && !rec.d[rec.n - 1].term_blocked)
		zt_fail(&z, "SIGUSR1 handler ran without SIGTERM blocked (its sa_mask)");
	release(&z, &rec, "SIGTTIN", SIGTTIN, NULL, 0, 0, 0);

	/* Raised now: the dispositions must act as installed. */
	int from = rec.n;
	raise(SIGWINCH);
	sigqueue(self, SIGHUP, (union sigval){ .sival_int = 55 });
	raise(SIGINT);
	raise(SIGPIPE);
	if (rec.n - from != 3)
		zt_fail(&z, "raising SIGWINCH, SIGHUP, SIGINT, SIGPIPE ran %d handlers, expected 3", rec.n - from);
	for (int i = from; i < rec.n; i++) {
		const struct delivery *d = &rec.d[i];
		if (d->sig == SIGWINCH && !d->on_altstack)
			zt_fail(&z, "SIGWINCH (SA_ONSTACK) did not run on the alternate stack");
		if (d->sig == SIGHUP && (d->value != 55 || d->code != SI_QUEUE))
			zt_fail(&z, "SIGHUP siginfo value %d code %d, expected 55 and SI_QUEUE", d->value, d->code);
	}
	struct sigaction after;
	sigaction(SIGINT, NULL, &after);
	if (after.sa_handler != SIG_DFL)
		zt_fail(&z, "SIGINT (SA_RESETHAND) handler was not reset after delivery");
	return zt_finish(&z);
}
