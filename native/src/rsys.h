/* Remote syscalls: running a system call inside a stopped tracee.
 *
 * The thread's registers and signal mask are saved, every signal is blocked (PTRACE_SETSIGMASK, so nothing is
 * delivered meanwhile), and each call sets rip to an existing `syscall` instruction with orig_rax = -1 (so the
 * kernel's restart logic leaves the call alone) and resumes with PTRACE_SYSCALL twice: entry stop, exit stop.
 * Syscall stops raise no signal, unlike single-stepping or int3, whose forced SIGTRAP would reset a blocked or
 * ignored SIGTRAP disposition of the target. rsys_end puts registers and mask back exactly. */
#ifndef GODWIT_RSYS_H
#define GODWIT_RSYS_H

#include <stdint.h>
#include <sys/user.h>

#include "helper.h"

struct rsys {
	int tid;
	int active;
	uint64_t syscall_ip;
	struct user_regs_struct saved;
	uint64_t saved_mask;
	unsigned count;       /* syscalls run */
	int deferred_signal;  /* an unblockable stop signal that arrived meanwhile, re-sent by rsys_end */
};

/* Finds a `syscall` instruction usable by the threads of pid: just before the ip of a thread stopped in a
 * syscall, else in [vdso], else in any executable mapping. */
int rsys_find_syscall(struct helper *h, int pid, const struct user_regs_struct *regs, uint64_t *ip);
int rsys_begin(struct helper *h, struct rsys *rs, int tid, uint64_t syscall_ip);
/* Runs syscall nr with up to 6 arguments; *ret is the raw return value (-errno on failure). */
int rsys_call(struct helper *h, struct rsys *rs, long nr, const uint64_t args[6], int64_t *ret);
/* Restores registers and signal mask; safe to call when begin failed or twice. */
int rsys_end(struct helper *h, struct rsys *rs);

/* process_vm_readv/writev of one buffer, failing unless all bytes move. */
int remote_read(struct helper *h, int pid, uint64_t addr, void *buf, size_t len);
int remote_write(struct helper *h, int pid, uint64_t addr, const void *buf, size_t len);

#endif
