/* Per-process state that neither /proc nor ptrace shows, read with injected syscalls in one request per
 * process (the tree is frozen meanwhile): signal dispositions, interval and POSIX timers, dumpable, child
 * subreaper, and per thread sigaltstack, clear-child-tid address and parent-death signal. Also the shared
 * pending signals (ptrace) and rlimits (prlimit from outside).
 *
 * Out-parameters land in a scratch page mapped into the target for the duration of the request and unmapped
 * before it returns; every thread's registers and signal mask are restored exactly. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"
#include "regs.h"
#include "rsys.h"

/* linux/membarrier.h of older headers lacks it (Linux 6.3) */
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)

#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS 40
#endif
#define SCRATCH_SIZE 8192
/* Scratch layout (bytes): 64 kernel sigactions of 32 bytes, then small per-call slots. */
#define OFF_SIGACTIONS 0
#define KSIGACTION_SIZE 32
#define OFF_SLOT 4096
#define NSIG_ALL 64
/* Upper bound on tids and timers per request, so bad input cannot make us allocate without limit. */
#define MAX_LIST 65536

struct ksigaction {
	uint64_t handler, flags, restorer, mask;
};

struct stack64 {
	uint64_t sp;
	int32_t flags;
	int32_t pad;
	uint64_t size;
};

struct ints {
	int *v;
	size_t n, cap;
};

static int ints_add(struct helper *h, struct ints *l, int x)
{
	if (l->n == MAX_LIST)
		return gw_fail(&h->err, E2BIG, "decode", 0, "DumpProcessReq: more than %d entries in a list", MAX_LIST);
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		int *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return gw_fail(&h->err, ENOMEM, "realloc", 0, "DumpProcessReq list");
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = x;
	return 0;
}

/* One injected syscall whose negative result is a failure of that syscall. */
static int call(struct helper *h, struct rsys *rs, const char *name, long nr, uint64_t a0, uint64_t a1,
		uint64_t a2, uint64_t a3, int64_t *ret)
{
	uint64_t args[6] = { a0, a1, a2, a3, 0, 0 };
	int64_t r;
	if (rsys_call(h, rs, nr, args, &r))
		return -1;
	if (r < 0 && r > -4096)
		return gw_fail(&h->err, (int)-r, name, rs->tid, "injected into thread %d", rs->tid);
	if (ret)
		*ret = r;
	return 0;
}

static int dump_thread(struct helper *h, struct rsys *rs, int pid, uint64_t scratch, struct pb_buf *out)
{
	uint64_t slot = scratch + OFF_SLOT;
	int64_t r;
	struct stack64 ss;
	uint64_t tidaddr = 0;
	int32_t pdeath = 0;
	if (call(h, rs, "sigaltstack", SYS_sigaltstack, 0, slot, 0, 0, &r) ||
	    call(h, rs, "prctl(PR_GET_TID_ADDRESS)", SYS_prctl, PR_GET_TID_ADDRESS, slot + 32, 0, 0, &r) ||
	    call(h, rs, "prctl(PR_GET_PDEATHSIG)", SYS_prctl, PR_GET_PDEATHSIG, slot + 40, 0, 0, &r) ||
	    remote_read(h, pid, slot, &ss, sizeof(ss)) || remote_read(h, pid, slot + 32, &tidaddr, 8) ||
	    remote_read(h, pid, slot + 40, &pdeath, 4))
		return -1;
	size_t m = pb_begin(out, F_ProcessState_threads);
	pb_int(out, F_ThreadInjected_tid, rs->tid);
	pb_varint(out, F_ThreadInjected_altstack_sp, ss.sp);
	pb_int(out, F_ThreadInjected_altstack_flags, ss.flags);
	pb_varint(out, F_ThreadInjected_altstack_size, ss.size);
	pb_varint(out, F_ThreadInjected_clear_tid_address, tidaddr);
	pb_int(out, F_ThreadInjected_pdeathsig, pdeath);
	pb_end(out, m);
	return 0;
}

/* Signals whose disposition is not the untouched default, from SigIgn and SigCgt of /proc/PID/status. They
 * come after "Groups:", which holds up to NGROUPS_MAX (65536) ids: the whole file is read, however long. */
static int touched_signals(struct helper *h, int pid, uint64_t *mask)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	int fd AUTO_CLOSE = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return gw_fail_errno(&h->err, "open", pid, "%s", path);
	char *buf AUTO_FREE = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 4096) {
			char *b = realloc(buf, cap = cap ? cap * 2 : 8192);
			if (!b)
				return gw_fail(&h->err, ENOMEM, "realloc", pid, "%s (%zu bytes)", path, cap);
			buf = b;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0)
			return gw_fail_errno(&h->err, "read", pid, "%s", path);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (!buf)
		return gw_fail(&h->err, EPROTO, "read", pid, "%s is empty", path);
	buf[len] = 0;
	char *ign = strstr(buf, "\nSigIgn:"), *cgt = strstr(buf, "\nSigCgt:");
	if (!ign || !cgt)
		return gw_fail(&h->err, EPROTO, "read", pid, "%s has no SigIgn/SigCgt", path);
	*mask = strtoull(ign + 8, NULL, 16) | strtoull(cgt + 8, NULL, 16);
	return 0;
}

static int dump_process_wide(struct helper *h, struct rsys *rs, int pid, uint64_t scratch, const struct ints *timers,
			     struct pb_buf *out)
{
	uint64_t slot = scratch + OFF_SLOT;
	int64_t r;
	/* Only signals that are ignored or caught (and SIGCHLD, whose SA_NOCLDWAIT/SA_NOCLDSTOP matter even with
	 * SIG_DFL) are asked for: the others are all-zero sigactions, as the kernel would report them, or a
	 * default action whose flags change nothing. Typically 5 injected calls instead of 62 (~0.3 ms each). */
	uint64_t touched = 0;
	if (touched_signals(h, pid, &touched))
		return -1;
	touched |= 1ull << (SIGCHLD - 1);
	struct ksigaction ka[NSIG_ALL];
	memset(ka, 0, sizeof(ka));
	if (remote_write(h, pid, scratch + OFF_SIGACTIONS, ka, sizeof(ka)))
		return -1;
	for (int sig = 1; sig <= NSIG_ALL; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP || !(touched & (1ull << (sig - 1))))
			continue;
		if (call(h, rs, "rt_sigaction", SYS_rt_sigaction, (uint64_t)sig, 0,
			 scratch + OFF_SIGACTIONS + (uint64_t)(sig - 1) * KSIGACTION_SIZE, 8, &r))
			return -1;
	}
	if (remote_read(h, pid, scratch + OFF_SIGACTIONS, ka, sizeof(ka)))
		return -1;
	for (int sig = 1; sig <= NSIG_ALL; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		size_t m = pb_begin(out, F_ProcessState_sigactions);
		pb_varint(out, F_SigAction_sig, (uint64_t)sig);
		pb_varint(out, F_SigAction_handler, ka[sig - 1].handler);
		pb_varint(out, F_SigAction_flags, ka[sig - 1].flags);
		pb_varint(out, F_SigAction_restorer, ka[sig - 1].restorer);
		pb_varint(out, F_SigAction_mask, ka[sig - 1].mask);
		pb_end(out, m);
	}

	for (int which = 0; which < 3; which++) {
		int64_t v[4];
		if (call(h, rs, "getitimer", SYS_getitimer, (uint64_t)which, slot, 0, 0, &r) ||
		    remote_read(h, pid, slot, v, sizeof(v)))
			return -1;
		size_t m = pb_begin(out, F_ProcessState_itimers);
		pb_varint(out, F_Itimer_which, (uint64_t)which);
		pb_int(out, F_Itimer_interval_sec, v[0]);
		pb_int(out, F_Itimer_interval_usec, v[1]);
		pb_int(out, F_Itimer_value_sec, v[2]);
		pb_int(out, F_Itimer_value_usec, v[3]);
		pb_end(out, m);
	}

	for (size_t i = 0; i < timers->n; i++) {
		int64_t v[4], overrun;
		int id = timers->v[i];
		if (call(h, rs, "timer_gettime", SYS_timer_gettime, (uint64_t)id, slot, 0, 0, &r) ||
		    remote_read(h, pid, slot, v, sizeof(v)) ||
		    call(h, rs, "timer_getoverrun", SYS_timer_getoverrun, (uint64_t)id, 0, 0, 0, &overrun)) {
			gw_note(&h->err, "POSIX timer %d", id);
			return -1;
		}
		size_t m = pb_begin(out, F_ProcessState_posix_timers);
		pb_int(out, F_PosixTimer_id, id);
		pb_int(out, F_PosixTimer_interval_sec, v[0]);
		pb_int(out, F_PosixTimer_interval_nsec, v[1]);
		pb_int(out, F_PosixTimer_value_sec, v[2]);
		pb_int(out, F_PosixTimer_value_nsec, v[3]);
		pb_int(out, F_PosixTimer_overrun, overrun);
		pb_end(out, m);
	}

	int32_t subreaper = 0;
	if (call(h, rs, "prctl(PR_GET_DUMPABLE)", SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, &r))
		return -1;
	pb_int(out, F_ProcessState_dumpable, r);
	if (call(h, rs, "prctl(PR_GET_CHILD_SUBREAPER)", SYS_prctl, PR_GET_CHILD_SUBREAPER, slot, 0, 0, &r) ||
	    remote_read(h, pid, slot, &subreaper, 4))
		return -1;
	pb_int(out, F_ProcessState_child_subreaper, subreaper);

	/* Registrations belong to the mm and only the process itself can ask for them. EINVAL: a kernel without
	 * MEMBARRIER_CMD_GET_REGISTRATIONS (before 6.3) or membarrier. */
	uint64_t args[6] = { MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0 };
	if (rsys_call(h, rs, SYS_membarrier, args, &r))
		return -1;
	if (r < 0 && r != -EINVAL && r > -4096)
		return gw_fail(&h->err, (int)-r, "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)", rs->tid,
			       "injected into thread %d", rs->tid);
	pb_int(out, F_ProcessState_membarrier_registrations, r < 0 ? -1 : r);
	return 0;
}

int op_dump_process(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc, pid = 0;
	struct ints tids = { 0 }, timers = { 0 };
	uint64_t t0 = now_ns();
	struct rsys lead = { 0 };
	uint64_t scratch = 0;
	unsigned injected = 0;

	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_DumpProcessReq_pid) {
			pid = (int)f.v;
		} else if (f.num == F_DumpProcessReq_tids || f.num == F_DumpProcessReq_posix_timers) {
			struct pb_values it;
			uint64_t x;
			for (pb_values_init(&it, &f); (rc = pb_values_next(&it, &x)) > 0;)
				if (ints_add(h, f.num == F_DumpProcessReq_tids ? &tids : &timers, (int)x))
					goto out;
			if (rc < 0)
				break;
		}
	}
	if (rc < 0 || pid <= 0) {
		rc = gw_fail(&h->err, EBADMSG, "decode", pid, "malformed DumpProcessReq (pid %d)", pid);
		goto out;
	}
	if (!tids.n && ints_add(h, &tids, pid))
		goto out;
	rc = -1;
	for (size_t i = 0; i < tids.n; i++) {
		struct tracee *t = tracee_stopped(h, tids.v[i]);
		if (!t)
			goto out;
		if (t->tgid != pid) {
			gw_fail(&h->err, EINVAL, "dump_process", tids.v[i], "thread %d belongs to %d, not to %d", tids.v[i],
				t->tgid, pid);
			goto out;
		}
	}

	/* The first thread maps the scratch page and does the process-wide part. */
	struct user_regs_struct regs;
	uint64_t ip;
	if (regs_get(h, tids.v[0], &regs) || rsys_find_syscall(h, pid, &regs, &ip) || rsys_begin(h, &lead, tids.v[0], ip))
		goto out;
	int64_t addr;
	if (call(h, &lead, "mmap", SYS_mmap, 0, SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &addr))
		goto out;
	scratch = (uint64_t)addr;
	if (dump_process_wide(h, &lead, pid, scratch, &timers, out) || dump_thread(h, &lead, pid, scratch, out))
		goto out;
	for (size_t i = 1; i < tids.n; i++) {
		struct rsys rs;
		int bad = rsys_begin(h, &rs, tids.v[i], ip) || dump_thread(h, &rs, pid, scratch, out);
		injected += rs.count;
		if (rsys_end(h, &rs) || bad)
			goto out;
	}

	if (put_pending(h, tids.v[0], 1, F_ProcessState_shared_pending, out))
		goto out;
	for (int res = 0; res < RLIM_NLIMITS; res++) {
		struct rlimit64 rl;
		if (prlimit64(pid, (enum __rlimit_resource)res, NULL, &rl)) {
			/* Reading another process's limits needs its uids or CAP_SYS_RESOURCE, which root may lack (a
			 * task that switched to other uids, zdtm pid00): the task reads its own instead. */
			int64_t ignored;
			if (errno != EPERM ||
			    call(h, &lead, "prlimit64", SYS_prlimit64, 0, (uint64_t)res, 0, scratch + OFF_SLOT, &ignored) ||
			    remote_read(h, pid, scratch + OFF_SLOT, &rl, sizeof(rl))) {
				if (!h->err.errnum)
					gw_fail_errno(&h->err, "prlimit64", pid, "resource %d", res);
				goto out;
			}
		}
		size_t m = pb_begin(out, F_ProcessState_rlimits);
		pb_varint(out, F_Rlimit_resource, (uint64_t)res);
		pb_varint(out, F_Rlimit_cur, rl.rlim_cur);
		pb_varint(out, F_Rlimit_max, rl.rlim_max);
		pb_end(out, m);
	}
	rc = 0;
out:
	/* Single exit: unmap the scratch page and restore the lead thread whatever happened. */
	if (scratch && lead.active) {
		int64_t ignored;
		struct gw_err saved = h->err;
		gw_clear(&h->err);
		if (call(h, &lead, "munmap", SYS_munmap, scratch, SCRATCH_SIZE, 0, 0, &ignored) && !saved.errnum)
			saved = h->err;
		h->err = saved;
	}
	injected += lead.count;
	if (rsys_end(h, &lead))
		rc = -1;
	pb_int(out, F_ProcessState_pid, pid);
	pb_varint(out, F_ProcessState_injected_syscalls, injected);
	pb_varint(out, F_ProcessState_elapsed_ns, now_ns() - t0);
	free(tids.v);
	free(timers.v);
	return h->err.errnum ? -1 : rc;
}
