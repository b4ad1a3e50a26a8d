/*
 * godwit-restorer entry: optional new PID namespace (we become its PID 1), then the request loop.
 * See rst.h for why this is its own executable and for the wire format.
 */
#include "rst.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTL_FD 3
#define BULK_FD 4

int rst_fail(struct rst_ctx *ctx, int err, const char *syscall, int pid) {
  ctx->err.err = err;
  ctx->err.pid = pid;
  snprintf(ctx->err.syscall, sizeof ctx->err.syscall, "%s", syscall);
  return -err;
}

static int read_full(int fd, void *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, (char *)buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  size_t put = 0;
  while (put < len) {
    ssize_t w = write(fd, (const char *)buf + put, len - put);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

static int respond(struct rst_ctx *ctx, const void *payload, size_t plen) {
  uint8_t hdr[4 + 4 + 4 + 24];
  uint32_t len = (uint32_t)(sizeof hdr - 4 + plen);
  int32_t err = ctx->err.err, pid = ctx->err.pid;
  memcpy(hdr, &len, 4);
  memcpy(hdr + 4, &err, 4);
  memcpy(hdr + 8, &pid, 4);
  memcpy(hdr + 12, ctx->err.syscall, 24);
  if (write_full(ctx->ctl, hdr, sizeof hdr) || (plen && write_full(ctx->ctl, payload, plen))) return -1;
  memset(&ctx->err, 0, sizeof ctx->err);
  return 0;
}

static int op_open(struct rst_ctx *ctx, const uint8_t *p, size_t n, int32_t *fd) {
  int32_t flags;
  uint32_t mode, setpos;
  uint64_t pos;
  if (n < 21 || p[n - 1] != 0) return rst_fail(ctx, EINVAL, "open-request", 0);
  memcpy(&flags, p, 4);
  memcpy(&mode, p + 4, 4);
  memcpy(&setpos, p + 8, 4);
  memcpy(&pos, p + 12, 8);
  const char *path = (const char *)p + 20;
  /* A file of the host (the image directory, our /proc/self) comes as a relative path: our cwd is the root
   * we started in (main()). Bit 2 used to ask for that: a stale caller must fail, not open the tree's view. */
  if (setpos & ~1u) return rst_fail(ctx, EINVAL, "open-request", 0);
  /* O_NOCTTY: a terminal reopened by path (a console, a virtual terminal) must not become ours. */
  *fd = open(path, flags | O_CLOEXEC | O_NOCTTY, mode);
  if (*fd < 0) return rst_fail(ctx, errno, "open", 0);
  if ((setpos & 1) && lseek(*fd, (off_t)pos, SEEK_SET) < 0) {
    int e = errno;
    close(*fd);
    return rst_fail(ctx, e, "lseek", 0);
  }
  return 0;
}

/*
 * Host PIDs of the tasks: a pidfd's fdinfo shows the pid as the procfs instance reading it sees it, and our
 * /proc is the host's, so this works from inside a new PID namespace too. Answer: i32 per task, -1 if unknown.
 */
static int host_pids(struct rst_ctx *ctx, int32_t *out) {
  for (uint32_t i = 0; i < ctx->ntasks; i++) {
    out[i] = -1;
    int pfd = (int)syscall(SYS_pidfd_open, rst_hpid(ctx, ctx->tasks[i].pid), 0);
    if (pfd < 0) return rst_fail(ctx, errno, "pidfd_open", ctx->tasks[i].pid);
    char path[64], buf[1024];
    snprintf(path, sizeof path, "proc/self/fdinfo/%d", pfd); /* the host's /proc: relative to our cwd */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    close(pfd);
    if (n <= 0) return rst_fail(ctx, errno ? errno : EIO, "read(pidfd fdinfo)", ctx->tasks[i].pid);
    buf[n] = 0;
    char *pl = strstr(buf, "\nPid:");
    if (pl) out[i] = (int32_t)strtol(pl + 5, NULL, 10);
  }
  return 0;
}

/* The tree is handed over: reap as PID 1 (or subreaper) until the root exits; returns its wait status. */
static int wait_root(struct rst_ctx *ctx) {
  for (;;) {
    int st;
    pid_t w = waitpid(-1, &st, __WALL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    if (w == ctx->root) return st;
  }
}

static void serve(struct rst_ctx *ctx) {
  for (;;) {
    uint32_t hdr[2];
    if (read_full(ctx->ctl, hdr, sizeof hdr)) break;
    uint32_t len = hdr[0], op = hdr[1];
    if (len < 4 || len - 4 > RST_MAX_REQ) {
      rst_fail(ctx, EMSGSIZE, "request", 0);
      respond(ctx, NULL, 0);
      break;
    }
    size_t n = len - 4;
    uint8_t *p = malloc(n ? n : 1);
    if (!p || read_full(ctx->ctl, p, n)) {
      free(p);
      break;
    }
    uint8_t small[64];
    uint8_t *out = NULL;
    size_t outlen = 0;
    int32_t i32[2];
    switch (op) {
    case OP_HELLO: {
      int32_t self = ctx->self;
      uint64_t insn = (uint64_t)(uintptr_t)rst_syscall_insn;
      memcpy(small, &self, 4);
      memcpy(small + 4, &insn, 8);
      out = small, outlen = 12;
      break;
    }
    case OP_TREE:
      if (rst_tree_create(ctx, p, n)) rst_tree_kill(ctx);
      break;
    case OP_TRAMPOLINE: {
      int32_t pid;
      uint32_t nh;
      uint64_t size;
      if (n < 16) { rst_fail(ctx, EINVAL, "trampoline-request", 0); break; }
      memcpy(&pid, p, 4);
      memcpy(&nh, p + 4, 4);
      memcpy(&size, p + 8, 8);
      struct rst_task *t = rst_task_find(ctx, pid);
      if (!t) { rst_fail(ctx, ESRCH, "trampoline-request", pid); break; }
      if ((n - 16) / 8 < nh) { rst_fail(ctx, EINVAL, "trampoline-request", pid); break; }
      uint64_t *hints = malloc(8ull * nh + 8);
      if (!hints) { rst_fail(ctx, ENOMEM, "malloc", pid); break; }
      memcpy(hints, p + 16, 8ull * nh);
      if (rst_trampoline(ctx, t, hints, nh, size) == 0) {
        memcpy(small, &t->tramp, 8);
        out = small, outlen = 8;
      }
      free(hints);
      break;
    }
    case OP_SYSCALLS:
    case OP_LOCAL: {
      uint8_t *o = NULL;
      size_t ol = 0;
      if (op == OP_LOCAL) rst_local(ctx, p, n, &o, &ol);
      else rst_syscalls(ctx, p, n, &o, &ol);
      if (respond(ctx, o, ol)) { free(o); free(p); goto eof; }
      free(o);
      free(p);
      continue;
    }
    case OP_SYSCALL_AT: {
      int64_t r;
      if (rst_syscall_at(ctx, p, n, &r) == 0) memcpy(small, &r, 8), out = small, outlen = 8;
      break;
    }
    case OP_FIND_SYSCALL: {
      uint64_t a;
      if (rst_find_syscall(ctx, p, n, &a) == 0) memcpy(small, &a, 8), out = small, outlen = 8;
      break;
    }
    case OP_HOST_PIDS: {
      int32_t *hp = calloc(ctx->ntasks + 1, sizeof *hp);
      if (!hp) { rst_fail(ctx, ENOMEM, "calloc", 0); break; }
      if (host_pids(ctx, hp) == 0) respond(ctx, hp, 4ull * ctx->ntasks);
      else respond(ctx, NULL, 0);
      free(hp);
      free(p);
      continue;
    }
    case OP_UFFD:
      rst_uffd(ctx, p, n);
      break;
    case OP_LOAD_PAGES: {
      uint8_t lp[RST_LOAD_PAGES_OUT];
      size_t ll = 0;
      rst_load_pages(ctx, p, n, lp, &ll);
      free(p);
      if (respond(ctx, lp, ll)) goto eof;
      continue;
    }
    case OP_OPEN:
      if (op_open(ctx, p, n, &i32[0]) == 0) out = (uint8_t *)i32, outlen = 4;
      break;
    case OP_PIPE:
      if (pipe2(i32, O_CLOEXEC) < 0) rst_fail(ctx, errno, "pipe2", 0);
      else out = (uint8_t *)i32, outlen = 8;
      break;
    case OP_SOCKETPAIR: {
      int32_t type;
      if (n < 4) { rst_fail(ctx, EINVAL, "socketpair-request", 0); break; }
      memcpy(&type, p, 4);
      if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, i32) < 0) rst_fail(ctx, errno, "socketpair", 0);
      else out = (uint8_t *)i32, outlen = 8;
      break;
    }
    case OP_WRITE_FD: {
      int32_t fd;
      if (n < 4) { rst_fail(ctx, EINVAL, "write-fd-request", 0); break; }
      memcpy(&fd, p, 4);
      if (write_full(fd, p + 4, n - 4)) rst_fail(ctx, errno, "write", 0);
      break;
    }
    case OP_CLOSE:
      for (size_t k = 0; k + 4 <= n; k += 4) {
        int32_t fd;
        memcpy(&fd, p + k, 4);
        if (fd > BULK_FD) close(fd);
      }
      break;
    case OP_FCNTL: {
      int32_t fd, cmd;
      int64_t arg;
      if (n < 16) { rst_fail(ctx, EINVAL, "fcntl-request", 0); break; }
      memcpy(&fd, p, 4);
      memcpy(&cmd, p + 4, 4);
      memcpy(&arg, p + 8, 8);
      int r = fcntl(fd, cmd, (long)arg);
      if (r < 0) rst_fail(ctx, errno, "fcntl", 0);
      else i32[0] = r, out = (uint8_t *)i32, outlen = 4;
      break;
    }
    case OP_SETREGS:
      rst_setregs(ctx, p, n);
      break;
    case OP_PRLIMIT: {
      int32_t pid;
      uint32_t res;
      struct rlimit64 rl;
      if (n < 24) { rst_fail(ctx, EINVAL, "prlimit-request", 0); break; }
      memcpy(&pid, p, 4);
      memcpy(&res, p + 4, 4);
      memcpy(&rl.rlim_cur, p + 8, 8);
      memcpy(&rl.rlim_max, p + 16, 8);
      if (prlimit64(rst_hpid(ctx, pid), (int)res, &rl, NULL) < 0) rst_fail(ctx, errno, "prlimit64", pid);
      break;
    }
    case OP_XSTATE_INFO: {
      int32_t tid;
      static uint8_t xb[16384];
      size_t xl = sizeof xb;
      if (n < 4) { rst_fail(ctx, EINVAL, "xstate-request", 0); break; }
      memcpy(&tid, p, 4);
      if (rst_xstate_info(ctx, tid, xb, &xl) == 0) out = xb, outlen = xl;
      break;
    }
    case OP_RESUME:
      for (uint32_t k = 0; k < ctx->nthreads; k++) {
        struct rst_thread *th = &ctx->threads[k];
        if (th->seized && !th->detached && ptrace(PTRACE_DETACH, rst_hpid(ctx, th->tid), 0, 0) < 0) {
          rst_fail(ctx, errno, "ptrace(DETACH)", th->tid);
          break;
        }
        th->detached = 1;
      }
      if (!ctx->err.err) ctx->resumed = 1;
      break;
    case OP_WAIT:
      if (!ctx->resumed) { rst_fail(ctx, EINVAL, "wait-before-resume", 0); break; }
      i32[0] = wait_root(ctx);
      out = (uint8_t *)i32, outlen = 4;
      ctx->root = 0;
      break;
    case OP_KILL:
      rst_tree_kill(ctx);
      break;
    case OP_CONTAINER:
      if (rst_container(ctx, p, n, &i32[0]) == 0) out = (uint8_t *)i32, outlen = 4;
      break;
    default:
      rst_fail(ctx, EOPNOTSUPP, "request", 0);
    }
    free(p);
    if (respond(ctx, out, outlen)) break;
  }
eof:
  /* Control channel closed. Before resume that means the restore failed: nothing half-made may live on. */
  if (!ctx->resumed) {
    rst_tree_kill(ctx);
    _exit(1);
  }
  if (ctx->root > 0) {
    /*
     * Detached: stay the tree's reaper for as long as its root lives (in a new namespace we are its init; in
     * the host's we are the root's parent and a subreaper), so nothing it leaves becomes a lingering zombie.
     */
    int st = wait_root(ctx);
    _exit(st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (st >= 0 ? WTERMSIG(st) : 0));
  }
  _exit(0);
}

int main(int argc, char **argv) {
  struct rst_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.ctl = CTL_FD;
  ctx.bulk = BULK_FD;
  ctx.keep_pidfd = -1;
  ctx.task_userns = -1;
  const char *task_userns = NULL;
  const char *join[8];
  int njoin = 0;
  const char *cgroups[16];
  int ncg = 0;
  int timens = 0;
  long long timens_mono = 0, timens_boot = 0;
  for (int i = 1; i < argc; i++) {
    /* Container restore: namespaces to join (files under /proc/HOLDER/ns) and cgroup.procs files for the root. */
    if (!strcmp(argv[i], "--setns") && i + 1 < argc && njoin < 8) {
      join[njoin++] = argv[++i];
      continue;
    }
    /* A user namespace the tasks join themselves (rst.h task_userns): opened now, joined by each stub. */
    if (!strcmp(argv[i], "--task-userns") && i + 1 < argc) {
      task_userns = argv[++i];
      continue;
    }
    /* A time namespace of the container's own: the clocks (ns) it showed at dump time, to continue from. */
    if (!strcmp(argv[i], "--timens") && i + 2 < argc) {
      char *e1, *e2;
      timens_mono = strtoll(argv[i + 1], &e1, 10);
      timens_boot = strtoll(argv[i + 2], &e2, 10);
      if (*e1 || *e2 || timens_mono < 0 || timens_boot < 0) {
        fprintf(stderr, "godwit-restorer: --timens wants two clock values in ns, got %s %s\n", argv[i + 1], argv[i + 2]);
        return 2;
      }
      timens = 1;
      i += 2;
      continue;
    }
    if (!strcmp(argv[i], "--cgroup") && i + 1 < argc && ncg < 16) {
      cgroups[ncg++] = argv[++i];
      continue;
    }
    if (!strcmp(argv[i], "--xcr0")) {
      /* The xsave features this CPU + kernel enable, for the preflight check of an image's xsave state. */
      uint32_t lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      unsigned long long xcr0 = ((unsigned long long)hi << 32) | lo;
      uint32_t a, b, c, d;
      __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(0));
      printf("{\"xcr0\": %llu, \"size\": %u, \"components\": {", xcr0, b);
      /* Standard-format offset and size of each enabled extended component (CPUID leaf 0xD). */
      const char *sep = "";
      for (int k = 2; k < 64; k++) {
        if (!(xcr0 & (1ull << k))) continue;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(k));
        printf("%s\"%d\": [%u, %u]", sep, k, b, a);
        sep = ", ";
      }
      printf("}}\n");
      return 0;
    }
    if (!strcmp(argv[i], "--bench-writev") && i + 1 < argc) return rst_bench_writev(strtoul(argv[i + 1], NULL, 10));
    if (!strcmp(argv[i], "--bench-uffd") && i + 1 < argc) return rst_bench_uffd(strtoul(argv[i + 1], NULL, 10));
    if (!strcmp(argv[i], "--reserve") && i + 1 < argc) return rst_reserve(strtoul(argv[i + 1], NULL, 10));
    if (!strcmp(argv[i], "--new-pidns")) ctx.new_pidns = 1;
    else {
      fprintf(stderr, "godwit-restorer: unknown argument %s (usage: godwit-restorer [--new-pidns] [--setns NSFILE]... [--timens MONO_NS BOOT_NS] [--task-userns NSFILE] [--cgroup PROCSFILE]..., fds 3+4)\n", argv[i]);
      return 2;
    }
  }
  if (fcntl(CTL_FD, F_GETFD) < 0 || fcntl(BULK_FD, F_GETFD) < 0) {
    fprintf(stderr, "godwit-restorer: fd 3 (control socket) and fd 4 (bulk pipe) must be open\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Whatever our parent leaked to us must not reach the restored tasks (stubs are forks of us). */
  syscall(SYS_close_range, BULK_FD + 1, ~0U, 0);
  for (int i = 0; i < ncg; i++) {
    ctx.cg_fds[i] = open(cgroups[i], O_WRONLY | O_CLOEXEC);
    if (ctx.cg_fds[i] < 0) {
      fprintf(stderr, "godwit-restorer: open %s: %s\n", cgroups[i], strerror(errno));
      return 1;
    }
    ctx.ncg = i + 1;
  }
  /* The host's root: our cwd for good once the namespaces are joined (below), the base of every host path. */
  ctx.host_root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (ctx.host_root < 0) {
    fprintf(stderr, "godwit-restorer: open /: %s\n", strerror(errno));
    return 1;
  }
  /* Open every namespace first: once in the container's mount namespace, /proc/HOLDER is out of reach. */
  if (task_userns) {
    /* Not O_CLOEXEC-sensitive: stubs are forks (no exec); each closes it with everything else when ready. */
    ctx.task_userns = open(task_userns, O_RDONLY | O_CLOEXEC);
    if (ctx.task_userns < 0) {
      fprintf(stderr, "godwit-restorer: open %s: %s\n", task_userns, strerror(errno));
      return 1;
    }
  }
  int nsfd[8];
  for (int i = 0; i < njoin; i++) {
    nsfd[i] = open(join[i], O_RDONLY | O_CLOEXEC);
    if (nsfd[i] < 0) {
      fprintf(stderr, "godwit-restorer: open %s: %s\n", join[i], strerror(errno));
      return 1;
    }
  }
  for (int i = 0; i < njoin; i++) {
    if (setns(nsfd[i], 0) < 0) {
      fprintf(stderr, "godwit-restorer: setns %s: %s\n", join[i], strerror(errno));
      return 1;
    }
    close(nsfd[i]);
  }
  if (timens) {
    char why[200];
    if (rst_enter_timens(ctx.host_root, timens_mono, timens_boot, why, sizeof why) < 0) {
      fprintf(stderr, "godwit-restorer: the container's time namespace: %s\n", why);
      return 1;
    }
  }
  /* Our cwd is the root we started in, for good (setns into a mount namespace moved it to that namespace's
   * root): a relative path is a path as the host sees it — the image directory, the host's /proc and our own
   * /proc/self there — while an absolute one is the restored tree's view ("/" and /proc are a container's).
   * restore/syscalls.ts hostPath() makes such paths, for OP_OPEN and for calls run here (runLocal). */
  if (fchdir(ctx.host_root) < 0) {
    fprintf(stderr, "godwit-restorer: fchdir to the root we started in: %s\n", strerror(errno));
    return 1;
  }
  if (!ctx.new_pidns) {
    /* Orphans of a half-made tree come back to us, so a failure can reap everything it created. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    ctx.self = getpid();
    serve(&ctx);
  }
  if (unshare(CLONE_NEWPID) < 0) {
    fprintf(stderr, "godwit-restorer: unshare(CLONE_NEWPID) failed: %s\n", strerror(errno));
    return 1;
  }
  pid_t init = fork();
  if (init < 0) {
    fprintf(stderr, "godwit-restorer: fork of the namespace init failed: %s\n", strerror(errno));
    return 1;
  }
  if (init == 0) {
    /* If the outer restorer is killed, so is this namespace (and everything restored into it). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ctx.self = 1;
    serve(&ctx);
  }
  close(CTL_FD);
  close(BULK_FD);
  int st;
  while (waitpid(init, &st, 0) < 0)
    if (errno != EINTR) return 1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
