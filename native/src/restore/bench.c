/*
 * The limits restore is measured against (bench/restore.ts): a child maps MIB of fresh anonymous memory and
 * waits; we fill it from an 8 MiB buffer and print {"bytes":..,"seconds":..,"cpu":..} (wall time, and the CPU time
 * we spent: the copies run in our context, so on a loaded machine cpu is the load-independent cost).
 *   --bench-writev MIB  process_vm_writev in 8 MiB calls (the ordinary way: fault in a zeroed page, then copy);
 *   --bench-uffd MIB    UFFDIO_COPY in 2 MiB calls through a userfaultfd the child made and registered (MISSING
 *                       mode), taken with pidfd_getfd: what the restorer does, on one thread.
 * First-touch page allocation dominates on slow-to-fault machines, exactly as it does for a restore.
 */
#include "rst.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_STAGE (8u << 20)
#define UFFD_CALL (2u << 20) /* the restorer's unit size (pagein.c) */

struct child {
  pid_t pid;
  uint64_t addr;
  int32_t uffd; /* the child's fd number, or -1 */
};

/* Forks a child holding `len` bytes of fresh memory (registered with its own userfaultfd if `uffd`). */
static int start_child(size_t len, int uffd, struct child *c) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  c->pid = fork();
  if (c->pid < 0) return -1;
  if (c->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct { uint64_t addr; int32_t uffd; } msg = {0, -1};
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) msg.addr = (uint64_t)(uintptr_t)m;
    if (m != MAP_FAILED && uffd) {
      msg.uffd = (int32_t)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
      struct uffdio_api api = {.api = UFFD_API};
      struct uffdio_register r = {.range = {msg.addr, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
      if (msg.uffd < 0 || ioctl(msg.uffd, UFFDIO_API, &api) < 0 || ioctl(msg.uffd, UFFDIO_REGISTER, &r) < 0) msg.addr = 0;
    }
    if (write(p[1], &msg, sizeof msg) != sizeof msg) _exit(1);
    for (;;) pause();
  }
  close(p[1]);
  struct { uint64_t addr; int32_t uffd; } msg;
  ssize_t got = read(p[0], &msg, sizeof msg);
  close(p[0]);
  c->addr = got == (ssize_t)sizeof msg ? msg.addr : 0;
  c->uffd = msg.uffd;
  return c->addr ? 0 : -1;
}

static double seconds_since(clockid_t clock, const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(clock, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static int run(unsigned long mib, int uffd) {
  size_t len = (size_t)mib << 20;
  struct child c = {-1, 0, -1};
  uint8_t *buf = malloc(BENCH_STAGE);
  int fd = -1, rc = 1;
  if (!mib || !buf) goto out;
  for (size_t i = 0; i < BENCH_STAGE; i++) buf[i] = (uint8_t)(i * 131 + (i >> 12) + 1);
  if (start_child(len, uffd, &c)) {
    fprintf(stderr, "godwit-restorer: bench child could not map %lu MiB%s\n", mib, uffd ? " with a userfaultfd" : "");
    goto out;
  }
  if (uffd) {
    int pidfd = (int)syscall(SYS_pidfd_open, c.pid, 0);
    fd = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, c.uffd, 0);
    if (pidfd >= 0) close(pidfd);
    if (fd < 0) {
      fprintf(stderr, "godwit-restorer: pidfd_getfd(userfaultfd): %s\n", strerror(errno));
      goto out;
    }
  }
  struct timespec t0, c0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  for (size_t off = 0; off < len;) {
    size_t n = len - off < BENCH_STAGE ? len - off : BENCH_STAGE;
    if (uffd) {
      if (n > UFFD_CALL) n = UFFD_CALL;
      struct uffdio_copy cp = {.dst = c.addr + off, .src = (uint64_t)(uintptr_t)(buf + off % BENCH_STAGE), .len = n};
      if (ioctl(fd, UFFDIO_COPY, &cp) < 0 && cp.copy <= 0 && errno != EAGAIN) {
        fprintf(stderr, "godwit-restorer: UFFDIO_COPY: %s\n", strerror(errno));
        goto out;
      }
      off += cp.copy > 0 ? (size_t)cp.copy : 0;
    } else {
      struct iovec l = {buf, n}, r = {(void *)(uintptr_t)(c.addr + off), n};
      if (process_vm_writev(c.pid, &l, 1, &r, 1, 0) != (ssize_t)n) {
        fprintf(stderr, "godwit-restorer: process_vm_writev: %s\n", strerror(errno));
        goto out;
      }
      off += n;
    }
  }
  double wall = seconds_since(CLOCK_MONOTONIC, &t0), cpu = seconds_since(CLOCK_PROCESS_CPUTIME_ID, &c0);
  printf("{\"bytes\": %zu, \"seconds\": %.6f, \"cpu\": %.6f}\n", len, wall, cpu);
  rc = 0;
out:
  if (fd >= 0) close(fd);
  if (c.pid > 0) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, NULL, 0);
  }
  free(buf);
  return rc;
}

int rst_bench_writev(unsigned long mib) { return run(mib, 0); }
int rst_bench_uffd(unsigned long mib) { return run(mib, 1); }
