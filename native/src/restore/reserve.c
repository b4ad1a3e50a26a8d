/*
 * `godwit-restorer --reserve MIB`: faults in MIB of anonymous memory and holds it until stdin closes (or we are
 * killed), for a migration's target (migrate/reserve.ts). On a VM whose free memory goes back to the hypervisor
 * (virtio-balloon free page reporting; first write to such a page: 0.5-0.7 GB/s against 2-2.6 GB/s for memory
 * freed a moment ago) the restore's UFFDIO_COPY into fresh pages is slowed by the host's faults, inside the
 * migration's downtime. Held while the stream runs and freed just before the restore, this memory is what the
 * restore's pages come from: the host's cost is paid before the freeze.
 *
 * In 4 KiB pages, never transparent huge pages: the restore allocates 4 KiB pages, and freed huge pages are kept
 * in per-CPU lists of their own order (up to ~1 GiB per CPU here: /proc/zoneinfo high_max 268288), where 4 KiB
 * allocations do not look. Measured, same image, recently freed memory held elsewhere: rebuild 0.60-0.92 s after a
 * 4 KiB reserve, 0.68-2.75 s after a huge-page one. Freeing 1 GiB of 4 KiB pages takes ~0.1 s: the receiver
 * kills us as the restore starts and waits for it only before the pages are written.
 * Best effort throughout: memory that cannot be had is simply not reserved; the oom killer is told to take us first.
 * Runs at nice +10. Prints `reserved BYTES` once done; exits 0 on stdin's EOF.
 */
#include "rst.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* Populated in pieces of this size: a SIGKILL (the release) lands between pieces within milliseconds. */
#define RESERVE_STEP (64ul << 20)

static void oom_first(void) {
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, "1000", 4) < 0) { /* best effort */
  }
  close(fd);
}

/* Touches [p, p+len) one write per page: kernels before 5.14 have no MADV_POPULATE_WRITE. */
static void touch(volatile uint8_t *p, size_t len) {
  for (size_t i = 0; i < len; i += 4096) p[i] = 0;
}

int rst_reserve(unsigned long mib) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 0; /* whoever wanted the memory is gone already */
  prctl(PR_SET_NAME, "godwit-reserve"); /* not the restorer: ps and the tests that look for it tell them apart */
  oom_first();
  /* Background work: while it runs the stream (and, without pre-copy, the frozen dump) must not wait for it. */
  if (nice(10) < 0) { /* best effort */
  }
  size_t len = (size_t)mib << 20, done = 0;
  uint8_t *m = len ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) : MAP_FAILED;
  if (m != MAP_FAILED) {
    madvise(m, len, MADV_NOHUGEPAGE); /* also where THP is "always" (EINVAL without THP: fine) */
    int populate = 1;
    while (done < len) {
      size_t n = len - done < RESERVE_STEP ? len - done : RESERVE_STEP;
      if (populate && madvise(m + done, n, MADV_POPULATE_WRITE) < 0) {
        if (errno != EINVAL) break; /* ENOMEM, EINTR, ...: keep what we have */
        populate = 0;
      }
      if (!populate) touch(m + done, n);
      done += n;
    }
  }
  printf("reserved %zu\n", done);
  fflush(stdout);
  char b[64];
  for (;;) {
    ssize_t r = read(0, b, sizeof b);
    if (r == 0 || (r < 0 && errno != EINTR)) return 0;
  }
}
