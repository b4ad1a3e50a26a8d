/*
 * `godwit-restorer --bench-writev MIB`: the limit restore is measured against. A child maps MIB of fresh
 * anonymous memory and waits; we write it with process_vm_writev from an 8 MiB buffer in the same iovec
 * batches the restorer uses, and print {"bytes":..,"seconds":..}. First-touch page faults dominate on
 * slow-to-fault machines, exactly as they do for a restore.
 */
#include "rst.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_STAGE (8u << 20)

int rst_bench_writev(unsigned long mib) {
  size_t len = (size_t)mib << 20;
  int p[2];
  if (!mib || pipe(p) < 0) return 1;
  pid_t c = fork();
  if (c < 0) return 1;
  if (c == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t a = m == MAP_FAILED ? 0 : (uint64_t)(uintptr_t)m;
    if (write(p[1], &a, sizeof a) != sizeof a) _exit(1);
    for (;;) pause();
  }
  uint64_t addr = 0;
  if (read(p[0], &addr, sizeof addr) != sizeof addr || !addr) {
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    fprintf(stderr, "godwit-restorer: bench child could not map %lu MiB\n", mib);
    return 1;
  }
  uint8_t *buf = malloc(BENCH_STAGE);
  if (!buf) return 1;
  for (size_t i = 0; i < BENCH_STAGE; i++) buf[i] = (uint8_t)(i * 131 + (i >> 12));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = 0;
  for (size_t off = 0; off < len; off += BENCH_STAGE) {
    size_t n = len - off < BENCH_STAGE ? len - off : BENCH_STAGE;
    struct iovec l = {buf, n}, r = {(void *)(uintptr_t)(addr + off), n};
    if (process_vm_writev(c, &l, 1, &r, 1, 0) != (ssize_t)n) {
      fprintf(stderr, "godwit-restorer: process_vm_writev: %s\n", strerror(errno));
      rc = 1;
      break;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  kill(c, SIGKILL);
  waitpid(c, NULL, 0);
  free(buf);
  if (!rc)
    printf("{\"bytes\": %zu, \"seconds\": %.6f}\n", len, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return rc;
}
