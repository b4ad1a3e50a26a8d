/*
 * The userfaultfd a task's pages are filled through (see pagein.c): the task makes it (an injected
 * userfaultfd()), we take a copy with pidfd_getfd and register its large anonymous VMAs in MISSING mode, so
 * UFFDIO_COPY can place pages there without a zero-fill or a fault per page. Nothing serves faults: the task
 * stays stopped until every page is in and the regions are unregistered again.
 */
#include "rst.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * i32 pid | i32 uffd (the task's fd number) | u32 nregions | nregions x (u64 start | u64 len): takes a copy of
 * the userfaultfd the task made, and registers whole anonymous VMAs for UFFDIO_COPY (MISSING mode).
 * With uffd = -1: unregisters them and drops our copy.
 */
int rst_uffd(struct rst_ctx *ctx, const uint8_t *p, size_t n) {
  int32_t pid, fd;
  uint32_t nr;
  if (n < 12) return rst_fail(ctx, EINVAL, "uffd-request", 0);
  memcpy(&pid, p, 4);
  memcpy(&fd, p + 4, 4);
  memcpy(&nr, p + 8, 4);
  struct rst_task *t = rst_task_find(ctx, pid);
  if (!t) return rst_fail(ctx, ESRCH, "uffd-request", pid);
  if (fd < 0) {
    int rc = 0;
    for (uint32_t i = 0; i < t->nregions && t->uffd >= 0; i++) {
      struct uffdio_range r = {t->regions[i][0], t->regions[i][1]};
      if (ioctl(t->uffd, UFFDIO_UNREGISTER, &r) < 0 && !rc) rc = rst_fail(ctx, errno, "ioctl(UFFDIO_UNREGISTER)", pid);
    }
    if (t->uffd >= 0) close(t->uffd);
    t->uffd = -1;
    free(t->regions);
    t->regions = NULL;
    t->nregions = 0;
    return rc;
  }
  if (t->uffd >= 0) return rst_fail(ctx, EBUSY, "uffd-request", pid);
  if ((n - 12) / 16 < nr) return rst_fail(ctx, EINVAL, "uffd-request", pid);
  int pidfd = (int)syscall(SYS_pidfd_open, rst_hpid(ctx, pid), 0);
  if (pidfd < 0) return rst_fail(ctx, errno, "pidfd_open", pid);
  int u = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int e = errno;
  close(pidfd);
  if (u < 0) return rst_fail(ctx, e, "pidfd_getfd(userfaultfd)", pid);
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  if (ioctl(u, UFFDIO_API, &api) < 0) {
    e = errno;
    close(u);
    return rst_fail(ctx, e, "ioctl(UFFDIO_API)", pid);
  }
  t->regions = calloc(nr ? nr : 1, sizeof *t->regions);
  if (!t->regions) {
    close(u);
    return rst_fail(ctx, ENOMEM, "calloc", pid);
  }
  t->uffd = u;
  for (uint32_t i = 0; i < nr; i++) {
    uint64_t reg[2];
    memcpy(reg, p + 12 + 16ull * i, 16);
    struct uffdio_register r;
    memset(&r, 0, sizeof r);
    r.range.start = reg[0];
    r.range.len = reg[1];
    r.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(u, UFFDIO_REGISTER, &r) < 0) return rst_fail(ctx, errno, "ioctl(UFFDIO_REGISTER)", pid);
    t->regions[t->nregions][0] = reg[0];
    t->regions[t->nregions][1] = reg[1];
    t->nregions++;
  }
  return 0;
}
