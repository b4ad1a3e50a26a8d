/*
 * The process tree: stubs forked with clone3(set_tid) so every task and thread gets its dumped PID/TID.
 * Each stub is a fork of the restorer: it creates its own children (so ppid is right) and threads, reports
 * on the ready pipe, closes every fd it has and waits in pause() with all signals blocked. Never SIGSTOP:
 * a job-control stop would outlive PTRACE_DETACH. The restorer then seizes and interrupts every thread.
 */
#include "rst.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Injected syscalls must not meet the seccomp filters restore installs (restore/seccomp.ts). */
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

/* What a stub reports on the ready pipe; 12 bytes, so each write is atomic. */
struct ready_rec {
  int32_t pid;   /* reporting task */
  int32_t err;   /* 0 = ready, else errno */
  int32_t about; /* the pid/tid whose creation failed, or 0 */
};

#define STUB_THREAD_STACK (64 * 1024)
#define READY_TIMEOUT_MS 10000 /* a stub that neither reports nor dies within this is a bug: give up */

/* Thread stub: clone3 on a fresh stack; the child never returns into C, it loops in pause(). */
long rst_clone_thread(struct clone_args *args, size_t size);
__asm__(".pushsection .text\n"
        ".globl rst_clone_thread\n"
        "rst_clone_thread:\n"
        "  mov $435, %eax\n" /* SYS_clone3 */
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jnz 1f\n"
        "2: mov $34, %eax\n" /* SYS_pause */
        "  syscall\n"
        "  jmp 2b\n"
        "1: ret\n"
        ".popsection\n");

static void report(int fd, pid_t pid, int err, pid_t about) {
  struct ready_rec r = {pid, err, about};
  ssize_t n;
  do n = write(fd, &r, sizeof r);
  while (n < 0 && errno == EINTR);
}

/*
 * set_tid for a new task: its pid in its own namespace, and with a nested container namespace also in ours
 * (the same number, except the root: pid 1 inside, root_hpid here).
 */
static void want_tids(const struct rst_ctx *ctx, pid_t want, pid_t tids[2], __u64 *n) {
  tids[0] = want;
  tids[1] = rst_hpid(ctx, want);
  *n = ctx->nest ? 2 : 1;
}

static pid_t clone_pid(const struct rst_ctx *ctx, pid_t want, int newns) {
  struct clone_args a;
  pid_t tids[2];
  memset(&a, 0, sizeof a);
  a.exit_signal = SIGCHLD;
  if (newns) a.flags = CLONE_NEWPID;
  want_tids(ctx, want, tids, &a.set_tid_size);
  a.set_tid = (uint64_t)(uintptr_t)tids;
  return (pid_t)syscall(SYS_clone3, &a, sizeof a);
}

/* Every fd but the pidfd of the restorer a container's stubs keep (-1: none). */
static void close_all_but(int keep) {
  if (keep < 0) {
    syscall(SYS_close_range, 0, ~0U, 0);
    return;
  }
  if (keep > 0) syscall(SYS_close_range, 0, keep - 1, 0);
  syscall(SYS_close_range, keep + 1, ~0U, 0);
}

/* restore/mounts.ts MNT_REPLACE_PLACEHOLDER: the target holds a placeholder of the same kind (a bind of the host's
 * proc, there so that the kernel lets a user namespace's mount namespace have a new proc at all). */
#define RST_MNT_REPLACE (1ull << 40)

/* A new FSTYPE made detached, then swapped for the placeholder on TARGET; returns 0 or an errno. */
static int mount_replacing(const char *fstype, const char *target, unsigned long flags) {
  int fs = fsopen(fstype, FSOPEN_CLOEXEC);
  if (fs < 0) return errno;
  if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
    int e = errno;
    close(fs);
    return e;
  }
  unsigned attr = (flags & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) | (flags & MS_NODEV ? MOUNT_ATTR_NODEV : 0) |
                  (flags & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0) | (flags & MS_RDONLY ? MOUNT_ATTR_RDONLY : 0);
  int m = fsmount(fs, FSMOUNT_CLOEXEC, attr);
  int e = errno;
  close(fs);
  if (m < 0) return e;
  int r = umount2(target, MNT_DETACH) < 0 ? errno : 0;
  if (!r && move_mount(m, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) r = errno;
  close(m);
  return r;
}

/*
 * The container root, first thing in its own pid namespace: join the container's cgroups, then mount what
 * must belong to this pid namespace (proc, and the masks bound over parts of it). Records: u64 flags, then
 * source, target, fstype, data as NUL-terminated strings (empty = NULL).
 */
static int root_setup(struct rst_ctx *ctx, pid_t *about) {
  for (int i = 0; i < ctx->ncg; i++) {
    if (write(ctx->cg_fds[i], "0\n", 2) != 2) return errno ? errno : EIO;
    close(ctx->cg_fds[i]);
  }
  ctx->ncg = 0;
  const uint8_t *p = ctx->mounts, *end = ctx->mounts + ctx->mounts_len;
  while (p && p + 8 < end) {
    uint64_t flags;
    memcpy(&flags, p, 8);
    p += 8;
    const char *f[4];
    for (int k = 0; k < 4; k++) {
      const uint8_t *z = memchr(p, 0, (size_t)(end - p));
      if (!z) return EINVAL;
      f[k] = (const char *)p;
      p = z + 1;
    }
    if (flags & RST_MNT_REPLACE) {
      int e = mount_replacing(f[2], f[1], (unsigned long)(flags & ~RST_MNT_REPLACE));
      if (e) {
        *about = 1;
        return e;
      }
      continue;
    }
    if (mount(f[0][0] ? f[0] : NULL, f[1], f[2][0] ? f[2] : NULL, (unsigned long)flags, f[3][0] ? f[3] : NULL) < 0) {
      *about = 1;
      return errno;
    }
  }
  return 0;
}

static void stub_main(struct rst_ctx *ctx, uint32_t idx, int ready, pid_t creator) __attribute__((noreturn));

/* The session task i must be born into (0: any will do): its own if it does not lead one; if it does, the one
 * some descendant kept from before its setsid(). restore/preflight.ts computes the same and refuses trees where
 * the parent cannot be born there either (they would need CRIU's helper tasks). */
static pid_t born_need(struct rst_ctx *ctx, uint32_t i) {
  struct rst_task *t = &ctx->tasks[i];
  if (t->sid != t->pid) return t->sid;
  for (uint32_t k = 0; k < ctx->ntasks; k++) {
    if (k == i || ctx->tasks[k].ppid != t->pid) continue;
    pid_t n = born_need(ctx, k);
    if (n && n != t->sid) return n;
  }
  return 0;
}

/* Child k of session leader `parent` must be forked before the parent's setsid(): it needs the old session. */
static int keeps_old_session(struct rst_ctx *ctx, const struct rst_task *parent, uint32_t k) {
  if (parent->sid != parent->pid) return 0;
  pid_t n = born_need(ctx, k);
  return n && n != parent->sid;
}

/*
 * Child i is in a process group whose leader is gone (zdtm zombie01: a zombie in the group of a child that exited).
 * A group exists only while a member does, and a task can only join one that exists: a helper takes the group's
 * pid, makes the group (setpgid), forks the child into it with CLONE_PARENT (so its parent is still `parent`) and
 * exits; `parent` reaps the helper at once. A zombie needs this: it ends right after its fork and joins nothing
 * later. The helper is forked where the child would be, so it is in the session the child must be born into.
 */
static void fork_through_group_helper(struct rst_ctx *ctx, struct rst_task *parent, uint32_t i, int ready, pid_t self) {
  pid_t g = ctx->tasks[i].group_helper;
  pid_t h = clone_pid(ctx, g, 0);
  if (h < 0) {
    report(ready, parent->pid, errno, g);
    _exit(1);
  }
  if (h == 0) {
    if (setpgid(0, 0) < 0) {
      report(ready, parent->pid, errno, ctx->tasks[i].pid);
      _exit(1);
    }
    struct clone_args a;
    pid_t tids[2];
    memset(&a, 0, sizeof a);
    a.flags = CLONE_PARENT; /* exit_signal stays 0: clone3 takes the helper's own (SIGCHLD), refuses any other */
    want_tids(ctx, ctx->tasks[i].pid, tids, &a.set_tid_size);
    a.set_tid = (uint64_t)(uintptr_t)tids;
    pid_t c = (pid_t)syscall(SYS_clone3, &a, sizeof a);
    if (c == 0) stub_main(ctx, i, ready, self);
    if (c < 0) {
      report(ready, parent->pid, errno, ctx->tasks[i].pid);
      _exit(1);
    }
    _exit(0);
  }
  int st;
  while (waitpid(h, &st, __WALL) < 0)
    if (errno != EINTR) {
      report(ready, parent->pid, errno, g);
      _exit(1);
    }
  if (!WIFEXITED(st) || WEXITSTATUS(st)) _exit(1); /* the helper reported why */
}

/* Forks the children of task idx (early: those that keep the old session, before setsid; else the others). */
static void fork_children(struct rst_ctx *ctx, uint32_t idx, int ready, int early) {
  struct rst_task *t = &ctx->tasks[idx];
  for (uint32_t i = 0; i < ctx->ntasks; i++) {
    if (ctx->tasks[i].ppid != t->pid || i == idx) continue;
    if (keeps_old_session(ctx, t, i) != early) continue;
    pid_t self = getpid();
    if (ctx->tasks[i].group_helper) {
      fork_through_group_helper(ctx, t, i, ready, self);
      continue;
    }
    pid_t c = clone_pid(ctx, ctx->tasks[i].pid, 0);
    if (c == 0) stub_main(ctx, i, ready, self);
    if (c < 0) {
      report(ready, t->pid, errno, ctx->tasks[i].pid);
      _exit(1);
    }
  }
}

static void stub_main(struct rst_ctx *ctx, uint32_t idx, int ready, pid_t creator) {
  struct rst_task *t = &ctx->tasks[idx];
  sigset_t all;
  /* Dies with its creator until the restore hands it over (cleared by the TS side before resume). Armed first,
   * then checked: a creator killed between clone3 and here never sends the signal (getppid() is 0 across a new
   * pid namespace, where the restorer's own death signal covers us). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pid_t pp = getppid();
  if (pp != 0 && pp != creator) _exit(1);
  /* Dispositions the workload did not set must be the defaults, not ours (we ignore SIGPIPE). */
  for (int sig = 1; sig < 65; sig++) signal(sig, SIG_DFL);
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  /* The restorer's cwd is the host's root (main.c): a container's task must not start out holding it. Its
   * own cwd is set later, like every task's. */
  if (chdir("/") < 0) {
    report(ready, t->pid, errno, t->pid);
    _exit(1);
  }
  if (idx == 0 && ctx->nest) {
    pid_t about = t->pid;
    int e = root_setup(ctx, &about);
    if (e) {
      report(ready, t->pid, e, -1);
      _exit(1);
    }
  }
  /* Children that stayed in the session this task was born into (it called setsid() after forking them) are
   * forked before our own setsid(). */
  if (t->sid == t->pid) fork_children(ctx, idx, ready, 1);
  if (t->sid == t->pid && setsid() < 0) {
    report(ready, t->pid, errno, t->pid);
    _exit(1);
  }
  if (t->ctty >= 0) {
    /* A session leader opening a terminal without O_NOCTTY takes it as its controlling terminal; the children
     * it forks below inherit it, as they did at dump time. */
    char path[32];
    snprintf(path, sizeof path, "/dev/pts/%d", t->ctty);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      report(ready, t->pid, errno, t->pid);
      _exit(1);
    }
    close(fd);
  }
  /* A console or virtual terminal: the restorer opened it (O_NOCTTY) before forking us; its fd is ours too. */
  if (t->ctty_fd >= 0 && ioctl(t->ctty_fd, TIOCSCTTY, 0) < 0) {
    report(ready, t->pid, errno, t->pid);
    _exit(1);
  }
  if (t->pgid == t->pid && t->sid != t->pid && setpgid(0, 0) < 0) {
    report(ready, t->pid, errno, t->pid);
    _exit(1);
  }
  fork_children(ctx, idx, ready, 0);
  /* --task-userns: our children are forked (set_tid needs the host's capabilities); now into the user namespace,
   * before the credentials are taken. setns(CLONE_NEWUSER) needs a single thread: threads would have to be
   * made before it with set_tid, which it forbids after (dump refuses such trees). */
  if (ctx->task_userns >= 0 && t->zombie < 0) {
    if (t->nthreads > 1) {
      report(ready, t->pid, EINVAL, -2);
      _exit(1);
    }
    if (syscall(SYS_setns, ctx->task_userns, CLONE_NEWUSER) < 0) {
      report(ready, t->pid, errno, -2);
      _exit(1);
    }
  }
  for (uint32_t k = 1; k < t->nthreads; k++) {
    pid_t want = ctx->threads[t->first_thread + k].tid;
    void *stack = mmap(NULL, STUB_THREAD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED) {
      report(ready, t->pid, errno, want);
      _exit(1);
    }
    struct clone_args a;
    memset(&a, 0, sizeof a);
    a.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    a.stack = (uint64_t)(uintptr_t)stack;
    a.stack_size = STUB_THREAD_STACK;
    pid_t tids[2];
    want_tids(ctx, want, tids, &a.set_tid_size);
    a.set_tid = (uint64_t)(uintptr_t)tids;
    long r = rst_clone_thread(&a, sizeof a);
    if (r < 0) {
      report(ready, t->pid, (int)-r, want);
      _exit(1);
    }
  }
  report(ready, t->pid, 0, 0);
  if (t->zombie >= 0) {
    /* A zombie at dump time: end the same way; the parent stub never reaps, so it stays a zombie. */
    if (WIFSIGNALED(t->zombie)) {
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, WTERMSIG(t->zombie));
      signal(WTERMSIG(t->zombie), SIG_DFL);
      sigprocmask(SIG_UNBLOCK, &one, NULL);
      raise(WTERMSIG(t->zombie));
    }
    _exit(WEXITSTATUS(t->zombie));
  }
  /* Nothing of the restorer may leak into the workload: its fds come back one by one later. */
  close_all_but(ctx->keep_pidfd);
  for (;;) pause();
}

struct rst_task *rst_task_find(struct rst_ctx *ctx, pid_t pid) {
  for (uint32_t i = 0; i < ctx->ntasks; i++)
    if (ctx->tasks[i].pid == pid) return &ctx->tasks[i];
  return NULL;
}

struct rst_thread *rst_thread_find(struct rst_ctx *ctx, pid_t tid) {
  for (uint32_t i = 0; i < ctx->nthreads; i++)
    if (ctx->threads[i].tid == tid) return &ctx->threads[i];
  return NULL;
}

static int parse_tree(struct rst_ctx *ctx, const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  uint32_t ntasks;
  if (n < 4) return rst_fail(ctx, EINVAL, "tree-request", 0);
  memcpy(&ntasks, p, 4);
  p += 4;
  if (ntasks == 0 || ntasks > RST_MAX_TASKS) return rst_fail(ctx, EINVAL, "tree-request", 0);
  ctx->tasks = calloc(ntasks, sizeof *ctx->tasks);
  ctx->threads = calloc(RST_MAX_THREADS, sizeof *ctx->threads);
  if (!ctx->tasks || !ctx->threads) return rst_fail(ctx, ENOMEM, "calloc", 0);
  for (uint32_t i = 0; i < ntasks; i++) {
    int32_t h[7];
    if ((size_t)(end - p) < sizeof h) return rst_fail(ctx, EINVAL, "tree-request", 0);
    memcpy(h, p, sizeof h);
    p += sizeof h;
    struct rst_task *t = &ctx->tasks[i];
    t->pid = h[0], t->ppid = h[1], t->pgid = h[2], t->sid = h[3];
    t->nthreads = (uint32_t)h[4];
    t->zombie = h[5];
    t->group_helper = h[6];
    t->ctty = -1;
    t->ctty_fd = -1;
    t->uffd = -1;
    if (t->nthreads == 0 || t->nthreads > RST_MAX_THREADS - ctx->nthreads ||
        (size_t)(end - p) < 4ull * t->nthreads)
      return rst_fail(ctx, EINVAL, "tree-request", t->pid);
    t->first_thread = ctx->nthreads;
    for (uint32_t k = 0; k < t->nthreads; k++) {
      int32_t tid;
      memcpy(&tid, p, 4);
      p += 4;
      ctx->threads[ctx->nthreads].tid = tid;
      ctx->threads[ctx->nthreads].tgid = t->pid;
      ctx->nthreads++;
    }
    ctx->ntasks++;
  }
  /* Optional trailer: controlling terminals, u32 count then (pid, pts index) pairs (restore/tty.ts); a negative
   * index is -(restorer fd + 1) of a terminal opened for it (a console or virtual terminal). */
  if (end - p >= 4) {
    uint32_t n;
    memcpy(&n, p, 4);
    p += 4;
    if (n > ntasks || (size_t)(end - p) < 8ull * n) return rst_fail(ctx, EINVAL, "tree-request", 0);
    for (uint32_t i = 0; i < n; i++, p += 8) {
      int32_t rec[2];
      memcpy(rec, p, 8);
      struct rst_task *t = rst_task_find(ctx, rec[0]);
      if (!t || t->sid != t->pid) return rst_fail(ctx, EINVAL, "tree-request", rec[0]);
      if (rec[1] >= 0)
        t->ctty = rec[1];
      else
        t->ctty_fd = -rec[1] - 1;
    }
  }
  return 0;
}

static int wait_ready(struct rst_ctx *ctx, int ready) {
  uint32_t got = 0;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (got < ctx->ntasks) {
    struct pollfd pfd = {ready, POLLIN, 0};
    int r = poll(&pfd, 1, 200);
    if (r < 0 && errno != EINTR) return rst_fail(ctx, errno, "poll", 0);
    if (r > 0) {
      struct ready_rec rec;
      ssize_t k = read(ready, &rec, sizeof rec);
      if (k == (ssize_t)sizeof rec) {
        if (rec.err && rec.about == -1) return rst_fail(ctx, rec.err, "container-root-setup(cgroup/mount)", rec.pid);
        if (rec.err && rec.about == -2) return rst_fail(ctx, rec.err, "setns(CLONE_NEWUSER: the container's user namespace)", rec.pid);
        if (rec.err) return rst_fail(ctx, rec.err, rec.about == rec.pid ? "setsid/setpgid" : "clone3", rec.about);
        got++;
        continue;
      }
    }
    /* A stub that died before reporting (e.g. killed) would leave us waiting: check the root. */
    int st;
    pid_t w = waitpid(ctx->root, &st, WNOHANG | __WALL);
    if (w == ctx->root) return rst_fail(ctx, ECHILD, "stub-exited", ctx->root);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > READY_TIMEOUT_MS)
      return rst_fail(ctx, ETIMEDOUT, "stub-ready", 0);
  }
  return 0;
}

static int is_zombie_thread(struct rst_ctx *ctx, struct rst_thread *th) {
  struct rst_task *t = rst_task_find(ctx, th->tgid);
  return t && t->zombie >= 0;
}

static int seize_all(struct rst_ctx *ctx) {
  for (uint32_t i = 0; i < ctx->nthreads; i++) {
    struct rst_thread *th = &ctx->threads[i];
    if (is_zombie_thread(ctx, th)) continue;
    /* EXITKILL: if the restorer dies half-way, the kernel kills what it created. */
    /* PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN in the host's user namespace: inside a container's own user
     * namespace it is EPERM, and the tasks are seized without it (their filters are installed last anyway). */
    if (ptrace(PTRACE_SEIZE, rst_hpid(ctx, th->tid), 0, PTRACE_O_EXITKILL | PTRACE_O_SUSPEND_SECCOMP) < 0 &&
        (errno != EPERM || ptrace(PTRACE_SEIZE, rst_hpid(ctx, th->tid), 0, PTRACE_O_EXITKILL) < 0))
      return rst_fail(ctx, errno, "ptrace(SEIZE)", th->tid);
    th->seized = 1;
    if (ptrace(PTRACE_INTERRUPT, rst_hpid(ctx, th->tid), 0, 0) < 0) return rst_fail(ctx, errno, "ptrace(INTERRUPT)", th->tid);
  }
  for (uint32_t i = 0; i < ctx->nthreads; i++) {
    struct rst_thread *th = &ctx->threads[i];
    if (is_zombie_thread(ctx, th)) continue;
    for (;;) {
      int st;
      pid_t w = waitpid(rst_hpid(ctx, th->tid), &st, __WALL);
      if (w < 0) {
        if (errno == EINTR) continue;
        return rst_fail(ctx, errno, "waitpid", th->tid);
      }
      if (!WIFSTOPPED(st)) return rst_fail(ctx, ESRCH, "stub-exited", th->tid);
      if ((st >> 16) == PTRACE_EVENT_STOP) break;
      /* Some other stop (a signal): suppress it and wait for the interrupt stop. */
      ptrace(PTRACE_CONT, rst_hpid(ctx, th->tid), 0, 0);
    }
    int rc = rst_rseq_unregister(ctx, th->tid);
    if (rc) return rc;
    if (th->tid == th->tgid) {
      /* The stub may have been stopped before it closed what it inherited from us: close it all now. */
      int keep = ctx->keep_pidfd;
      uint64_t lo[6] = {0, keep < 0 ? ~0U : (uint64_t)keep - 1, 0, 0, 0, 0};
      uint64_t hi[6] = {(uint64_t)keep + 1, ~0U, 0, 0, 0, 0};
      int64_t ret = 0;
      if (keep != 0) rc = rst_inject(ctx, th->tid, (uint64_t)(uintptr_t)rst_syscall_insn, __NR_close_range, lo, &ret);
      if (rc) return rc;
      if (ret < 0) return rst_fail(ctx, (int)-ret, "close_range", th->tid);
      if (keep >= 0) rc = rst_inject(ctx, th->tid, (uint64_t)(uintptr_t)rst_syscall_insn, __NR_close_range, hi, &ret);
      if (rc) return rc;
      if (ret < 0) return rst_fail(ctx, (int)-ret, "close_range", th->tid);
    }
  }
  return 0;
}

/*
 * i32 nest (1: the tree gets its own pid namespace, its root pid 1 there) | u32 mounts length | mount records
 * (see root_setup). Answers the fd number of the pidfd of us the stubs keep (-1 without nest).
 */
int rst_container(struct rst_ctx *ctx, const uint8_t *p, size_t n, int32_t *keep_fd) {
  int32_t nest;
  uint32_t mlen;
  if (ctx->ntasks || ctx->mounts) return rst_fail(ctx, EBUSY, "container-request", 0);
  if (n < 8) return rst_fail(ctx, EINVAL, "container-request", 0);
  memcpy(&nest, p, 4);
  memcpy(&mlen, p + 4, 4);
  if (mlen > n - 8) return rst_fail(ctx, EINVAL, "container-request", 0);
  if (!nest) {
    *keep_fd = -1;
    return 0;
  }
  if (!ctx->new_pidns) return rst_fail(ctx, EINVAL, "container-request(needs --new-pidns)", 0);
  ctx->mounts = malloc(mlen ? mlen : 1);
  if (!ctx->mounts) return rst_fail(ctx, ENOMEM, "malloc", 0);
  memcpy(ctx->mounts, p + 8, mlen);
  ctx->mounts_len = mlen;
  int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (fd < 0) return rst_fail(ctx, errno, "pidfd_open(self)", 0);
  ctx->keep_pidfd = fd;
  ctx->nest = 1;
  *keep_fd = fd;
  return 0;
}

int rst_tree_create(struct rst_ctx *ctx, const uint8_t *p, size_t n) {
  if (ctx->ntasks) return rst_fail(ctx, EBUSY, "tree-request", 0);
  int rc = parse_tree(ctx, p, n);
  if (rc) return rc;
  /* The first task is the root; the TS side orders tasks parents-first. */
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0) return rst_fail(ctx, errno, "pipe2", 0);
  if (ctx->nest) {
    if (ctx->tasks[0].pid != 1) return rst_fail(ctx, EINVAL, "container-root-not-pid-1", ctx->tasks[0].pid);
    /* The root's pid here: any pid no task uses (we are 1; the others keep their numbers). */
    pid_t max = 1;
    for (uint32_t i = 0; i < ctx->nthreads; i++)
      if (ctx->threads[i].tid > max) max = ctx->threads[i].tid;
    ctx->root_hpid = max + 1;
  }
  pid_t self = getpid();
  pid_t root = clone_pid(ctx, ctx->tasks[0].pid, ctx->nest);
  if (root == 0) {
    close(pfd[0]);
    stub_main(ctx, 0, pfd[1], self);
  }
  close(pfd[1]);
  if (root < 0) {
    close(pfd[0]);
    return rst_fail(ctx, errno, "clone3", ctx->tasks[0].pid);
  }
  ctx->root = root;
  rc = wait_ready(ctx, pfd[0]);
  close(pfd[0]);
  if (rc) return rc;
  rc = seize_all(ctx);
  if (rc || ctx->task_userns < 0) return rc;
  /* --task-userns: the pids are given, the tasks are in the user namespace; now we join it too (single-threaded
   * still), as with a pid namespace of the container's own: the stubs pull their fds from us by pidfd_getfd,
   * which a task of the user namespace may do only to a process in it. */
  if (syscall(SYS_setns, ctx->task_userns, CLONE_NEWUSER) < 0) return rst_fail(ctx, errno, "setns(CLONE_NEWUSER: the container's user namespace)", 0);
  close(ctx->task_userns);
  ctx->task_userns = -1;
  return 0;
}

/* Kills everything this restore created and reaps it: used on any failure before resume. */
void rst_tree_kill(struct rst_ctx *ctx) {
  for (uint32_t i = 0; i < ctx->ntasks; i++) kill(rst_hpid(ctx, ctx->tasks[i].pid), SIGKILL);
  if (ctx->root > 0) kill(ctx->root, SIGKILL);
  /* We are a child subreaper (or PID 1): every orphan of the tree comes back to us to be reaped. */
  for (int tries = 0; tries < 500; tries++) {
    int st;
    pid_t w = waitpid(-1, &st, __WALL | WNOHANG);
    if (w < 0 && errno == ECHILD) break;
    if (w <= 0) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  ctx->ntasks = 0;
  ctx->nthreads = 0;
  ctx->root = 0;
}
