/*
 * Registers back into a thread: general registers (NT_PRSTATUS, fs/gs base included), the xsave area
 * (NT_X86_XSTATE, standard format as the TS side builds it from the image) and the blocked-signal mask.
 * After this no syscall may be injected into the thread any more.
 */
#include "rst.h"

#include <elf.h>
#include <errno.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif
#define XSTATE_MAX 16384 /* AMX-sized xsave areas are ~11 KiB */

/* i32 tid | u32 flags (1 = set sigmask) | u64 sigmask | u8 regs[216] | u32 xlen | u8 xsave[xlen] */
int rst_setregs(struct rst_ctx *ctx, const uint8_t *p, size_t n) {
  int32_t tid;
  uint32_t flags, xlen;
  uint64_t mask;
  struct user_regs_struct r;
  if (n < 16 + sizeof r + 4) return rst_fail(ctx, EINVAL, "setregs-request", 0);
  memcpy(&tid, p, 4);
  memcpy(&flags, p + 4, 4);
  memcpy(&mask, p + 8, 8);
  memcpy(&r, p + 16, sizeof r);
  memcpy(&xlen, p + 16 + sizeof r, 4);
  const uint8_t *x = p + 20 + sizeof r;
  if (xlen > XSTATE_MAX || n - (20 + sizeof r) < xlen) return rst_fail(ctx, EINVAL, "setregs-request", tid);
  struct rst_thread *th = rst_thread_find(ctx, tid);
  if (!th || !th->seized || th->detached) return rst_fail(ctx, ESRCH, "setregs-request", tid);
  struct iovec iov = {&r, sizeof r};
  tid = rst_hpid(ctx, tid);
  if (ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) < 0) return rst_fail(ctx, errno, "ptrace(SETREGSET NT_PRSTATUS)", tid);
  if (xlen) {
    struct iovec xi = {(void *)x, xlen};
    if (ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &xi) < 0)
      return rst_fail(ctx, errno, "ptrace(SETREGSET NT_X86_XSTATE)", tid);
  }
  if ((flags & 1) && ptrace(PTRACE_SETSIGMASK, tid, sizeof mask, &mask) < 0)
    return rst_fail(ctx, errno, "ptrace(SETSIGMASK)", tid);
  return 0;
}

/* The host's xsave layout as the kernel reports it for one of our stubs (size + the sw_reserved bytes). */
int rst_xstate_info(struct rst_ctx *ctx, pid_t tid, uint8_t *out, size_t *outlen) {
  struct iovec xi = {out, *outlen};
  tid = rst_hpid(ctx, tid);
  if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &xi) < 0) return rst_fail(ctx, errno, "ptrace(GETREGSET NT_X86_XSTATE)", tid);
  *outlen = xi.iov_len;
  return 0;
}
