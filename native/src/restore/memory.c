/*
 * Page contents into a restored address space: staged through one buffer from an image file (pread) or
 * from the bulk pipe, then written with process_vm_writev in large iovec batches (4 KiB per call would be
 * ~4x slower). Mappings must be writable at this point; the TS side mprotects them to their dumped
 * protection afterwards.
 */
#include "rst.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define STAGE_SIZE (8u << 20) /* large enough for few syscalls per GiB, small enough to stay in cache-ish */
#define STAGE_IOV 1024        /* IOV_MAX */

struct stage {
  struct iovec local[STAGE_IOV], remote[STAGE_IOV];
  unsigned n;
  size_t used;
};

/*
 * 1: [addr, addr+len) lies in a region registered with the task's userfaultfd; 0: in none; -1: it straddles a
 * region's edge (process_vm_writev there would fault into the userfaultfd we are serving: a deadlock).
 */
static int in_uffd(struct rst_task *t, uint64_t addr, uint64_t len) {
  for (uint32_t i = 0; i < t->nregions; i++) {
    uint64_t s = t->regions[i][0], e = s + t->regions[i][1];
    if (addr >= s && addr + len <= e) return 1;
    if (addr < e && addr + len > s) return -1;
  }
  return 0;
}

/*
 * Fresh anonymous memory filled with UFFDIO_COPY: the kernel allocates each page with our bytes in it, where
 * process_vm_writev would fault in a zeroed page first and then copy (about 3x slower on this kind of host).
 */
static int uffd_copy(struct rst_ctx *ctx, struct rst_task *t, const struct iovec *l, const struct iovec *r) {
  size_t done = 0;
  while (done < l->iov_len) {
    struct uffdio_copy c;
    memset(&c, 0, sizeof c);
    c.dst = (uint64_t)(uintptr_t)r->iov_base + done;
    c.src = (uint64_t)(uintptr_t)l->iov_base + done;
    c.len = l->iov_len - done;
    if (ioctl(t->uffd, UFFDIO_COPY, &c) < 0 && errno != EAGAIN) {
      if (c.copy > 0) { done += (size_t)c.copy; continue; }
      return rst_fail(ctx, errno, "ioctl(UFFDIO_COPY)", t->pid);
    }
    if (c.copy <= 0) return rst_fail(ctx, c.copy < 0 ? (int)-c.copy : EIO, "ioctl(UFFDIO_COPY)", t->pid);
    done += (size_t)c.copy;
  }
  return 0;
}

static int flush(struct rst_ctx *ctx, pid_t pid, struct stage *s) {
  unsigned i = 0;
  struct rst_task *t = rst_task_find(ctx, pid);
  if (t && t->uffd >= 0 && t->nregions) {
    /* Ranges in registered regions go by UFFDIO_COPY, the rest stay for process_vm_writev. */
    unsigned k = 0;
    for (unsigned j = 0; j < s->n; j++) {
      int where = in_uffd(t, (uint64_t)(uintptr_t)s->remote[j].iov_base, s->remote[j].iov_len);
      if (where < 0) return rst_fail(ctx, EINVAL, "write-mem(range across a userfaultfd region)", pid);
      if (where) {
        int rc = uffd_copy(ctx, t, &s->local[j], &s->remote[j]);
        if (rc) return rc;
      } else {
        s->local[k] = s->local[j];
        s->remote[k] = s->remote[j];
        k++;
      }
    }
    s->n = k;
  }
  while (i < s->n) {
    ssize_t w = process_vm_writev(pid, s->local + i, s->n - i, s->remote + i, s->n - i, 0);
    if (w < 0) return rst_fail(ctx, errno, "process_vm_writev", pid);
    if (w == 0) return rst_fail(ctx, EFAULT, "process_vm_writev", pid);
    /* Partial write: skip what went through and retry the rest (the kernel stops at a bad page). */
    size_t left = (size_t)w;
    while (i < s->n && left >= s->remote[i].iov_len) left -= s->remote[i++].iov_len;
    if (left) {
      s->local[i].iov_base = (char *)s->local[i].iov_base + left;
      s->local[i].iov_len -= left;
      s->remote[i].iov_base = (char *)s->remote[i].iov_base + left;
      s->remote[i].iov_len -= left;
    }
  }
  s->n = 0;
  s->used = 0;
  return 0;
}

static int fill(struct rst_ctx *ctx, int fd, int from_pipe, uint64_t off, uint8_t *dst, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = from_pipe ? read(fd, dst + got, len - got) : pread(fd, dst + got, len - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return rst_fail(ctx, errno, from_pipe ? "read(bulk)" : "pread(pages)", 0);
    if (r == 0) return rst_fail(ctx, ENODATA, from_pipe ? "read(bulk)" : "pread(pages)", 0);
    got += (size_t)r;
  }
  return 0;
}

/* i32 pid | i32 src_fd (-1 = bulk pipe) | u32 nranges | nranges x (u64 addr | u64 len | u64 file_off) */
int rst_write_mem(struct rst_ctx *ctx, const uint8_t *p, size_t n) {
  int32_t pid, src;
  uint32_t nr;
  if (n < 12) return rst_fail(ctx, EINVAL, "write-mem-request", 0);
  memcpy(&pid, p, 4);
  memcpy(&src, p + 4, 4);
  memcpy(&nr, p + 8, 4);
  p += 12;
  if ((n - 12) / 24 < nr) return rst_fail(ctx, EINVAL, "write-mem-request", pid);
  if (!rst_task_find(ctx, pid)) return rst_fail(ctx, ESRCH, "write-mem-request", pid);
  if (!ctx->buf) {
    ctx->buf = malloc(STAGE_SIZE);
    if (!ctx->buf) return rst_fail(ctx, ENOMEM, "malloc", pid);
    ctx->buf_size = STAGE_SIZE;
  }
  int fd = src < 0 ? ctx->bulk : src;
  struct stage *s = calloc(1, sizeof *s);
  if (!s) return rst_fail(ctx, ENOMEM, "calloc", pid);
  int rc = 0;
  for (uint32_t i = 0; i < nr && !rc; i++) {
    uint64_t r[3];
    memcpy(r, p + 24ull * i, 24);
    uint64_t addr = r[0], len = r[1], off = r[2];
    while (len && !rc) {
      if (s->n == STAGE_IOV || s->used == ctx->buf_size) rc = flush(ctx, pid, s);
      if (rc) break;
      size_t chunk = ctx->buf_size - s->used;
      if (chunk > len) chunk = (size_t)len;
      rc = fill(ctx, fd, src < 0, off, ctx->buf + s->used, chunk);
      if (rc) break;
      s->local[s->n].iov_base = ctx->buf + s->used;
      s->local[s->n].iov_len = chunk;
      s->remote[s->n].iov_base = (void *)(uintptr_t)addr;
      s->remote[s->n].iov_len = chunk;
      s->n++;
      s->used += chunk;
      addr += chunk, off += chunk, len -= chunk;
    }
  }
  if (!rc && s->n) rc = flush(ctx, pid, s);
  free(s);
  return rc;
}

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
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
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
