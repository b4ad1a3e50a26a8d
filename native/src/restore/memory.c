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
#include <sys/uio.h>
#include <unistd.h>

#define STAGE_SIZE (8u << 20) /* large enough for few syscalls per GiB, small enough to stay in cache-ish */
#define STAGE_IOV 1024        /* IOV_MAX */

struct stage {
  struct iovec local[STAGE_IOV], remote[STAGE_IOV];
  unsigned n;
  size_t used;
};

static int flush(struct rst_ctx *ctx, pid_t pid, struct stage *s) {
  unsigned i = 0;
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
