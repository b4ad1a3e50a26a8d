#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/ptrace.h>

long ptrace(int request, ...);

#include "regs.h"
#include "rsys.h"

/* How long one injected syscall may take: the calls we make never block, so this only catches a tracee that
 * cannot run (e.g. frozen by a cgroup v1 freezer after we seized it). */
#define RSYS_TIMEOUT_MS 5000
/* Stops that are not ours (a re-reported interrupt or group stop) are tolerated this many times per call. */
#define RSYS_MAX_STRAY_STOPS 16
/* How much of the executable mappings is scanned for a syscall instruction when [vdso] has none. */
#define SCAN_LIMIT (16u << 20)

int remote_read(struct helper *h, int pid, uint64_t addr, void *buf, size_t len)
{
	struct iovec l = { buf, len }, r = { (void *)(uintptr_t)addr, len };
	ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
	if (n != (ssize_t)len)
		return gw_fail(&h->err, n < 0 ? errno : EFAULT, "process_vm_readv", pid, "%zu bytes at 0x%llx", len,
			       (unsigned long long)addr);
	return 0;
}

int remote_write(struct helper *h, int pid, uint64_t addr, const void *buf, size_t len)
{
	struct iovec l = { (void *)buf, len }, r = { (void *)(uintptr_t)addr, len };
	ssize_t n = process_vm_writev(pid, &l, 1, &r, 1, 0);
	if (n != (ssize_t)len)
		return gw_fail(&h->err, n < 0 ? errno : EFAULT, "process_vm_writev", pid, "%zu bytes at 0x%llx", len,
			       (unsigned long long)addr);
	return 0;
}

/* Looks for the bytes 0f 05 in [start, end) of pid; 1 found, 0 not, -1 error. Two bytes that decode as
 * `syscall` when executed from their address are all we need, whatever instruction they belong to. */
static int scan_for_syscall(int pid, uint64_t start, uint64_t end, uint64_t *ip)
{
	uint8_t buf[65536];
	for (uint64_t a = start; a < end; a += sizeof(buf) - 1) {
		size_t len = end - a < sizeof(buf) ? (size_t)(end - a) : sizeof(buf);
		struct iovec l = { buf, len }, r = { (void *)(uintptr_t)a, len };
		ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
		if (n <= 1)
			return 0;
		for (ssize_t i = 0; i + 1 < n; i++)
			if (buf[i] == 0x0f && buf[i + 1] == 0x05) {
				*ip = a + (uint64_t)i;
				return 1;
			}
		if (len < sizeof(buf))
			break;
	}
	return 0;
}

int rsys_find_syscall(struct helper *h, int pid, const struct user_regs_struct *regs, uint64_t *ip)
{
	uint8_t insn[2];
	struct iovec l = { insn, 2 }, r = { (void *)(uintptr_t)(regs->rip - 2), 2 };
	if (regs->rip >= 2 && process_vm_readv(pid, &l, 1, &r, 1, 0) == 2 && insn[0] == 0x0f && insn[1] == 0x05) {
		*ip = regs->rip - 2;
		return 0;
	}
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return gw_fail_errno(&h->err, "open", pid, "%s", path);
	uint64_t scanned = 0;
	int found = 0;
	/* Two passes: [vdso] first (small, always has one), then the other executable mappings. */
	for (int pass = 0; pass < 2 && !found; pass++) {
		rewind(f);
		while (!found && fgets(line, sizeof(line), f)) {
			unsigned long long s, e;
			char perms[8];
			if (sscanf(line, "%llx-%llx %7s", &s, &e, perms) != 3 || perms[2] != 'x')
				continue;
			int vdso = strstr(line, "[vdso]") != NULL;
			if (pass == 0 ? !vdso : vdso)
				continue;
			if (pass == 1 && scanned >= SCAN_LIMIT)
				break;
			scanned += e - s;
			found = scan_for_syscall(pid, s, e, ip);
		}
	}
	fclose(f);
	if (!found)
		return gw_fail(&h->err, ENOEXEC, "process_vm_readv", pid,
			       "no syscall instruction found in the executable mappings of %d", pid);
	return 0;
}

int rsys_begin(struct helper *h, struct rsys *rs, int tid, uint64_t syscall_ip)
{
	memset(rs, 0, sizeof(*rs));
	rs->tid = tid;
	rs->syscall_ip = syscall_ip;
	if (!tracee_stopped(h, tid) || regs_get(h, tid, &rs->saved))
		return -1;
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(rs->saved_mask), &rs->saved_mask))
		return gw_fail_errno(&h->err, "ptrace(PTRACE_GETSIGMASK)", tid, "before injecting into %d", tid);
	uint64_t all = ~0ull;
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof(all), &all))
		return gw_fail_errno(&h->err, "ptrace(PTRACE_SETSIGMASK)", tid, "block signals in %d", tid);
	rs->active = 1;
	return 0;
}

int rsys_end(struct helper *h, struct rsys *rs)
{
	if (!rs->active)
		return 0;
	rs->active = 0;
	int rc = 0;
	/* Both restores are attempted even if one fails. */
	if (regs_set(h, rs->tid, &rs->saved))
		rc = -1;
	if (ptrace(PTRACE_SETSIGMASK, rs->tid, (void *)sizeof(rs->saved_mask), &rs->saved_mask))
		rc = gw_fail_errno(&h->err, "ptrace(PTRACE_SETSIGMASK)", rs->tid, "restore the mask of %d", rs->tid);
	if (rs->deferred_signal)
		syscall(SYS_tgkill, tracee_find(h, rs->tid) ? tracee_find(h, rs->tid)->tgid : rs->tid, rs->tid,
			rs->deferred_signal);
	return rc;
}

int rsys_call(struct helper *h, struct rsys *rs, long nr, const uint64_t args[6], int64_t *ret)
{
	if (!rs->active)
		return gw_fail(&h->err, EINVAL, "ptrace", rs->tid, "injection into %d was not started", rs->tid);
	struct user_regs_struct r = rs->saved;
	r.rax = (unsigned long long)nr;
	r.orig_rax = ~0ull; /* no syscall to restart: the restart logic must not touch rax/rip on resume */
	r.rip = rs->syscall_ip;
	r.rdi = args[0];
	r.rsi = args[1];
	r.rdx = args[2];
	r.r10 = args[3];
	r.r8 = args[4];
	r.r9 = args[5];
	if (regs_set(h, rs->tid, &r))
		return -1;

	int stops = 0, stray = 0;
	while (stops < 2) {
		if (ptrace(PTRACE_SYSCALL, rs->tid, 0, (void *)(long)0))
			return gw_fail_errno(&h->err, "ptrace(PTRACE_SYSCALL)", rs->tid, "injected syscall %ld", nr);
		int status;
		int w = wait_tid(h, rs->tid, &status, RSYS_TIMEOUT_MS);
		if (w == 0)
			return gw_fail(&h->err, ETIMEDOUT, "waitpid", rs->tid,
				       "thread %d did not come back from injected syscall %ld within %d ms (frozen?)",
				       rs->tid, nr, RSYS_TIMEOUT_MS);
		if (w < 0)
			return gw_fail_errno(&h->err, "waitpid", rs->tid, "injected syscall %ld", nr);
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			struct tracee *t = tracee_find(h, rs->tid);
			if (t)
				t->stopped = 0;
			rs->active = 0;
			return gw_fail(&h->err, ESRCH, "ptrace", rs->tid, "thread %d exited during injected syscall %ld",
				       rs->tid, nr);
		}
		int sig = WSTOPSIG(status);
		if (sig == (SIGTRAP | 0x80)) {
			stops++;
			continue;
		}
		if (stray++ >= RSYS_MAX_STRAY_STOPS)
			return gw_fail(&h->err, EAGAIN, "ptrace", rs->tid, "thread %d keeps stopping (signal %d) instead of "
				       "running injected syscall %ld", rs->tid, sig, nr);
		/* A PTRACE_EVENT_STOP (interrupt or group stop reported again) needs nothing. A signal-delivery stop
		 * can only be SIGSTOP-like (everything else is blocked): hold it back and re-send it at the end. */
		if ((status >> 16) == 0 && sig != SIGTRAP)
			rs->deferred_signal = sig;
	}
	if (regs_get(h, rs->tid, &r))
		return -1;
	rs->count++;
	*ret = (int64_t)r.rax;
	return 0;
}
