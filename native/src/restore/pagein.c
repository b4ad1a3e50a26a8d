/*
 * Page contents into a restored address space, read by the restorer itself from the image's pages file: CRIU's
 * plain pages-N.img or godwit's pages-N.gwz (zstd frames of 256 KiB, see images/container-format.ts).
 *
 * The page stream is cut into units of about UNIT_BYTES. Worker threads (one per CPU we may run on) each take the
 * next unit and copy it into the task. Plain files are mapped (MAP_SHARED, read-only) and copied straight from the
 * page cache; container units are read with one pread of their chunks, each chunk checked, decompressed into the
 * worker's buffer and copied out at once. Into the task: UFFDIO_COPY for the anonymous VMAs registered with the task's userfaultfd (the
 * kernel allocates each page with our bytes in it: no zero-fill, no fault; all-zero pages of a container are skipped
 * and stay unpopulated, reading back as zero), process_vm_writev in large iovec batches for everything else. Units
 * are independent, so the reading, decompressing and copying of different units overlap across workers, and no
 * page byte passes through Node.
 *
 * Integrity of a container chunk: its header's crc32 and its fields equal to the index entry (a reordered, missing
 * or duplicated chunk shows there), the crc32 of its compressed bytes (the folding crc32 of native/common: ~0.02 s
 * per GiB of pages here, against ~0.1 s for the XXH64 content checksum zstd would otherwise compute), and the
 * output length must be the chunk's. A frame that carries a content checksum (containers written before godwit
 * stopped asking for one) is checked by zstd as well.
 *
 * Workers only read the file and write memory: ptrace stays with the main thread (which works as one of them),
 * every worker is joined before the request is answered, and the first failure stops them all.
 */
#include "rst.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "../../common/crc32.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif
#define PAGE_SZ 4096u
/*
 * Page-stream bytes per unit (one pread for a container's chunks, one UFFDIO_COPY call for a plain file's pages):
 * large enough that per-call costs vanish (UFFDIO_COPY is at full speed from a few hundred KiB per call), small
 * enough to keep both workers busy to the end of even a 64 MiB image.
 */
#define UNIT_BYTES (2u << 20)
#define MAX_WORKERS 8
#define IO_WORKERS 2 /* workers per CPU when reading O_DIRECT: each waits for the disk half the time */
#define PVW_IOV 1024 /* IOV_MAX */
#define CHUNK_HDR 32u
#define CHUNK_MAGIC 0x4b435747u  /* "GWCK" */
/* O_DIRECT offsets, lengths and buffers: the largest logical block size a disk may have. */
#define DIO_ALIGN 4096u
#ifndef __NR_cachestat
#define __NR_cachestat 451 /* Linux 6.5, the same number on every architecture */
#endif
#define MAX_CHUNK (64u << 20)    /* images/container-format.ts MAX_CHUNK_SIZE */

struct pg_range {
  uint64_t addr, len, off;
  int uffd; /* in a VMA registered with the task's userfaultfd */
};

struct pg_chunk {
  uint64_t file_off, off;
  uint32_t len, clen, crc;
};

/* Page-stream bytes [a, b); for a container the chunks c0..c1 that hold them. */
struct pg_unit {
  uint64_t a, b;
  uint32_t c0, c1;
};

struct pg_job {
  pid_t pid;
  pid_t hpid; /* the task as we see it (rst_hpid) */
  int fd;
  int dfd; /* the same file opened O_DIRECT, when it is not in the page cache (see open_direct), else -1 */
  const uint8_t *map; /* a plain pages file, mapped read-only: pages are copied from the page cache directly */
  size_t map_len;
  int packed;
  int fold_crc; /* the CPU folds crc32 (gw_crc32); else zlib's */
  int uffd;
  uint64_t stream_size;
  struct pg_range *ranges;
  uint32_t nranges;
  struct pg_chunk *chunks;
  uint32_t nchunks;
  struct pg_unit *units;
  uint32_t nunits;
  size_t in_max;  /* a container unit's compressed bytes, headers included */
  size_t out_max; /* the largest chunk, decompressed */
  atomic_uint next;
  atomic_int stop;
  atomic_ullong copied, zero, direct; /* bytes written into the task, zero bytes skipped, file bytes read O_DIRECT */
  pthread_mutex_t lock; /* guards the first failure below */
  int failed;
  struct rst_err err;
  uint64_t err_off; /* file offset the failure concerns (container damage), else 0 */
  char detail[256];
};

struct pg_worker {
  struct pg_job *job;
  pthread_t thread;
  int started;
  uint8_t *in, *out;
  ZSTD_DCtx *dctx;
  struct iovec l[PVW_IOV], r[PVW_IOV];
  unsigned n;
  uint64_t copied, zero, direct;
};

/* Records the first failure (later ones are consequences), stops every worker, returns -err. */
__attribute__((format(printf, 5, 6))) static int job_fail(struct pg_job *j, int err, const char *syscall,
                                                          uint64_t off, const char *fmt, ...) {
  pthread_mutex_lock(&j->lock);
  if (!j->failed) {
    j->failed = 1;
    j->err.err = err;
    j->err.pid = j->pid;
    snprintf(j->err.syscall, sizeof j->err.syscall, "%s", syscall);
    j->err_off = off;
    j->detail[0] = 0;
    if (fmt) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(j->detail, sizeof j->detail, fmt, ap);
      va_end(ap);
    }
  }
  pthread_mutex_unlock(&j->lock);
  atomic_store(&j->stop, 1);
  return -err;
}

/*
 * The bytes [off, off + len) of the pages file, in w->in; returns where they start there, or NULL (the job failed).
 * Through dfd the read is widened to DIO_ALIGN on both sides; a read that comes back short of DIO_ALIGN is the end
 * of the file.
 */
static const uint8_t *read_span(struct pg_worker *w, size_t len, uint64_t off) {
  struct pg_job *j = w->job;
  int direct = j->dfd >= 0;
  uint64_t from = direct ? off & ~(uint64_t)(DIO_ALIGN - 1) : off;
  size_t want = direct ? (size_t)(((off + len + DIO_ALIGN - 1) & ~(uint64_t)(DIO_ALIGN - 1)) - from) : len;
  size_t need = (size_t)(off - from) + len, got = 0;
  while (got < want) {
    ssize_t r = pread(direct ? j->dfd : j->fd, w->in + got, want - got, (off_t)(from + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return job_fail(j, errno, direct ? "pread(pages, O_DIRECT)" : "pread(pages)", 0, NULL), NULL;
    got += (size_t)r;
    if (r == 0 || (direct && (size_t)r % DIO_ALIGN)) break;
  }
  if (direct) w->direct += got;
  if (got < need) {
    job_fail(j, ENODATA, "pread(pages)", from + got, "the pages file ends at byte %llu, but %llu more bytes were expected there (truncated?)",
             (unsigned long long)(from + got), (unsigned long long)(need - got));
    return NULL;
  }
  return w->in + (off - from);
}

/*
 * A pages file that is mostly not in the page cache (a migration's target writes them with O_DIRECT) is read with
 * O_DIRECT: a buffered read would first fill the page cache with it, one more copy of every byte into memory the
 * kernel allocates then and there, inside the downtime, for a file read once. A cached one is read from the cache.
 * Without cachestat(2) (before Linux 6.5) or O_DIRECT on this filesystem: the page cache.
 */
static void open_direct(struct pg_job *j) {
  struct {
    uint64_t off, len;
  } range = {0, 0}; /* len 0: to the end of the file */
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } cs;
  struct stat st;
  char path[32];
  j->dfd = -1;
  if (fstat(j->fd, &st) < 0 || st.st_size < (off_t)(4u << 20)) return;
  if (syscall(__NR_cachestat, j->fd, &range, &cs, 0) < 0) return;
  if (cs.nr_cache * PAGE_SZ >= (uint64_t)st.st_size / 2) return;
  snprintf(path, sizeof path, "/proc/self/fd/%d", j->fd);
  j->dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

static int page_is_zero(const uint8_t *p) {
  const uint64_t *w = (const uint64_t *)(const void *)p;
  if (w[0] | w[1]) return 0; /* data pages almost always differ within their first bytes */
  uint64_t acc = 0;
  for (unsigned i = 2; i < PAGE_SZ / 8; i++) acc |= w[i];
  return acc == 0;
}

/* One UFFDIO_COPY of whole pages (the kernel may do less: continue where it stopped). */
static int uffd_copy(struct pg_worker *w, const uint8_t *src, uint64_t dst, uint64_t len) {
  struct pg_job *j = w->job;
  uint64_t done = 0;
  while (done < len) {
    struct uffdio_copy c;
    memset(&c, 0, sizeof c);
    c.dst = dst + done;
    c.src = (uint64_t)(uintptr_t)(src + done);
    c.len = len - done;
    int r = ioctl(j->uffd, UFFDIO_COPY, &c);
    if (c.copy > 0) {
      done += (uint64_t)c.copy;
      continue;
    }
    if (r < 0 && errno == EAGAIN) continue; /* the mm changed under the copy: retry */
    return job_fail(j, r < 0 ? errno : (c.copy < 0 ? (int)-c.copy : EIO), "ioctl(UFFDIO_COPY)", 0, NULL);
  }
  w->copied += len;
  return 0;
}

/* Copies [src, src+len) to dst in the task through the userfaultfd, leaving all-zero pages unpopulated. */
static int uffd_fill(struct pg_worker *w, const uint8_t *src, uint64_t dst, uint64_t len) {
  uint64_t run = 0, at = 0;
  /*
   * Only our own decompression buffers are looked at: reading a plain file's mapping could SIGBUS if the file
   * were truncated under us (the kernel's copies see EFAULT instead), and dumpers skip zero pages anyway.
   */
  if (!w->job->packed) return uffd_copy(w, src, dst, len);
  for (; at < len; at += PAGE_SZ) {
    if (!page_is_zero(src + at)) continue;
    if (at > run && uffd_copy(w, src + run, dst + run, at - run)) return -1;
    w->zero += PAGE_SZ;
    run = at + PAGE_SZ;
  }
  if (len > run && uffd_copy(w, src + run, dst + run, len - run)) return -1;
  return 0;
}

static int pvw_flush(struct pg_worker *w) {
  struct pg_job *j = w->job;
  unsigned i = 0;
  while (i < w->n) {
    ssize_t got = process_vm_writev(j->hpid, w->l + i, w->n - i, w->r + i, w->n - i, 0);
    if (got < 0) return job_fail(j, errno, "process_vm_writev", 0, NULL);
    if (got == 0) return job_fail(j, EFAULT, "process_vm_writev", 0, NULL);
    w->copied += (uint64_t)got;
    /* Partial write: skip what went through and retry the rest (the kernel stops at a bad page). */
    size_t left = (size_t)got;
    while (i < w->n && left >= w->r[i].iov_len) left -= w->r[i++].iov_len;
    if (left) {
      w->l[i].iov_base = (char *)w->l[i].iov_base + left;
      w->l[i].iov_len -= left;
      w->r[i].iov_base = (char *)w->r[i].iov_base + left;
      w->r[i].iov_len -= left;
    }
  }
  w->n = 0;
  return 0;
}

static int pvw_add(struct pg_worker *w, const uint8_t *src, uint64_t dst, uint64_t len) {
  if (w->n == PVW_IOV && pvw_flush(w)) return -1;
  w->l[w->n].iov_base = (void *)src;
  w->l[w->n].iov_len = len;
  w->r[w->n].iov_base = (void *)(uintptr_t)dst;
  w->r[w->n].iov_len = len;
  w->n++;
  return 0;
}

/* buf holds page-stream bytes [a, b): every range's share of them goes to its address in the task. */
static int scatter(struct pg_worker *w, const uint8_t *buf, uint64_t a, uint64_t b) {
  struct pg_job *j = w->job;
  uint32_t lo = 0, hi = j->nranges;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (j->ranges[mid].off + j->ranges[mid].len <= a) lo = mid + 1;
    else hi = mid;
  }
  for (uint32_t k = lo; k < j->nranges && j->ranges[k].off < b; k++) {
    const struct pg_range *r = &j->ranges[k];
    uint64_t s = r->off > a ? r->off : a, e = r->off + r->len < b ? r->off + r->len : b;
    if (s >= e) continue;
    int rc = r->uffd ? uffd_fill(w, buf + (s - a), r->addr + (s - r->off), e - s)
                     : pvw_add(w, buf + (s - a), r->addr + (s - r->off), e - s);
    if (rc) return -1;
  }
  /* The iovecs point into buf, which the next unit overwrites. */
  return pvw_flush(w);
}

/*
 * Maps the unit's part of a plain pages file in (page cache pages, no copy) so the copies below do not take a
 * fault per source page. Past the end of the file (truncated since it was checked) this is EFAULT, not a SIGBUS.
 */
static int populate(struct pg_job *j, const struct pg_unit *u) {
  if (madvise((void *)(uintptr_t)(j->map + u->a), (size_t)(u->b - u->a), MADV_POPULATE_READ) == 0) return 0;
  if (errno == EFAULT)
    return job_fail(j, ENODATA, "madvise(pages)", u->a, "the pages file ends before byte %llu, which the pagemap needs (truncated?)",
                    (unsigned long long)u->b);
  if (errno == EINVAL) return 0; /* a kernel without MADV_POPULATE_READ: the copies fault the pages in */
  return job_fail(j, errno, "madvise(pages)", 0, NULL);
}

/*
 * Reads chunks c0..c1 with one pread; checks each against the index, decompresses it into w->out and copies it
 * into the task right away, while its bytes are still in this core's cache (a chunk is 256 KiB, L2 is 1 MiB).
 */
static int load_chunks(struct pg_worker *w, const struct pg_unit *u) {
  struct pg_job *j = w->job;
  const struct pg_chunk *first = &j->chunks[u->c0], *last = &j->chunks[u->c1];
  uint64_t span = last->file_off + CHUNK_HDR + last->clen - first->file_off;
  const uint8_t *in = read_span(w, (size_t)span, first->file_off);
  if (!in) return -1;
  for (uint32_t i = u->c0; i <= u->c1; i++) {
    const struct pg_chunk *c = &j->chunks[i];
    const uint8_t *h = in + (c->file_off - first->file_off), *data = h + CHUNK_HDR;
    uint32_t magic, index, len, clen, crc, hcrc;
    uint64_t off;
    memcpy(&magic, h, 4);
    memcpy(&index, h + 4, 4);
    memcpy(&off, h + 8, 8);
    memcpy(&len, h + 16, 4);
    memcpy(&clen, h + 20, 4);
    memcpy(&crc, h + 24, 4);
    memcpy(&hcrc, h + 28, 4);
    if (magic != CHUNK_MAGIC)
      return job_fail(j, EBADMSG, "pages(chunk header)", c->file_off, "expected chunk header magic \"GWCK\" for chunk %u, found 0x%08x", i, magic);
    if ((uint32_t)crc32(0, h, 28) != hcrc)
      return job_fail(j, EBADMSG, "pages(chunk header)", c->file_off + 28, "chunk %u header checksum mismatch", i);
    if (index != i || off != c->off || len != c->len || clen != c->clen || crc != c->crc)
      return job_fail(j, EBADMSG, "pages(chunk header)", c->file_off,
                      "found chunk %u (data offset %llu, %u bytes, %u compressed) where the index has chunk %u (%llu, %u, %u): chunks reordered, missing or duplicated",
                      index, (unsigned long long)off, len, clen, i, (unsigned long long)c->off, c->len, c->clen);
    uint32_t got = j->fold_crc ? gw_crc32(0, data, clen) : (uint32_t)crc32(0, data, clen);
    if (got != crc)
      return job_fail(j, EBADMSG, "pages(chunk)", c->file_off + CHUNK_HDR, "chunk %u checksum mismatch: expected crc32 %08x, the %u bytes give %08x",
                      i, crc, clen, got);
    size_t n = ZSTD_decompressDCtx(w->dctx, w->out, c->len, data, clen);
    if (ZSTD_isError(n))
      return job_fail(j, EBADMSG, "pages(zstd)", c->file_off + CHUNK_HDR, "chunk %u does not decompress (expected a zstd frame of %u bytes): %s",
                      i, c->len, ZSTD_getErrorName(n));
    if (n != c->len)
      return job_fail(j, EBADMSG, "pages(zstd)", c->file_off + CHUNK_HDR, "chunk %u decompresses to %zu bytes, expected %u", i, n, c->len);
    if (scatter(w, w->out, c->off, c->off + c->len)) return -1;
  }
  return 0;
}

static void *work(void *arg) {
  struct pg_worker *w = arg;
  struct pg_job *j = w->job;
  while (!atomic_load(&j->stop)) {
    uint32_t k = atomic_fetch_add(&j->next, 1);
    if (k >= j->nunits) break;
    const struct pg_unit *u = &j->units[k];
    int rc = j->packed ? load_chunks(w, u) : populate(j, u);
    if (rc || (!j->packed && scatter(w, j->map + u->a, u->a, u->b))) break;
  }
  atomic_fetch_add(&j->copied, w->copied);
  atomic_fetch_add(&j->zero, w->zero);
  atomic_fetch_add(&j->direct, w->direct);
  return NULL;
}

static size_t chunk_size_of(const struct pg_job *j) {
  size_t m = 0;
  for (uint32_t i = 0; i < j->nchunks; i++)
    if (j->chunks[i].len > m) m = j->chunks[i].len;
  return m;
}

/* Units over the page stream, only where some range needs bytes; every unit boundary is a page boundary. */
static int plan_units(struct pg_job *j) {
  uint32_t cap = 16, n = 0;
  struct pg_unit *u = malloc(cap * sizeof *u);
  if (!u) return -ENOMEM;
  if (!j->packed) {
    for (uint32_t k = 0; k < j->nranges; k++) {
      for (uint64_t at = j->ranges[k].off, end = at + j->ranges[k].len; at < end;) {
        struct pg_unit *prev = n ? &u[n - 1] : NULL;
        uint64_t stop = end - at > UNIT_BYTES ? at + UNIT_BYTES : end;
        if (prev && prev->b == at && prev->b - prev->a < UNIT_BYTES) {
          /* Extend the previous unit over this contiguous piece, up to a unit's size. */
          uint64_t room = UNIT_BYTES - (prev->b - prev->a);
          prev->b = stop - at > room ? at + room : stop;
          at = prev->b;
          continue;
        }
        if (n == cap) {
          struct pg_unit *g = realloc(u, 2 * cap * sizeof *u);
          if (!g) return free(u), -ENOMEM;
          u = g, cap *= 2;
        }
        u[n++] = (struct pg_unit){at, stop, 0, 0};
        at = stop;
      }
    }
  } else {
    uint32_t k = 0;
    for (uint32_t i = 0; i < j->nchunks; i++) {
      const struct pg_chunk *c = &j->chunks[i];
      while (k < j->nranges && j->ranges[k].off + j->ranges[k].len <= c->off) k++;
      if (k == j->nranges) break;
      if (j->ranges[k].off >= c->off + c->len) continue; /* no range needs this chunk */
      struct pg_unit *prev = n ? &u[n - 1] : NULL;
      if (prev && prev->c1 + 1 == i && prev->b - prev->a < UNIT_BYTES) {
        prev->c1 = i;
        prev->b = c->off + c->len;
        continue;
      }
      if (n == cap) {
        struct pg_unit *g = realloc(u, 2 * cap * sizeof *u);
        if (!g) return free(u), -ENOMEM;
        u = g, cap *= 2;
      }
      u[n++] = (struct pg_unit){c->off, c->off + c->len, i, i};
    }
    for (uint32_t i = 0; i < n; i++) {
      const struct pg_chunk *a = &j->chunks[u[i].c0], *b = &j->chunks[u[i].c1];
      size_t in = (size_t)(b->file_off + CHUNK_HDR + b->clen - a->file_off);
      if (in > j->in_max) j->in_max = in;
    }
    j->out_max = chunk_size_of(j);
  }
  j->units = u;
  j->nunits = n;
  return 0;
}

/* A plain pages file: mapped whole (read-only, shared: the page cache itself), after checking it holds the data. */
static int map_plain(struct rst_ctx *ctx, struct pg_job *j) {
  struct stat st;
  if (fstat(j->fd, &st) < 0) return rst_fail(ctx, errno, "fstat(pages)", j->pid);
  uint64_t need = j->units[j->nunits - 1].b;
  if ((uint64_t)st.st_size < need) {
    j->err_off = (uint64_t)st.st_size;
    return rst_fail(ctx, ENODATA, "fstat(pages)", j->pid);
  }
  void *m = mmap(NULL, (size_t)need, PROT_READ, MAP_SHARED, j->fd, 0);
  if (m == MAP_FAILED) return rst_fail(ctx, errno, "mmap(pages)", j->pid);
  j->map = m;
  j->map_len = (size_t)need;
  return 0;
}

/* One worker per CPU; reading O_DIRECT, IO_WORKERS per CPU, so that a unit is decompressed while another is read. */
static unsigned worker_count(uint32_t nunits, int direct) {
  cpu_set_t set;
  unsigned n = sched_getaffinity(0, sizeof set, &set) == 0 ? (unsigned)CPU_COUNT(&set) : 1;
  if (direct) n *= IO_WORKERS;
  if (n > MAX_WORKERS) n = MAX_WORKERS;
  if (n > nunits) n = nunits;
  return n ? n : 1;
}

static int parse(struct rst_ctx *ctx, struct pg_job *j, const uint8_t *p, size_t n) {
  int32_t pid, fd;
  uint32_t kind, nr, nc, chunk_size;
  uint64_t size;
  if (n < 32) return rst_fail(ctx, EINVAL, "load-pages-request", 0);
  memcpy(&pid, p, 4);
  memcpy(&fd, p + 4, 4);
  memcpy(&kind, p + 8, 4);
  memcpy(&nr, p + 12, 4);
  memcpy(&nc, p + 16, 4);
  memcpy(&chunk_size, p + 20, 4);
  memcpy(&size, p + 24, 8);
  p += 32, n -= 32;
  if (kind > 1 || n / 24 < nr || (n - 24ull * nr) / 32 < nc || (kind == 1 && (chunk_size == 0 || chunk_size > MAX_CHUNK || chunk_size % PAGE_SZ)))
    return rst_fail(ctx, EINVAL, "load-pages-request", pid);
  struct rst_task *t = rst_task_find(ctx, pid);
  if (!t) return rst_fail(ctx, ESRCH, "load-pages-request", pid);
  j->pid = pid, j->hpid = rst_hpid(ctx, pid), j->fd = fd, j->packed = (int)kind, j->stream_size = size, j->uffd = t->uffd;
  j->fold_crc = gw_crc32_accelerated();
  j->ranges = calloc(nr ? nr : 1, sizeof *j->ranges);
  j->chunks = calloc(nc ? nc : 1, sizeof *j->chunks);
  if (!j->ranges || !j->chunks) return rst_fail(ctx, ENOMEM, "calloc", pid);
  j->nranges = nr, j->nchunks = nc;
  uint64_t prev_end = 0;
  for (uint32_t i = 0; i < nr; i++) {
    struct pg_range *r = &j->ranges[i];
    memcpy(&r->addr, p + 24ull * i, 8);
    memcpy(&r->len, p + 24ull * i + 8, 8);
    memcpy(&r->off, p + 24ull * i + 16, 8);
    /* In page-stream order, page-aligned, inside the data and the address space. */
    if (r->off < prev_end || (r->addr | r->len | r->off) % PAGE_SZ || !r->len || r->len > size || r->off > size - r->len ||
        r->addr + r->len < r->addr)
      return rst_fail(ctx, EINVAL, "load-pages(range)", pid);
    prev_end = r->off + r->len;
    r->uffd = 0;
    for (uint32_t g = 0; t->uffd >= 0 && g < t->nregions; g++) {
      uint64_t s = t->regions[g][0], e = s + t->regions[g][1];
      if (r->addr >= s && r->addr + r->len <= e) r->uffd = 1;
      /* A range across a region's edge: process_vm_writev there would fault into the userfaultfd we serve. */
      else if (r->addr < e && r->addr + r->len > s) return rst_fail(ctx, EINVAL, "load-pages(uffd edge)", pid);
    }
  }
  const uint8_t *cp = p + 24ull * nr;
  uint64_t off = 0;
  for (uint32_t i = 0; i < nc; i++) {
    struct pg_chunk *c = &j->chunks[i];
    memcpy(&c->file_off, cp + 32ull * i, 8);
    memcpy(&c->off, cp + 32ull * i + 8, 8);
    memcpy(&c->len, cp + 32ull * i + 16, 4);
    memcpy(&c->clen, cp + 32ull * i + 20, 4);
    memcpy(&c->crc, cp + 32ull * i + 24, 4);
    /* Gapless, each within the chunk size, page-aligned starts (so units start on page boundaries). */
    if (c->off != off || !c->len || c->len > chunk_size || c->off % PAGE_SZ || !c->clen ||
        c->clen > ZSTD_compressBound(chunk_size) + 4 || (i && c->file_off != j->chunks[i - 1].file_off + CHUNK_HDR + j->chunks[i - 1].clen))
      return rst_fail(ctx, EINVAL, "load-pages(chunk)", pid);
    off += c->len;
  }
  if (kind == 1 && off != size) return rst_fail(ctx, EINVAL, "load-pages(chunks)", pid);
  return 0;
}

/*
 * i32 pid | i32 fd (an OPEN of the pages file) | u32 kind (0 plain, 1 container) | u32 nranges | u32 nchunks |
 * u32 chunk_size | u64 page-stream size | nranges x (u64 addr | u64 len | u64 stream offset), in stream order |
 * nchunks x (u64 file offset | u64 stream offset | u32 len | u32 compressed len | u32 crc32 | u32 0).
 * Answer: u64 bytes written | u64 zero bytes skipped | u64 file bytes read with O_DIRECT. On damage: u64 file
 * offset | the reason (text).
 */
int rst_load_pages(struct rst_ctx *ctx, const uint8_t *p, size_t n, uint8_t *out, size_t *outlen) {
  struct pg_job j;
  memset(&j, 0, sizeof j);
  j.dfd = -1;
  pthread_mutex_init(&j.lock, NULL);
  struct pg_worker *ws = NULL;
  unsigned nw = 0;
  int rc = parse(ctx, &j, p, n);
  if (!rc && (rc = plan_units(&j)) < 0) rst_fail(ctx, -rc, "malloc", j.pid);
  if (!rc && j.packed && j.nunits) open_direct(&j);
  if (!rc) {
    nw = worker_count(j.nunits, j.dfd >= 0);
    ws = calloc(nw, sizeof *ws);
    if (!ws) rc = rst_fail(ctx, ENOMEM, "calloc", j.pid);
  }
  if (!rc && !j.packed && j.nunits) rc = map_plain(ctx, &j);
  for (unsigned i = 0; !rc && j.packed && i < nw; i++) {
    ws[i].out = malloc(j.out_max ? j.out_max : 1);
    /* Room for a span widened to DIO_ALIGN on both sides, aligned for O_DIRECT. */
    if (posix_memalign((void **)&ws[i].in, DIO_ALIGN, j.in_max + 2 * DIO_ALIGN)) ws[i].in = NULL;
    ws[i].dctx = ZSTD_createDCtx();
    if (!ws[i].out || !ws[i].in || !ws[i].dctx) rc = rst_fail(ctx, ENOMEM, "malloc", j.pid);
  }
  for (unsigned i = 0; !rc && i < nw; i++) ws[i].job = &j;
  if (!rc && j.nunits) {
    /* Workers never take a signal meant for the restorer (SIGCHLD, SIGTERM): they start with all blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 1; i < nw; i++) {
      int e = pthread_create(&ws[i].thread, NULL, work, &ws[i]);
      if (e) {
        job_fail(&j, e, "pthread_create", 0, NULL);
        break;
      }
      ws[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    work(&ws[0]);
    for (unsigned i = 1; i < nw; i++)
      if (ws[i].started) pthread_join(ws[i].thread, NULL);
    if (j.failed) {
      ctx->err = j.err;
      rc = -j.err.err;
      if (j.detail[0]) {
        memcpy(out, &j.err_off, 8);
        size_t dl = strlen(j.detail);
        memcpy(out + 8, j.detail, dl);
        *outlen = 8 + dl;
      }
    }
  }
  if (!rc) {
    uint64_t c = atomic_load(&j.copied), z = atomic_load(&j.zero), d = atomic_load(&j.direct);
    memcpy(out, &c, 8);
    memcpy(out + 8, &z, 8);
    memcpy(out + 16, &d, 8);
    *outlen = 24;
  }
  for (unsigned i = 0; ws && i < nw; i++) {
    free(ws[i].out);
    free(ws[i].in);
    ZSTD_freeDCtx(ws[i].dctx);
  }
  free(ws);
  if (j.map) munmap((void *)(uintptr_t)j.map, j.map_len);
  if (j.dfd >= 0) close(j.dfd);
  free(j.units);
  free(j.ranges);
  free(j.chunks);
  pthread_mutex_destroy(&j.lock);
  return rc;
}
