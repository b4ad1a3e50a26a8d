/*
 * Syscalls injected into stopped stubs through ptrace. A call: set the registers (rip at a `syscall; int3`
 * pair, orig_rax = -1 so the kernel's restart logic leaves rax/rip alone), PTRACE_CONT, wait for the int3
 * trap, read rax. The first calls use the pair compiled into this binary (every stub is a fork of us); the
 * trampoline page then provides one at an address that survives unmapping the stub's own memory, with a
 * scratch area after it for arguments (paths, structs, iovecs).
 */
#include "rst.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>

__asm__(".pushsection .text\n"
        ".globl rst_syscall_insn\n"
        "rst_syscall_insn:\n"
        "  syscall\n"
        "  int3\n"
        ".popsection\n");

#define TRAMP_CODE 4096 /* first page: code; the rest: scratch */
#define ARG_IMM 0
#define ARG_SCRATCH 1
#define ARG_RESULT 2
#define CALL_ALLOW_FAIL (1u << 12)

static int wait_trap(struct rst_ctx *ctx, pid_t tid) {
  tid = rst_hpid(ctx, tid);
  for (;;) {
    int st;
    pid_t w = waitpid(tid, &st, __WALL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return rst_fail(ctx, errno, "waitpid", tid);
    }
    if (!WIFSTOPPED(st)) return rst_fail(ctx, ESRCH, "task-died-during-injection", tid);
    int sig = WSTOPSIG(st);
    if ((st >> 16) == 0 && sig == SIGTRAP) return 0;
    if ((st >> 16) == 0 && (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL))
      return rst_fail(ctx, EFAULT, "injected-syscall-faulted", tid);
    /* Anything else (an event stop, a stray signal): suppress and go on. */
    if (ptrace(PTRACE_CONT, tid, 0, 0) < 0) return rst_fail(ctx, errno, "ptrace(CONT)", tid);
  }
}

int rst_inject(struct rst_ctx *ctx, pid_t tid, uint64_t insn, long nr, const uint64_t a[6], int64_t *ret) {
  return rst_inject_ex(ctx, tid, insn, nr, a, ret, 0);
}

/*
 * singlestep: `insn` is a bare `syscall` (e.g. one inside the restored [vdso]) with no int3 after it; the
 * single-step trap after the instruction brings the task back. This is how the trampoline is unmapped
 * last without a fault (a fault on a blocked SIGSEGV would reset the workload's SIGSEGV handler).
 */
int rst_inject_ex(struct rst_ctx *ctx, pid_t tid, uint64_t insn, long nr, const uint64_t a[6], int64_t *ret,
                  int singlestep) {
  struct user_regs_struct r;
  pid_t image_tid = tid;
  tid = rst_hpid(ctx, tid);
  if (ptrace(PTRACE_GETREGS, tid, 0, &r) < 0) return rst_fail(ctx, errno, "ptrace(GETREGS)", tid);
  r.rip = insn;
  r.rax = (uint64_t)nr;
  r.orig_rax = (uint64_t)-1;
  r.rdi = a[0], r.rsi = a[1], r.rdx = a[2], r.r10 = a[3], r.r8 = a[4], r.r9 = a[5];
  if (ptrace(PTRACE_SETREGS, tid, 0, &r) < 0) return rst_fail(ctx, errno, "ptrace(SETREGS)", tid);
  if (ptrace(singlestep ? PTRACE_SINGLESTEP : PTRACE_CONT, tid, 0, 0) < 0)
    return rst_fail(ctx, errno, singlestep ? "ptrace(SINGLESTEP)" : "ptrace(CONT)", tid);
  int rc = wait_trap(ctx, image_tid);
  if (rc) return rc;
  if (ptrace(PTRACE_GETREGS, tid, 0, &r) < 0) return rst_fail(ctx, errno, "ptrace(GETREGS)", tid);
  *ret = (int64_t)r.rax;
  return 0;
}

static int write_remote(struct rst_ctx *ctx, pid_t pid, uint64_t addr, const void *src, size_t len) {
  struct iovec l = {(void *)src, len}, r = {(void *)(uintptr_t)addr, len};
  ssize_t n = process_vm_writev(rst_hpid(ctx, pid), &l, 1, &r, 1, 0);
  if (n < 0) return rst_fail(ctx, errno, "process_vm_writev", pid);
  if ((size_t)n != len) return rst_fail(ctx, EFAULT, "process_vm_writev", pid);
  return 0;
}

int rst_trampoline(struct rst_ctx *ctx, struct rst_task *t, const uint64_t *hints, uint32_t nhints, uint64_t size) {
  if (t->tramp) return rst_fail(ctx, EEXIST, "trampoline", t->pid);
  if (size < 2 * TRAMP_CODE || size > (64u << 20)) return rst_fail(ctx, EINVAL, "trampoline", t->pid);
  uint64_t insn = (uint64_t)(uintptr_t)rst_syscall_insn;
  for (uint32_t i = 0; i < nhints; i++) {
    uint64_t a[6] = {hints[i], size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                     (uint64_t)-1, 0};
    int64_t ret;
    int rc = rst_inject(ctx, t->pid, insn, __NR_mmap, a, &ret);
    if (rc) return rc;
    if (ret == -EEXIST) continue;
    if (ret < 0 && ret > -4096) return rst_fail(ctx, (int)-ret, "mmap(trampoline)", t->pid);
    if ((uint64_t)ret != hints[i]) return rst_fail(ctx, EADDRNOTAVAIL, "mmap(trampoline)", t->pid);
    static const uint8_t code[] = {0x0f, 0x05, 0xcc}; /* syscall; int3 */
    rc = write_remote(ctx, t->pid, hints[i], code, sizeof code);
    if (rc) return rc;
    uint64_t m[6] = {hints[i], TRAMP_CODE, PROT_READ | PROT_EXEC, 0, 0, 0};
    rc = rst_inject(ctx, t->pid, insn, __NR_mprotect, m, &ret);
    if (rc) return rc;
    if (ret < 0) return rst_fail(ctx, (int)-ret, "mprotect(trampoline)", t->pid);
    t->tramp = hints[i];
    t->tramp_size = size;
    return 0;
  }
  return rst_fail(ctx, EADDRINUSE, "mmap(trampoline)", t->pid);
}

/*
 * A batch: i32 tid | u32 ncalls | u32 scratch_len | scratch | ncalls x (u32 nr | u32 flags | u64 args[6]).
 * flags: 2 bits per argument (immediate, scratch base + value, result of call #value), ALLOW_FAIL.
 * Answer: u32 ndone | i64 results[ndone]. The first failing call (not ALLOW_FAIL) ends the batch with its errno.
 */
int rst_syscalls(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint8_t **out, size_t *outlen) {
  int32_t tid;
  uint32_t ncalls, slen;
  if (n < 12) return rst_fail(ctx, EINVAL, "syscalls-request", 0);
  memcpy(&tid, p, 4);
  memcpy(&ncalls, p + 4, 4);
  memcpy(&slen, p + 8, 4);
  p += 12;
  n -= 12;
  if (slen > n || (n - slen) / 56 < ncalls) return rst_fail(ctx, EINVAL, "syscalls-request", tid);
  struct rst_thread *th = rst_thread_find(ctx, tid);
  if (!th || !th->seized || th->detached) return rst_fail(ctx, ESRCH, "syscalls-request", tid);
  struct rst_task *t = rst_task_find(ctx, th->tgid);
  uint64_t insn = t->tramp ? t->tramp : (uint64_t)(uintptr_t)rst_syscall_insn;
  uint64_t scratch = t->tramp ? t->tramp + TRAMP_CODE : 0;
  if (slen) {
    if (!scratch || slen > t->tramp_size - TRAMP_CODE) return rst_fail(ctx, E2BIG, "syscalls-scratch", tid);
    int rc = write_remote(ctx, tid, scratch, p, slen);
    if (rc) return rc;
  }
  const uint8_t *calls = p + slen;
  int64_t *res = calloc(ncalls + 1, sizeof *res);
  if (!res) return rst_fail(ctx, ENOMEM, "calloc", tid);
  uint32_t done = 0;
  int rc = 0;
  for (; done < ncalls; done++) {
    uint32_t nr, flags;
    uint64_t a[6];
    memcpy(&nr, calls + 56 * done, 4);
    memcpy(&flags, calls + 56 * done + 4, 4);
    memcpy(a, calls + 56 * done + 8, 48);
    for (int k = 0; k < 6; k++) {
      unsigned kind = (flags >> (2 * k)) & 3;
      if (kind == ARG_SCRATCH) a[k] += scratch;
      else if (kind == ARG_RESULT) {
        if (a[k] >= done) {
          rc = rst_fail(ctx, EINVAL, "syscalls-request", tid);
          break;
        }
        a[k] = (uint64_t)res[a[k]];
      }
    }
    if (rc) break;
    rc = rst_inject(ctx, tid, insn, nr, a, &res[done]);
    if (rc) break;
    if (res[done] < 0 && res[done] > -4096 && !(flags & CALL_ALLOW_FAIL)) {
      rc = rst_fail(ctx, (int)-res[done], "injected", tid);
      break;
    }
  }
  /* Even on failure the caller learns which call failed: ndone + results so far. */
  size_t len = 4 + 8ull * done;
  uint8_t *o = malloc(len);
  if (!o) {
    free(res);
    return rst_fail(ctx, ENOMEM, "malloc", tid);
  }
  memcpy(o, &done, 4);
  memcpy(o + 4, res, 8ull * done);
  free(res);
  *out = o;
  *outlen = len;
  return rc;
}

/* i32 tid | u32 nr | u64 insn | u64 args[6]: one call single-stepped over a bare `syscall` at insn. */
int rst_syscall_at(struct rst_ctx *ctx, const uint8_t *p, size_t n, int64_t *ret) {
  int32_t tid;
  uint32_t nr;
  uint64_t insn, a[6];
  if (n < 64) return rst_fail(ctx, EINVAL, "syscall-at-request", 0);
  memcpy(&tid, p, 4);
  memcpy(&nr, p + 4, 4);
  memcpy(&insn, p + 8, 8);
  memcpy(a, p + 16, 48);
  struct rst_thread *th = rst_thread_find(ctx, tid);
  if (!th || !th->seized || th->detached) return rst_fail(ctx, ESRCH, "syscall-at-request", tid);
  int rc = rst_inject_ex(ctx, tid, insn, nr, a, ret, 1);
  if (rc) return rc;
  if (*ret < 0 && *ret > -4096) return rst_fail(ctx, (int)-*ret, "injected", tid);
  return 0;
}

/* i32 pid | u64 start | u64 end: the address of a `syscall` instruction (0f 05) in that range of the task. */
int rst_find_syscall(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint64_t *addr) {
  int32_t pid;
  uint64_t start, end;
  if (n < 20) return rst_fail(ctx, EINVAL, "find-syscall-request", 0);
  memcpy(&pid, p, 4);
  memcpy(&start, p + 4, 8);
  memcpy(&end, p + 12, 8);
  if (end <= start || end - start > (1u << 20)) return rst_fail(ctx, EINVAL, "find-syscall-request", pid);
  size_t len = (size_t)(end - start);
  uint8_t *b = malloc(len);
  if (!b) return rst_fail(ctx, ENOMEM, "malloc", pid);
  struct iovec l = {b, len}, r = {(void *)(uintptr_t)start, len};
  ssize_t got = process_vm_readv(rst_hpid(ctx, pid), &l, 1, &r, 1, 0);
  if (got < 0) {
    int e = errno;
    free(b);
    return rst_fail(ctx, e, "process_vm_readv", pid);
  }
  for (ssize_t i = 0; i + 1 < got; i++)
    if (b[i] == 0x0f && b[i + 1] == 0x05) {
      *addr = start + (uint64_t)i;
      free(b);
      return 0;
    }
  free(b);
  return rst_fail(ctx, ENOENT, "find-syscall", pid);
}

/* Unregisters whatever rseq area the stub inherited from us (glibc's): it lives in memory about to go. */
int rst_rseq_unregister(struct rst_ctx *ctx, pid_t tid) {
  struct {
    uint64_t ptr;
    uint32_t size, sig, flags, pad;
  } conf;
  memset(&conf, 0, sizeof conf);
  long r = ptrace(0x420f /* PTRACE_GET_RSEQ_CONFIGURATION */, rst_hpid(ctx, tid), sizeof conf, &conf);
  if (r < 0) return rst_fail(ctx, errno, "ptrace(GET_RSEQ_CONFIGURATION)", tid);
  if (!conf.ptr) return 0;
  uint64_t a[6] = {conf.ptr, conf.size, 1 /* RSEQ_FLAG_UNREGISTER */, conf.sig, 0, 0};
  int64_t ret;
  int rc = rst_inject(ctx, tid, (uint64_t)(uintptr_t)rst_syscall_insn, __NR_rseq, a, &ret);
  if (rc) return rc;
  if (ret < 0) return rst_fail(ctx, (int)-ret, "rseq(UNREGISTER)", tid);
  return 0;
}

/*
 * The same batch format run in the restorer itself (tid ignored): how file objects the restored tasks will
 * share are made (eventfd, signalfd, timerfd, inotify, sockets...). Answer: u32 ndone | i64 results[ndone] |
 * the scratch area after the calls (outputs such as socketpair's fds).
 */
int rst_local(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint8_t **out, size_t *outlen) {
  uint32_t ncalls, slen;
  if (n < 12) return rst_fail(ctx, EINVAL, "local-request", 0);
  memcpy(&ncalls, p + 4, 4);
  memcpy(&slen, p + 8, 4);
  p += 12;
  n -= 12;
  if (slen > n || (n - slen) / 56 < ncalls) return rst_fail(ctx, EINVAL, "local-request", 0);
  uint8_t *scratch = calloc(1, slen + 8);
  int64_t *res = calloc(ncalls + 1, sizeof *res);
  if (!scratch || !res) {
    free(scratch);
    free(res);
    return rst_fail(ctx, ENOMEM, "calloc", 0);
  }
  memcpy(scratch, p, slen);
  const uint8_t *calls = p + slen;
  uint32_t done = 0;
  int rc = 0;
  for (; done < ncalls; done++) {
    uint32_t nr, flags;
    uint64_t a[6];
    memcpy(&nr, calls + 56 * done, 4);
    memcpy(&flags, calls + 56 * done + 4, 4);
    memcpy(a, calls + 56 * done + 8, 48);
    for (int k = 0; k < 6 && !rc; k++) {
      unsigned kind = (flags >> (2 * k)) & 3;
      if (kind == ARG_SCRATCH) {
        if (a[k] > slen) rc = rst_fail(ctx, EINVAL, "local-request", 0);
        else a[k] += (uint64_t)(uintptr_t)scratch;
      } else if (kind == ARG_RESULT) {
        if (a[k] >= done) rc = rst_fail(ctx, EINVAL, "local-request", 0);
        else a[k] = (uint64_t)res[a[k]];
      }
    }
    if (rc) break;
    long r = syscall((long)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    res[done] = r < 0 ? -errno : r;
    if (r < 0 && !(flags & CALL_ALLOW_FAIL)) {
      rc = rst_fail(ctx, errno, "injected", 0);
      break;
    }
  }
  size_t len = 4 + 8ull * done + slen;
  uint8_t *o = malloc(len);
  if (!o) {
    free(scratch);
    free(res);
    return rst_fail(ctx, ENOMEM, "malloc", 0);
  }
  memcpy(o, &done, 4);
  memcpy(o + 4, res, 8ull * done);
  memcpy(o + 4 + 8ull * done, scratch, slen);
  free(scratch);
  free(res);
  *out = o;
  *outlen = len;
  return rc;
}
