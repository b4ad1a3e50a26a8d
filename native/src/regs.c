/* Per-thread state that ptrace gives directly: registers, FPU/xsave, signal mask, pending signals, rseq,
 * robust list, syscall info, TLS entries. */
#define _GNU_SOURCE
#include <asm/ldt.h>
#include <elf.h>
#include <linux/ptrace.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

/* sys/ptrace.h and linux/ptrace.h clash; the request numbers come from linux/ptrace.h. */
long ptrace(int request, ...);

#include "fields.h"
#include "helper.h"
#include "regs.h"

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif
#define PTRACE_GETREGSET_ 0x4204
#define PTRACE_GETFPREGS_ 14
#define PTRACE_GET_THREAD_AREA_ 25
/* GDT TLS entries on x86 (GDT_ENTRY_TLS_MIN..MAX). */
#define TLS_ENTRY_MIN 12
#define TLS_ENTRY_MAX 14
/* Restart codes from the kernel's include/linux/errno.h (not in uapi). */
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516
#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif
#ifndef PTRACE_SECCOMP_GET_METADATA
#define PTRACE_SECCOMP_GET_METADATA 0x420d
#endif
/* BPF_MAXINSNS: the kernel refuses longer filters, so no filter it returns is longer. */
#define SECCOMP_MAX_INSNS 4096
/* The kernel caps a thread's filter chain by total length (MAX_INSNS_PER_PATH = 32768 instructions, each
 * filter counting 4 more): a chain can never hold more filters than this. */
#define SECCOMP_MAX_FILTERS 8192
/* Pending signals are read 32 at a time (PTRACE_PEEKSIGINFO returns up to nr). */
#define PEEK_BATCH 32

int regs_get(struct helper *h, int tid, struct user_regs_struct *regs)
{
	struct iovec iov = { regs, sizeof(*regs) };
	if (ptrace(PTRACE_GETREGSET_, tid, (void *)NT_PRSTATUS, &iov))
		return gw_fail_errno(&h->err, "ptrace(PTRACE_GETREGSET)", tid, "NT_PRSTATUS of thread %d", tid);
	return 0;
}

int regs_set(struct helper *h, int tid, const struct user_regs_struct *regs)
{
	struct iovec iov = { (void *)regs, sizeof(*regs) };
	if (ptrace(PTRACE_SETREGSET, tid, (void *)NT_PRSTATUS, &iov))
		return gw_fail_errno(&h->err, "ptrace(PTRACE_SETREGSET)", tid, "NT_PRSTATUS of thread %d", tid);
	return 0;
}

int regs_normalise_restart(struct user_regs_struct *r)
{
	if ((long long)r->orig_rax < 0)
		return E_RestartKind_RESTART_NONE;
	switch ((long long)r->rax) {
	case -ERESTARTSYS:
	case -ERESTARTNOINTR:
	case -ERESTARTNOHAND:
		/* The interrupted call runs again when the thread resumes: enter it again. */
		r->rax = r->orig_rax;
		r->rip -= 2;
		return E_RestartKind_RESTART_SYSCALL;
	case -ERESTART_RESTARTBLOCK:
		/* poll() always leaves a restart block, even with no timeout; with none, entering it again with its
		 * arguments (still in rdi, rsi, rdx) is exactly what restart_syscall() would do. Programs such as
		 * `tail -F` treat poll's EINTR as fatal. */
		if (r->orig_rax == SYS_poll && (int)r->rdx < 0) {
			r->rax = r->orig_rax;
			r->rip -= 2;
			return E_RestartKind_RESTART_SYSCALL;
		}
		/* restart_syscall() needs in-kernel restart data that cannot be carried over: report EINTR. */
		r->rax = (unsigned long long)-EINTR;
		return E_RestartKind_RESTART_EINTR;
	default:
		return E_RestartKind_RESTART_NONE;
	}
}

int put_pending(struct helper *h, int tid, int shared, unsigned field, struct pb_buf *out)
{
	siginfo_t si[PEEK_BATCH];
	struct ptrace_peeksiginfo_args a = { 0, shared ? PTRACE_PEEKSIGINFO_SHARED : 0, PEEK_BATCH };
	for (;;) {
		long n = ptrace(PTRACE_PEEKSIGINFO, tid, &a, si);
		if (n < 0)
			return gw_fail_errno(&h->err, "ptrace(PTRACE_PEEKSIGINFO)", tid, "%s pending signals of %d",
					     shared ? "shared" : "per-thread", tid);
		for (long i = 0; i < n; i++)
			pb_bytes(out, field, &si[i], sizeof(si[i]));
		if (n < PEEK_BATCH)
			return 0;
		a.off += (unsigned long long)n;
	}
}

/* Every seccomp filter of the thread, oldest (index 0) first. EINVAL: the thread is not in filter mode. */
static int put_seccomp(struct helper *h, int tid, struct pb_buf *out)
{
	struct sock_insn {
		uint16_t code;
		uint8_t jt, jf;
		uint32_t k;
	};
	struct sock_insn *buf AUTO_FREE = calloc(SECCOMP_MAX_INSNS, sizeof(*buf));
	if (!buf)
		return gw_fail(&h->err, ENOMEM, "calloc", tid, "seccomp filter buffer");
	for (long i = 0; i < SECCOMP_MAX_FILTERS; i++) {
		long n = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, (void *)i, buf);
		if (n < 0) {
			if (errno == ENOENT || (i == 0 && errno == EINVAL))
				break; /* past the oldest filter, or no filter mode at all */
			return gw_fail_errno(&h->err, "ptrace(PTRACE_SECCOMP_GET_FILTER)", tid, "filter %ld of thread %d", i, tid);
		}
		pb_bytes(out, F_ThreadRegs_seccomp_filters, buf, (size_t)n * sizeof(*buf));
		struct {
			uint64_t filter_off;
			uint64_t flags;
		} md = { (uint64_t)i, 0 };
		if (ptrace(PTRACE_SECCOMP_GET_METADATA, tid, (void *)sizeof(md), &md) < 0)
			md.flags = 0; /* kernels before 4.16: no flags to report */
		pb_varint(out, F_ThreadRegs_seccomp_flags, md.flags);
	}
	return 0;
}

static int put_thread(struct helper *h, int tid, struct pb_buf *out)
{
	struct user_regs_struct raw, norm;
	if (!tracee_stopped(h, tid) || regs_get(h, tid, &raw))
		return -1;
	norm = raw;
	int restart = regs_normalise_restart(&norm);
	pb_int(out, F_ThreadRegs_tid, tid);
	pb_bytes(out, F_ThreadRegs_regs, &norm, sizeof(norm));
	pb_bytes(out, F_ThreadRegs_regs_raw, &raw, sizeof(raw));
	pb_varint(out, F_ThreadRegs_restart, (uint64_t)restart);

	/* XSAVE area; NT_PRFPREG (fxsave layout) only if the kernel has no xstate regset. */
	size_t xs = h->xsave_size;
	void *xbuf AUTO_FREE = calloc(1, xs);
	if (!xbuf)
		return gw_fail(&h->err, ENOMEM, "calloc", tid, "xsave buffer of %zu bytes", xs);
	struct iovec iov = { xbuf, xs };
	if (ptrace(PTRACE_GETREGSET_, tid, (void *)NT_X86_XSTATE, &iov) == 0) {
		pb_bytes(out, F_ThreadRegs_xsave, xbuf, iov.iov_len);
	} else if (errno == ENODEV || errno == EINVAL || errno == EIO) {
		struct user_fpregs_struct fp;
		if (ptrace(PTRACE_GETFPREGS_, tid, 0, &fp))
			return gw_fail_errno(&h->err, "ptrace(PTRACE_GETFPREGS)", tid, "thread %d", tid);
		pb_bytes(out, F_ThreadRegs_fpregs, &fp, sizeof(fp));
	} else {
		return gw_fail_errno(&h->err, "ptrace(PTRACE_GETREGSET)", tid, "NT_X86_XSTATE of thread %d", tid);
	}

	uint64_t mask = 0;
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(mask), &mask))
		return gw_fail_errno(&h->err, "ptrace(PTRACE_GETSIGMASK)", tid, "thread %d", tid);
	pb_varint(out, F_ThreadRegs_sigmask, mask);
	if (put_pending(h, tid, 0, F_ThreadRegs_pending, out))
		return -1;

	struct ptrace_rseq_configuration rs;
	memset(&rs, 0, sizeof(rs));
	long n = ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, (void *)sizeof(rs), &rs);
	if (n < 0 && errno != EIO && errno != EINVAL) /* EIO: kernel without CONFIG_RSEQ */
		return gw_fail_errno(&h->err, "ptrace(PTRACE_GET_RSEQ_CONFIGURATION)", tid, "thread %d", tid);
	if (n > 0 && rs.rseq_abi_size) {
		pb_varint(out, F_ThreadRegs_rseq_abi_pointer, rs.rseq_abi_pointer);
		pb_varint(out, F_ThreadRegs_rseq_abi_size, rs.rseq_abi_size);
		pb_varint(out, F_ThreadRegs_rseq_signature, rs.signature);
		pb_varint(out, F_ThreadRegs_rseq_flags, rs.flags);
	}

	void *head = NULL;
	size_t hlen = 0;
	if (syscall(SYS_get_robust_list, tid, &head, &hlen))
		return gw_fail_errno(&h->err, "get_robust_list", tid, "thread %d", tid);
	pb_varint(out, F_ThreadRegs_robust_list, (uint64_t)(uintptr_t)head);
	pb_varint(out, F_ThreadRegs_robust_list_len, hlen);

	struct ptrace_syscall_info si;
	memset(&si, 0, sizeof(si));
	if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof(si), &si) > 0) {
		pb_varint(out, F_ThreadRegs_syscall_op, si.op);
		if (si.op == PTRACE_SYSCALL_INFO_ENTRY || si.op == PTRACE_SYSCALL_INFO_SECCOMP) {
			pb_varint(out, F_ThreadRegs_syscall_nr, si.entry.nr);
			for (int i = 0; i < 6; i++)
				pb_varint(out, F_ThreadRegs_syscall_args, si.entry.args[i]);
		} else if (si.op == PTRACE_SYSCALL_INFO_EXIT) {
			pb_int(out, F_ThreadRegs_syscall_rval, si.exit.rval);
		}
	}

	for (int e = TLS_ENTRY_MIN; e <= TLS_ENTRY_MAX; e++) {
		struct user_desc d;
		memset(&d, 0, sizeof(d));
		if (ptrace(PTRACE_GET_THREAD_AREA_, tid, (void *)(long)e, &d)) {
			if (errno == EIO || errno == EINVAL)
				break; /* a kernel without 32-bit emulation has no GDT TLS for us to read */
			return gw_fail_errno(&h->err, "ptrace(PTRACE_GET_THREAD_AREA)", tid, "entry %d", e);
		}
		pb_bytes(out, F_ThreadRegs_tls, &d, sizeof(d));
	}
	return put_seccomp(h, tid, out);
}

int op_thread_regs(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc;
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num != F_ThreadRegsReq_tids)
			continue;
		struct pb_values it;
		uint64_t x;
		for (pb_values_init(&it, &f); (rc = pb_values_next(&it, &x)) > 0;) {
			size_t m = pb_begin(out, F_ThreadRegsResp_threads);
			int bad = put_thread(h, (int)x, out);
			pb_end(out, m);
			if (bad)
				return -1;
		}
		if (rc < 0)
			break;
	}
	if (rc < 0)
		return gw_fail(&h->err, EBADMSG, "decode", 0, "malformed ThreadRegsReq");
	return 0;
}
