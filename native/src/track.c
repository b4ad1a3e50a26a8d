/* Dirty tracking for pre-copy: which pages of a running process were written since the last look.
 *
 * Soft-dirty is not available on these kernels; PAGEMAP_SCAN over a userfaultfd registered in write-protect
 * mode with UFFD_FEATURE_WP_ASYNC is. The kernel resolves a write fault on a protected page itself (the
 * process never blocks, it pays ~1.3 us on its first write to a page) and clears the page's uffd-wp bit;
 * PAGEMAP_SCAN reports the pages without the bit as written and, with PM_SCAN_WP_MATCHING, protects them again
 * in the same walk, so a scan is also the reset for the next round.
 *
 * The userfaultfd must belong to the target's mm, so it is created by an injected userfaultfd() in a stopped
 * thread of the target, copied here with pidfd_getfd() and closed in the target at once: the target's fd
 * table is as before and this helper holds the only reference. Closing it (TrackStop, the helper exiting or
 * being killed) makes the kernel unregister every range and drop the protection: the workload is left exactly
 * as it was.
 *
 * TrackStart: inject, copy, close in target, UFFDIO_API. TrackRegister: UFFDIO_REGISTER (WP) per range, then a
 * reset scan of the registered ones. TrackScan: written ranges (optionally re-protecting them). TrackStop:
 * close. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"
#include "regs.h"
#include "rsys.h"

/* ---- uapi values (include/uapi/linux/userfaultfd.h, fs.h): Debian 12's headers predate most of them. */
#define GW_UFFD_USER_MODE_ONLY 1
#define GW_UFFD_API 0xAAull
#define GW_UFFD_FEATURE_WP_ASYNC (1ull << 15)
#define GW_UFFDIO_REGISTER_MODE_WP (1ull << 1)

struct gw_uffdio_api {
	uint64_t api, features, ioctls;
};
struct gw_uffdio_range {
	uint64_t start, len;
};
struct gw_uffdio_register {
	struct gw_uffdio_range range;
	uint64_t mode, ioctls;
};
#define GW_UFFDIO 0xAA
#define GW_UFFDIO_API _IOWR(GW_UFFDIO, 0x3F, struct gw_uffdio_api)
#define GW_UFFDIO_REGISTER _IOWR(GW_UFFDIO, 0x00, struct gw_uffdio_register)

struct gw_page_region {
	uint64_t start, end, categories;
};
struct gw_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define GW_PAGEMAP_SCAN _IOWR('f', 16, struct gw_pm_scan_arg)
#define GW_PM_SCAN_WP_MATCHING (1ull << 0)
#define GW_PM_SCAN_CHECK_WPASYNC (1ull << 1)
#define GW_PAGE_IS_WRITTEN (1ull << 1)
#define GW_PAGE_IS_FILE (1ull << 2)
#define GW_PAGE_IS_PRESENT (1ull << 3)
#define GW_PAGE_IS_SWAPPED (1ull << 4)
#define GW_PAGE_IS_GUARD (1ull << 8)
#define GW_PAGE_IS_PFNZERO (1ull << 5)

/* Regions per PAGEMAP_SCAN call: 96 KiB of output, enough that a scan of 1 GiB written in scattered pages
 * needs few calls. */
#define SCAN_VEC 4096
/* Ranges per request: bounds what bad input can make us allocate (a process has at most vm.max_map_count
 * mappings, 65530 by default). */
#define MAX_RANGES 1048576

static struct track *track_find(struct helper *h, int pid)
{
	for (size_t i = 0; i < h->trk.n; i++)
		if (h->trk.v[i].pid == pid)
			return &h->trk.v[i];
	return NULL;
}

static void track_close(struct track *t)
{
	gw_closep(&t->pagemap_fd);
	gw_closep(&t->uffd);
}

static void track_remove(struct helper *h, int pid)
{
	for (size_t i = 0; i < h->trk.n; i++)
		if (h->trk.v[i].pid == pid) {
			track_close(&h->trk.v[i]);
			h->trk.v[i] = h->trk.v[--h->trk.n];
			return;
		}
}

void track_close_all(struct helper *h)
{
	while (h->trk.n)
		track_remove(h, h->trk.v[h->trk.n - 1].pid);
	free(h->trk.v);
	h->trk.v = NULL;
	h->trk.cap = 0;
}

static struct track *track_get(struct helper *h, int pid)
{
	struct track *t = track_find(h, pid);
	if (!t)
		gw_fail(&h->err, ENOENT, "track", pid, "pid %d is not tracked by this helper (TrackStart first)", pid);
	return t;
}

/* One injected syscall; its -errno result is returned in *ret (not recorded as a failure). */
static int inject(struct helper *h, struct rsys *rs, long nr, uint64_t a0, uint64_t a1, int64_t *ret)
{
	uint64_t args[6] = { a0, a1, 0, 0, 0, 0 };
	return rsys_call(h, rs, nr, args, ret);
}

/* userfaultfd() run by thread tid of pid; the new fd is copied here and closed in the target on every path. */
static int make_uffd(struct helper *h, int pid, int tid, int *uffd, int *remote_out)
{
	struct user_regs_struct regs;
	uint64_t ip;
	struct rsys rs = { 0 };
	int64_t remote = -1, r;
	int rc = -1;
	*uffd = -1;
	if (regs_get(h, tid, &regs) || rsys_find_syscall(h, pid, &regs, &ip) || rsys_begin(h, &rs, tid, ip))
		goto out;
	/* User-mode-only needs no privilege (vm.unprivileged_userfaultfd); write-protect faults are resolved by
	 * the kernel either way under WP_ASYNC, also for writes the kernel makes on the process's behalf. */
	if (inject(h, &rs, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | GW_UFFD_USER_MODE_ONLY, 0, &remote))
		goto out;
	if (remote == -EINVAL && inject(h, &rs, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, &remote))
		goto out;
	if (remote < 0) {
		gw_fail(&h->err, (int)-remote, "userfaultfd", tid, "injected into thread %d of %d", tid, pid);
		remote = -1;
		goto out;
	}
	*remote_out = (int)remote;
	*uffd = grab_fd(h, pid, (int)remote);
	if (*uffd < 0) {
		gw_note(&h->err, "the userfaultfd injected into the target");
		goto out;
	}
	rc = 0;
out:
	/* The target's copy goes whatever happened: its fd table must end as it was. */
	if (remote >= 0 && rs.active) {
		struct gw_err saved = h->err;
		gw_clear(&h->err);
		if ((inject(h, &rs, SYS_close, (uint64_t)remote, 0, &r) || r < 0) && !saved.errnum) {
			if (!h->err.errnum)
				gw_fail(&h->err, (int)-r, "close", tid, "userfaultfd %d injected into %d", (int)remote, pid);
			saved = h->err;
			rc = -1;
		}
		h->err = saved;
	}
	if (rsys_end(h, &rs))
		rc = -1;
	if (rc)
		gw_closep(uffd);
	return rc;
}

int op_track_start(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc, pid = 0, tid = 0, remote = -1;
	uint64_t t0 = now_ns();
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_TrackStartReq_pid)
			pid = (int)f.v;
		else if (f.num == F_TrackStartReq_tid)
			tid = (int)f.v;
	}
	if (rc < 0 || pid <= 0)
		return gw_fail(&h->err, EBADMSG, "decode", pid, "malformed TrackStartReq (pid %d)", pid);
	if (!tid)
		tid = pid;
	if (track_find(h, pid))
		return gw_fail(&h->err, EEXIST, "track", pid, "pid %d is already tracked by this helper", pid);
	if (h->trk.n == h->trk.cap) {
		size_t cap = h->trk.cap ? h->trk.cap * 2 : 16;
		struct track *v = realloc(h->trk.v, cap * sizeof(*v));
		if (!v)
			return gw_fail(&h->err, ENOMEM, "realloc", pid, "tracking table");
		h->trk.v = v;
		h->trk.cap = cap;
	}
	struct track t = { .pid = pid, .uffd = -1, .pagemap_fd = -1 };
	if (make_uffd(h, pid, tid, &t.uffd, &remote))
		return -1;
	struct gw_uffdio_api api = { .api = GW_UFFD_API, .features = GW_UFFD_FEATURE_WP_ASYNC };
	if (ioctl(t.uffd, GW_UFFDIO_API, &api)) {
		gw_fail_errno(&h->err, "ioctl(UFFDIO_API)", pid, "WP_ASYNC userfaultfd (kernel 6.7 or later needed)");
		track_close(&t);
		return -1;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	t.pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (t.pagemap_fd < 0) {
		gw_fail_errno(&h->err, "open", pid, "%s", path);
		track_close(&t);
		return -1;
	}
	h->trk.v[h->trk.n++] = t;
	pb_int(out, F_TrackStartResp_target_fd, remote);
	pb_varint(out, F_TrackStartResp_features, api.features);
	pb_varint(out, F_TrackStartResp_elapsed_ns, now_ns() - t0);
	return 0;
}

/* pid and (start, length) pairs of a TrackRegisterReq / TrackScanReq / PresentPagesReq (same field numbers 1-3),
 * plus the bool in field 4 (TrackScanReq.reset, PresentPagesReq.keep_file). */
struct ranges_req {
	int pid;
	int reset;
	int guards; /* field 5 of PresentPagesReq */
	uint64_t *v; /* start, end pairs */
	size_t n;
};

static int parse_ranges(struct helper *h, const uint8_t *req, size_t len, struct ranges_req *q, const char *what)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f, fs = { 0 }, fl = { 0 };
	int rc;
	memset(q, 0, sizeof(*q));
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_TrackScanReq_pid)
			q->pid = (int)f.v;
		else if (f.num == F_TrackScanReq_starts)
			fs = f;
		else if (f.num == F_TrackScanReq_lengths)
			fl = f;
		else if (f.num == F_TrackScanReq_reset)
			q->reset = f.v != 0;
		else if (f.num == F_PresentPagesReq_guards)
			q->guards = f.v != 0;
	}
	if (rc < 0 || q->pid <= 0)
		return gw_fail(&h->err, EBADMSG, "decode", q->pid, "malformed %s (pid %d)", what, q->pid);
	if (!fs.num)
		return 0;
	if (!fl.num)
		return gw_fail(&h->err, EINVAL, "decode", q->pid, "%s: starts without lengths", what);
	struct pb_values is, il;
	pb_values_init(&is, &fs);
	pb_values_init(&il, &fl);
	size_t cap = 0;
	for (;;) {
		uint64_t s, l;
		int a = pb_values_next(&is, &s), b = pb_values_next(&il, &l);
		if (a < 0 || b < 0 || a != b)
			return gw_fail(&h->err, EINVAL, "decode", q->pid, "%s: starts and lengths differ in count", what);
		if (!a)
			return 0;
		if (q->n == MAX_RANGES)
			return gw_fail(&h->err, E2BIG, "decode", q->pid, "%s: more than %d ranges", what, MAX_RANGES);
		if ((s | l) & (uint64_t)(h->page_size - 1) || !l || s + l < s)
			return gw_fail(&h->err, EINVAL, "decode", q->pid, "%s: range 0x%llx+0x%llx is not page aligned",
				       what, (unsigned long long)s, (unsigned long long)l);
		if (q->n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *v = realloc(q->v, cap * 2 * sizeof(*v));
			if (!v)
				return gw_fail(&h->err, ENOMEM, "realloc", q->pid, "%s ranges", what);
			q->v = v;
		}
		q->v[2 * q->n] = s;
		q->v[2 * q->n + 1] = s + l;
		q->n++;
	}
}

/* What one PAGEMAP_SCAN walk looks for (fields of struct pm_scan_arg). */
struct scan_query {
	uint64_t flags, category_mask, category_inverted, category_anyof_mask, return_mask;
};

/* Regions of [start, end) matching q, appended to *outv (start, end pairs, adjacent ones merged). */
static int scan_pages(struct helper *h, int pid, int pagemap_fd, uint64_t start, uint64_t end,
		      const struct scan_query *q, struct gw_page_region *vec, struct pb_buf *outv, uint64_t *pages)
{
	while (start < end) {
		struct gw_pm_scan_arg a = {
			.size = sizeof(a),
			.flags = q->flags,
			.start = start,
			.end = end,
			.vec = (uint64_t)(uintptr_t)vec,
			.vec_len = SCAN_VEC,
			.category_mask = q->category_mask,
			.category_inverted = q->category_inverted,
			.category_anyof_mask = q->category_anyof_mask,
			.return_mask = q->return_mask,
		};
		long n = ioctl(pagemap_fd, GW_PAGEMAP_SCAN, &a);
		if (n < 0)
			return gw_fail_errno(&h->err, "ioctl(PAGEMAP_SCAN)", pid, "0x%llx-0x%llx%s",
					     (unsigned long long)start, (unsigned long long)end,
					     q->flags & GW_PM_SCAN_WP_MATCHING ? " (reset)" : "");
		for (long i = 0; i < n; i++) {
			uint64_t *last = outv->len >= 16 ? (uint64_t *)(outv->data + outv->len - 16) : NULL;
			*pages += (vec[i].end - vec[i].start) / (uint64_t)h->page_size;
			if (last && last[1] == vec[i].start) {
				last[1] = vec[i].end;
				continue;
			}
			uint64_t *p = (uint64_t *)pb_reserve(outv, 16);
			if (!p)
				return gw_fail(&h->err, ENOMEM, "realloc", pid, "page regions");
			p[0] = vec[i].start;
			p[1] = vec[i].end;
			outv->len += 16;
		}
		if (a.walk_end <= start)
			return gw_fail(&h->err, EPROTO, "ioctl(PAGEMAP_SCAN)", pid, "walk made no progress at 0x%llx",
				       (unsigned long long)start);
		start = a.walk_end;
	}
	return 0;
}

/* The output buffer of one PAGEMAP_SCAN call (SCAN_VEC regions). */
static struct gw_page_region *scan_vec(struct helper *h, int pid)
{
	struct gw_page_region *vec = malloc(SCAN_VEC * sizeof(*vec));
	if (!vec)
		gw_fail(&h->err, ENOMEM, "malloc", pid, "scan buffer");
	return vec;
}

/* Written pages of [start, end); with reset they are write-protected again in the same walk. */
static int scan_range(struct helper *h, struct track *t, uint64_t start, uint64_t end, int reset,
		      struct gw_page_region *vec, struct pb_buf *outv, uint64_t *pages)
{
	struct scan_query q = {
		.flags = GW_PM_SCAN_CHECK_WPASYNC | (reset ? GW_PM_SCAN_WP_MATCHING : 0),
		.category_mask = GW_PAGE_IS_WRITTEN,
		.return_mask = GW_PAGE_IS_WRITTEN,
	};
	return scan_pages(h, t->pid, t->pagemap_fd, start, end, &q, vec, outv, pages);
}

int op_track_register(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct ranges_req q;
	uint64_t t0 = now_ns(), pages = 0;
	struct pb_buf ignored = { 0 };
	struct gw_page_region *vec AUTO_FREE = NULL;
	int rc = -1;
	if (parse_ranges(h, req, len, &q, "TrackRegisterReq"))
		goto out;
	struct track *t = track_get(h, q.pid);
	if (!t)
		goto out;
	vec = scan_vec(h, q.pid);
	if (!vec)
		goto out;
	for (size_t i = 0; i < q.n; i++) {
		struct gw_uffdio_register reg = {
			.range = { q.v[2 * i], q.v[2 * i + 1] - q.v[2 * i] },
			.mode = GW_UFFDIO_REGISTER_MODE_WP,
		};
		int e = 0;
		if (ioctl(t->uffd, GW_UFFDIO_REGISTER, &reg))
			e = errno;
		/* The reset: what is present now counts as copied by the round that follows. */
		else if (scan_range(h, t, q.v[2 * i], q.v[2 * i + 1], 1, vec, &ignored, &pages))
			goto out;
		ignored.len = 0;
		pb_int(out, F_TrackRegisterResp_errnos, e);
	}
	rc = 0;
out:
	pb_buf_free(&ignored);
	free(q.v);
	pb_varint(out, F_TrackRegisterResp_elapsed_ns, now_ns() - t0);
	return rc;
}

int op_track_scan(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct ranges_req q;
	uint64_t t0 = now_ns(), pages = 0;
	struct pb_buf regions = { 0 };
	struct gw_page_region *vec AUTO_FREE = NULL;
	int rc = -1;
	if (parse_ranges(h, req, len, &q, "TrackScanReq"))
		goto out;
	struct track *t = track_get(h, q.pid);
	if (!t)
		goto out;
	vec = scan_vec(h, q.pid);
	if (!vec)
		goto out;
	for (size_t i = 0; i < q.n; i++) {
		size_t mark = regions.len;
		uint64_t pages_before = pages;
		if (!scan_range(h, t, q.v[2 * i], q.v[2 * i + 1], q.reset, vec, &regions, &pages))
			continue;
		/* A range whose mapping changed since the caller looked (EPERM: part of it is no longer registered) is
		 * reported as failed, its partial output dropped: the caller stops trusting it. Other ranges go on. */
		if (h->err.errnum != EPERM && h->err.errnum != EINVAL)
			goto out;
		gw_clear(&h->err);
		regions.len = mark;
		pages = pages_before;
		pb_varint(out, F_TrackScanResp_failed, i);
	}
	pb_bytes(out, F_TrackScanResp_regions, regions.data, regions.len);
	rc = 0;
out:
	pb_buf_free(&regions);
	free(q.v);
	pb_varint(out, F_TrackScanResp_pages, pages);
	pb_varint(out, F_TrackScanResp_elapsed_ns, now_ns() - t0);
	return rc;
}

int op_track_stop(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc, pid = 0;
	while ((rc = pb_next(&r, &f)) > 0)
		if (f.num == F_TrackStopReq_pid)
			pid = (int)f.v;
	if (rc < 0 || pid <= 0)
		return gw_fail(&h->err, EBADMSG, "decode", pid, "malformed TrackStopReq (pid %d)", pid);
	/* Closing the only reference makes the kernel unregister every range of this userfaultfd and drop the
	 * protection before close() returns; ranges that moved or split meanwhile are covered too, which an
	 * UFFDIO_UNREGISTER per known range would not guarantee. A pid never started or stopped already: nothing
	 * to undo. */
	if (track_find(h, pid)) {
		track_remove(h, pid);
		pb_int(out, F_TrackStopResp_stopped, pid);
	}
	return 0;
}

/* The pages a dump takes from private mappings, in one PAGEMAP_SCAN walk per range instead of a pagemap entry per
 * page: present or swapped, not the shared zero page, not page-cache pages (which the file has). No userfaultfd
 * needed. */
int op_present_pages(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct ranges_req q;
	uint64_t t0 = now_ns(), pages = 0;
	struct pb_buf regions = { 0 };
	struct gw_page_region *vec AUTO_FREE = NULL;
	int pagemap_fd AUTO_CLOSE = -1;
	int rc = -1;
	if (parse_ranges(h, req, len, &q, "PresentPagesReq"))
		goto out;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", q.pid);
	pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (pagemap_fd < 0) {
		gw_fail_errno(&h->err, "open", q.pid, "%s", path);
		goto out;
	}
	vec = scan_vec(h, q.pid);
	if (!vec)
		goto out;
	/* keep_file (field 4, parsed as q.reset): anonymous mappings, where the only non-anonymous pages are the
	 * vdso's, which are dumped. */
	const uint64_t skip = GW_PAGE_IS_PFNZERO | (q.reset ? 0 : GW_PAGE_IS_FILE);
	const struct scan_query present = {
		.category_mask = skip,
		.category_inverted = skip,
		.category_anyof_mask = GW_PAGE_IS_PRESENT | GW_PAGE_IS_SWAPPED,
		.return_mask = GW_PAGE_IS_PRESENT | GW_PAGE_IS_SWAPPED,
	};
	/* Guard markers are swap entries: the present scan reports them as swapped pages too. */
	const struct scan_query guards = { .category_mask = GW_PAGE_IS_GUARD, .return_mask = GW_PAGE_IS_GUARD };
	const struct scan_query sq = q.guards ? guards : present;
	for (size_t i = 0; i < q.n; i++)
		if (scan_pages(h, q.pid, pagemap_fd, q.v[2 * i], q.v[2 * i + 1], &sq, vec, &regions, &pages))
			goto out;
	pb_bytes(out, F_PresentPagesResp_regions, regions.data, regions.len);
	rc = 0;
out:
	pb_buf_free(&regions);
	free(q.v);
	pb_varint(out, F_PresentPagesResp_pages, pages);
	pb_varint(out, F_PresentPagesResp_elapsed_ns, now_ns() - t0);
	return rc;
}
