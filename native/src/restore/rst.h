/*
 * godwit-restorer: the restore side of the native layer.
 *
 * A separate executable from godwit-helper because with --new-pidns it must become PID 1 of a fresh PID
 * namespace (clone3 set_tid needs an init there, and the init must outlive the request loop as the
 * namespace's reaper when the restore is detached). It owns no policy: the TypeScript side (restore/ in TS)
 * says which tasks, mappings, fds and registers to create, in which order.
 *
 * Control protocol (socketpair on fd 3, little-endian):
 *   request  = u32 len (of what follows) | u32 op | payload
 *   response = u32 len | i32 errno (0 = ok) | i32 pid | char syscall[24] | payload
 * Page data never travels on the control socket: LOAD_PAGES reads it from the image file itself. fd 4 (a pipe
 * from Node) is the bulk channel, kept open for streamed data; no request uses it at the moment.
 */
#ifndef GODWIT_RST_H
#define GODWIT_RST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#define RST_MAX_TASKS 4096
#define RST_MAX_THREADS 16384
#define RST_MAX_REQ (64u << 20) /* bounds one request: a batch of syscalls or a VMA list, never pages */

enum rst_op {
  OP_HELLO = 1,
  OP_TREE = 2,
  OP_TRAMPOLINE = 3,
  OP_SYSCALLS = 4,
  /* 5 was WRITE_MEM (pages through the bulk pipe), replaced by LOAD_PAGES */
  OP_OPEN = 6,
  OP_PIPE = 7,
  OP_WRITE_FD = 8,
  OP_CLOSE = 9,
  OP_SETREGS = 10,
  OP_PRLIMIT = 11,
  OP_RESUME = 12,
  OP_WAIT = 13,
  OP_KILL = 14,
  OP_SOCKETPAIR = 15,
  OP_XSTATE_INFO = 16,
  OP_FCNTL = 17,
  OP_SYSCALL_AT = 18,
  OP_FIND_SYSCALL = 19,
  OP_UFFD = 20,
  OP_HOST_PIDS = 21,
  OP_LOCAL = 22,
  OP_LOAD_PAGES = 23,
  OP_CONTAINER = 24,
};

/* Error convention shared by every module: functions return -errno and record syscall + pid here. */
struct rst_err {
  int err;
  int pid;
  char syscall[24];
};

struct rst_thread {
  pid_t tid;
  pid_t tgid;
  int seized;
  int detached;
};

struct rst_task {
  pid_t pid, ppid, pgid, sid;
  uint32_t nthreads;
  uint32_t first_thread; /* index into ctx->threads */
  int32_t zombie;        /* -1: alive; else the wait status it must leave behind as a zombie */
  int32_t ctty;          /* -1: none; else the /dev/pts index a session leader takes as its terminal */
  int32_t ctty_fd;       /* -1: none; else a restorer fd (inherited) of the terminal it takes with TIOCSCTTY */
  pid_t group_helper;    /* 0: none; else a process group whose leader is gone: a helper with that pid makes it */
  uint64_t tramp;        /* trampoline start in the task (0 = none yet) */
  uint64_t tramp_size;
  int uffd;              /* our copy of the task's userfaultfd while its memory is filled, or -1 */
  uint64_t (*regions)[2]; /* anonymous VMAs registered with it */
  uint32_t nregions;
};

struct rst_ctx {
  int ctl;  /* control socket */
  int bulk; /* bulk data pipe (read end) */
  int new_pidns;
  pid_t self; /* our pid as the restored tasks see it */
  struct rst_err err;
  struct rst_task *tasks;
  uint32_t ntasks;
  struct rst_thread *threads;
  uint32_t nthreads;
  int resumed;
  pid_t root;
  /*
   * Container restore (OP_CONTAINER): the tree gets a pid namespace of its own nested in ours, so that its
   * root can be pid 1 there. Every task then has the same pid in both namespaces except the root, which is
   * root_hpid in ours (we are pid 1 here): rst_hpid() translates. Tasks cannot see us from inside: they
   * pull their fds through keep_pidfd, a pidfd of us every stub keeps until the TS side closes it.
   */
  int nest;
  pid_t root_hpid;
  int keep_pidfd;
  int cg_fds[16]; /* cgroup.procs files the root stub moves itself into before anything else */
  int ncg;
  uint8_t *mounts; /* mount records the root stub runs once in its pid namespace (proc and what is on it) */
  size_t mounts_len;
  int host_root; /* O_PATH fd of the root we started in */
  /* --task-userns: a user namespace each task joins itself, once its children exist (a container with a user
   * namespace but the host's pid namespace: clone3 with set_tid there needs our capabilities in the host's user
   * namespace, which joining first would lose). -1 when unused. */
  int task_userns;
};

/* A task's pid as we see it (differs from the image's only for a nested root). */
static inline pid_t rst_hpid(const struct rst_ctx *ctx, pid_t pid) {
  return ctx->nest && pid == 1 ? ctx->root_hpid : pid;
}

/* Records a failure and returns -err, so call sites read `return rst_fail(ctx, errno, "mmap", pid);`. */
int rst_fail(struct rst_ctx *ctx, int err, const char *syscall, int pid);

/* tree.c */
int rst_container(struct rst_ctx *ctx, const uint8_t *p, size_t n, int32_t *keep_fd);
/* timens.c: a new time namespace whose clocks read the dumped values now, entered by the caller (before any fork). */
int rst_enter_timens(int host_root, long long mono_ns, long long boot_ns, char *why, size_t n);
int rst_tree_create(struct rst_ctx *ctx, const uint8_t *p, size_t n);
void rst_tree_kill(struct rst_ctx *ctx);
struct rst_task *rst_task_find(struct rst_ctx *ctx, pid_t pid);
struct rst_thread *rst_thread_find(struct rst_ctx *ctx, pid_t tid);

/* inject.c */
extern const char rst_syscall_insn[]; /* `syscall; int3` inside this binary: stubs are forks of us */
int rst_inject(struct rst_ctx *ctx, pid_t tid, uint64_t insn, long nr, const uint64_t a[6], int64_t *ret);
int rst_inject_ex(struct rst_ctx *ctx, pid_t tid, uint64_t insn, long nr, const uint64_t a[6], int64_t *ret,
                  int singlestep);
int rst_syscall_at(struct rst_ctx *ctx, const uint8_t *p, size_t n, int64_t *ret);
int rst_find_syscall(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint64_t *addr);
int rst_rseq_unregister(struct rst_ctx *ctx, pid_t tid);
int rst_trampoline(struct rst_ctx *ctx, struct rst_task *t, const uint64_t *hints, uint32_t nhints,
                   uint64_t size);
int rst_syscalls(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint8_t **out, size_t *outlen);
int rst_local(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint8_t **out, size_t *outlen);

/* memory.c */
int rst_uffd(struct rst_ctx *ctx, const uint8_t *p, size_t n);

/* pagein.c: `out` has room for RST_LOAD_PAGES_OUT bytes (the answer, or the damage found). */
#define RST_LOAD_PAGES_OUT 512
int rst_load_pages(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint8_t *out, size_t *outlen);

/* regs.c */
int rst_setregs(struct rst_ctx *ctx, const uint8_t *p, size_t n);
int rst_xstate_info(struct rst_ctx *ctx, pid_t tid, uint8_t *out, size_t *outlen);

/* bench.c: the limits bench/restore.ts measures restore against (fresh memory of another process) */
int rst_bench_writev(unsigned long mib);
int rst_bench_uffd(unsigned long mib);
/* --reserve MIB (reserve.c): fault in and hold memory for a migration's restore until stdin closes. */
int rst_reserve(unsigned long mib);

#endif
