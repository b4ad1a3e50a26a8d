/* The receiving end's frame pump: splits the bytes `godwit receive` reads from its stdin into frames, and writes the
 * raw data frames of large files straight to disk without handing them to JavaScript.
 *
 * Why: in JavaScript the receiver spent 0.6-0.7 s of CPU per 542 MB (a 1 MiB chunk became a dozen 64 KiB reads, each
 * a stream event, a parse, a crc call, a queue entry and a file write through libuv), against 0.09 s for `cat`; on
 * two cores that was the CPU OpenSSH's ssh and sshd needed. Here a read of up to 1 MiB is parsed in one call: a data
 * frame is checked, hashed, copied into a 1 MiB block and the block handed to a writer thread.
 *
 * What JavaScript still sees: the preamble and every frame the pump does not take, whole (a fresh Buffer each), in
 * stream order, with its stream offset. The pump takes a frame only when JavaScript says it has nothing pending
 * (`fast`) and, within one feed, only until it has handed a frame over: so a frame is never written before the
 * frames ahead of it are processed. It takes a data frame when the header checks out (checksum, type Data, no flags:
 * zstd chunks go to JavaScript, reserved bytes zero), the file id is registered (open()), the raw length matches
 * the payload and does not pass the announced size. Anything it cannot vouch for goes to JavaScript, whose parser
 * names the problem; after a header that fails its checksum every byte goes there (the stream cannot be trusted
 * to say where frames are any more). A taken frame whose payload checksum fails is an error of feed() itself.
 *
 * Errors are thrown as Node's errno errors (errno, syscall) or, for the stream, with code EPROTO, the problem and
 * the stream offset; a write error carries the file id. Memory: one frame being assembled for JavaScript (at most
 * MAX_FRAME bytes, its length checked by the header checksum first) and BLOCKS aligned blocks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addon.h"

#define PREAMBLE_LEN 8
#define HEADER 16
#define PREFIX 8                       /* a data frame's payload starts with u32 file id, u32 raw length */
#define TYPE_DATA 3
#define MAX_CHUNK (4u << 20)           /* transport/frames.ts MAX_CHUNK_SIZE */
#define MAX_FRAME (HEADER + PREFIX + MAX_CHUNK) /* the largest payload any frame type may have, plus its header */
#define BLOCK (1u << 20)               /* one write; O_DIRECT wants memory, offsets and lengths aligned */
#define ALIGN 4096u
#define BLOCKS 4                       /* two filling or queued while two are written: the disk and the stream overlap */
#define MAX_FILES 2 /* files taken at once: each may hold a partial block, and the writer must always get one */
#define WRITE_BEHIND (32ull << 20)     /* start page-cache writeback this often, so the fsync at the end finds little */

static const uint8_t preamble[PREAMBLE_LEN] = { 0x89, 'G', 'O', 'D', 'W', 'I', 'T', 0x0a };

enum state { S_PREAMBLE, S_HEADER, S_TAKE, S_GIVE, S_PASS };

struct block {
	uint8_t *buf;
	size_t len;
	uint64_t off;
	struct file *file;
	struct block *next;
};

struct file {
	bool used;
	uint32_t id;
	int fd;
	int direct;          /* O_DIRECT fd of the same inode, or -1: the page cache */
	int64_t expected;    /* announced size, or -1 */
	uint64_t size;       /* bytes accepted so far */
	uint32_t crc;        /* of those bytes */
	struct block *cur;   /* the block being filled */
	unsigned inflight;   /* blocks of this file queued or being written (under the pump's lock) */
	uint64_t synced;     /* page-cache writeback started up to here (writer thread only) */
	int err;             /* first write error (under the lock) */
	const char *err_syscall;
};

struct pump {
	/* parsing (main thread) */
	enum state state;
	uint8_t hdr[HEADER + PREFIX];
	size_t have;          /* bytes of hdr (S_PREAMBLE/S_HEADER) or of give (S_GIVE) */
	uint64_t offset;      /* stream offset of the next byte */
	uint64_t frame_at;    /* stream offset of the current frame's header */
	uint64_t frames;      /* frames seen */
	uint32_t left;        /* S_TAKE: data bytes still to come */
	uint32_t frame_crc;   /* S_TAKE: crc of the data so far */
	struct file *take;
	uint8_t *give;        /* S_GIVE: the frame being assembled for JavaScript */
	size_t give_len;
	double *counters;     /* JS-visible: data bytes taken, credit bytes (8 + data per frame), frames taken */
	struct file files[MAX_FILES];

	/* the writer thread and its queue */
	pthread_t thread;
	bool started, stop, closed;
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	struct block blocks[BLOCKS];
	struct block *free, *queue, **queue_tail;
};

/* ---------------------------------------------------------------------------------------------- crc combine */

/* a*b mod P over GF(2), reflected (bit 31 is x^0): zlib's crc32_combine, as images/crc32.ts computes it. */
static uint32_t mult_mod_p(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;
	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ 0xedb88320u : b >> 1;
	}
	return p;
}

static uint32_t crc32_combine(uint32_t a, uint32_t b, uint64_t len_b)
{
	uint32_t x2n = 1u << 30; /* x^1, then x^(2^k) */
	uint32_t p = 1u << 31;   /* x^0 */
	for (uint64_t n = len_b * 8; n; n >>= 1) {
		if (n & 1)
			p = mult_mod_p(x2n, p);
		x2n = mult_mod_p(x2n, x2n);
	}
	return len_b ? mult_mod_p(p, a) ^ b : a;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---------------------------------------------------------------------------------------------- writer thread */

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off, const char **syscall)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			*syscall = "pwrite";
			return w < 0 ? errno : EIO;
		}
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

static void *writer(void *arg)
{
	struct pump *pp = arg;
	pthread_mutex_lock(&pp->lock);
	for (;;) {
		while (!pp->queue && !pp->stop)
			pthread_cond_wait(&pp->work, &pp->lock);
		if (!pp->queue)
			break;
		struct block *b = pp->queue;
		pp->queue = b->next;
		if (!pp->queue)
			pp->queue_tail = &pp->queue;
		struct file *f = b->file;
		bool skip = f->err != 0;
		pthread_mutex_unlock(&pp->lock);

		const char *syscall = NULL;
		int err = 0;
		if (!skip) {
			/* A last partial block goes through O_DIRECT padded to ALIGN; open() truncates the file back after. */
			size_t len = f->direct >= 0 ? (b->len + ALIGN - 1) & ~(size_t)(ALIGN - 1) : b->len;
			if (len > b->len)
				memset(b->buf + b->len, 0, len - b->len);
			err = write_all(f->direct >= 0 ? f->direct : f->fd, b->buf, len, b->off, &syscall);
			uint64_t end = b->off + b->len;
			if (!err && f->direct < 0 && end - f->synced >= WRITE_BEHIND) {
				/* Best effort: writeback starts now instead of all at the fsync. */
				(void)sync_file_range(f->fd, (off_t)f->synced, (off_t)(end - f->synced), SYNC_FILE_RANGE_WRITE);
				f->synced = end;
			}
		}

		pthread_mutex_lock(&pp->lock);
		if (err && !f->err) {
			f->err = err;
			f->err_syscall = syscall;
		}
		f->inflight--;
		b->file = NULL;
		b->next = pp->free;
		pp->free = b;
		pthread_cond_broadcast(&pp->done);
	}
	pthread_mutex_unlock(&pp->lock);
	return NULL;
}

/* A free block, waiting for the writer if all are queued (the disk is slower than the stream: backpressure). */
static struct block *get_block(struct pump *pp, struct file *f, uint64_t off)
{
	pthread_mutex_lock(&pp->lock);
	while (!pp->free)
		pthread_cond_wait(&pp->done, &pp->lock);
	struct block *b = pp->free;
	pp->free = b->next;
	pthread_mutex_unlock(&pp->lock);
	b->len = 0;
	b->off = off;
	b->file = f;
	b->next = NULL;
	return b;
}

static void queue_block(struct pump *pp, struct block *b)
{
	pthread_mutex_lock(&pp->lock);
	b->file->inflight++;
	*pp->queue_tail = b;
	pp->queue_tail = &b->next;
	pthread_cond_signal(&pp->work);
	pthread_mutex_unlock(&pp->lock);
}

/* Queue f's partial block (if any) and wait until none of f's blocks is queued or being written. */
static void drain_file(struct pump *pp, struct file *f)
{
	if (f->cur) {
		struct block *b = f->cur;
		f->cur = NULL;
		if (b->len > 0) {
			queue_block(pp, b);
		} else {
			pthread_mutex_lock(&pp->lock);
			b->file = NULL;
			b->next = pp->free;
			pp->free = b;
			pthread_cond_broadcast(&pp->done);
			pthread_mutex_unlock(&pp->lock);
		}
	}
	pthread_mutex_lock(&pp->lock);
	while (f->inflight > 0)
		pthread_cond_wait(&pp->done, &pp->lock);
	pthread_mutex_unlock(&pp->lock);
}

/* Append data (whose crc is crc) to f: copied into its block, full blocks to the writer. */
static void append(struct pump *pp, struct file *f, const uint8_t *p, size_t n, uint32_t crc)
{
	f->crc = crc32_combine(f->crc, crc, n);
	while (n > 0) {
		if (!f->cur)
			f->cur = get_block(pp, f, f->size);
		size_t k = BLOCK - f->cur->len;
		if (k > n)
			k = n;
		memcpy(f->cur->buf + f->cur->len, p, k);
		f->cur->len += k;
		f->size += k;
		p += k;
		n -= k;
		if (f->cur->len == BLOCK) {
			queue_block(pp, f->cur);
			f->cur = NULL;
		}
	}
}

/* ---------------------------------------------------------------------------------------------- the pump object */

static struct file *find(struct pump *pp, uint32_t id)
{
	for (int i = 0; i < MAX_FILES; i++)
		if (pp->files[i].used && pp->files[i].id == id)
			return &pp->files[i];
	return NULL;
}

/* find(), throwing ENOENT for an id that is not open. */
static struct file *open_file(napi_env env, struct pump *pp, uint32_t id)
{
	struct file *f = find(pp, id);
	if (!f)
		napi_throw_error(env, "ENOENT", "file id is not open in the pump");
	return f;
}

static void pump_free(struct pump *pp)
{
	if (pp->started) {
		pthread_mutex_lock(&pp->lock);
		pp->stop = true;
		pthread_cond_signal(&pp->work);
		pthread_mutex_unlock(&pp->lock);
		pthread_join(pp->thread, NULL);
		pp->started = false;
	}
	for (int i = 0; i < BLOCKS; i++) {
		free(pp->blocks[i].buf);
		pp->blocks[i].buf = NULL;
	}
	free(pp->give);
	pp->give = NULL;
}

static void finalize(napi_env env, void *data, void *hint)
{
	(void)env;
	(void)hint;
	struct pump *pp = data;
	pump_free(pp);
	pthread_mutex_destroy(&pp->lock);
	pthread_cond_destroy(&pp->work);
	pthread_cond_destroy(&pp->done);
	free(pp);
}

static napi_value throw_proto(napi_env env, struct pump *pp, uint64_t at, const char *problem)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "frame %llu: %s", (unsigned long long)pp->frames, problem);
	napi_value m, e, v;
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
	napi_create_error(env, NULL, m, &e);
	napi_create_string_utf8(env, "EPROTO", NAPI_AUTO_LENGTH, &v);
	napi_set_named_property(env, e, "code", v);
	napi_create_double(env, (double)at, &v);
	napi_set_named_property(env, e, "offset", v);
	napi_throw(env, e);
	return NULL;
}

/* A write error of f (from the writer thread), thrown with the file id; NULL-returning like every thrower. */
static napi_value throw_write(napi_env env, struct file *f)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "%s failed: %s (file id %u)", f->err_syscall, strerror(f->err), f->id);
	return gw_throw_sys(env, f->err, f->err_syscall, msg, "fileId", f->id);
}

static int file_error(struct pump *pp, struct file *f)
{
	pthread_mutex_lock(&pp->lock);
	int err = f->err;
	pthread_mutex_unlock(&pp->lock);
	return err;
}

static struct pump *this_pump(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv)
{
	napi_value self;
	void *data = NULL;
	if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok || napi_unwrap(env, self, &data) != napi_ok || !data) {
		napi_throw_type_error(env, NULL, "not a Pump");
		return NULL;
	}
	if (((struct pump *)data)->closed) {
		napi_throw_error(env, "ECLOSED", "the frame pump is closed");
		return NULL;
	}
	return data;
}

/* The call's pump and the open file its one argument (an id) names: 0, with *fp NULL if no such file is open (an
 * ENOENT error thrown too when `must` is set); -1 with an exception pending on a bad call. */
static int file_arg(napi_env env, napi_callback_info info, const char *usage, bool must, struct pump **ppp, struct file **fp)
{
	size_t argc = 1;
	napi_value argv[1];
	struct pump *pp = this_pump(env, info, &argc, argv);
	if (!pp)
		return -1;
	uint32_t id;
	if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) {
		napi_throw_type_error(env, NULL, usage);
		return -1;
	}
	*ppp = pp;
	*fp = must ? open_file(env, pp, id) : find(pp, id);
	return must && !*fp ? -1 : 0;
}

/* new Pump(counters: Float64Array(3)) */
static napi_value pump_new(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1], self;
	napi_typedarray_type type;
	size_t length;
	void *counters;
	if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok || argc < 1 ||
	    napi_get_typedarray_info(env, argv[0], &type, &length, &counters, NULL, NULL) != napi_ok ||
	    type != napi_float64_array || length < 3) {
		napi_throw_type_error(env, NULL, "new Pump(Float64Array(3))");
		return NULL;
	}
	struct pump *pp = calloc(1, sizeof(*pp));
	if (!pp)
		return gw_throw_sys(env, ENOMEM, "calloc", "cannot allocate the frame pump", NULL, 0);
	pp->counters = counters;
	pp->state = S_PREAMBLE;
	pp->queue_tail = &pp->queue;
	pthread_mutex_init(&pp->lock, NULL);
	pthread_cond_init(&pp->work, NULL);
	pthread_cond_init(&pp->done, NULL);
	int err = 0;
	for (int i = 0; i < BLOCKS && !err; i++) {
		err = posix_memalign((void **)&pp->blocks[i].buf, ALIGN, BLOCK);
		if (!err) {
			pp->blocks[i].next = pp->free;
			pp->free = &pp->blocks[i];
		}
	}
	const char *syscall = "posix_memalign";
	if (!err) {
		syscall = "pthread_create";
		err = pthread_create(&pp->thread, NULL, writer, pp);
		pp->started = err == 0;
	}
	/* The counters array lives as long as the pump: the wrapper object holds it (JS side). */
	if (err || napi_wrap(env, self, pp, finalize, NULL, NULL) != napi_ok) {
		finalize(env, pp, NULL);
		return gw_throw_sys(env, err ? err : ENOMEM, syscall, "cannot start the frame pump", NULL, 0);
	}
	return self;
}

/* open(id, fd, directFd (-1: none), expected size (-1: unknown)): take the data frames of file id from now on. */
static napi_value pump_open(napi_env env, napi_callback_info info)
{
	size_t argc = 4;
	napi_value argv[4];
	struct pump *pp = this_pump(env, info, &argc, argv);
	if (!pp)
		return NULL;
	uint32_t id;
	int32_t fd, direct;
	int64_t expected;
	if (argc < 4 || napi_get_value_uint32(env, argv[0], &id) != napi_ok || napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
	    napi_get_value_int32(env, argv[2], &direct) != napi_ok || napi_get_value_int64(env, argv[3], &expected) != napi_ok || fd < 0) {
		napi_throw_type_error(env, NULL, "open(id, fd, directFd, expectedSize)");
		return NULL;
	}
	if (find(pp, id)) {
		napi_throw_error(env, "EEXIST", "file id is open in the pump already");
		return NULL;
	}
	for (int i = 0; i < MAX_FILES; i++) {
		struct file *f = &pp->files[i];
		if (f->used)
			continue;
		*f = (struct file){ .used = true, .id = id, .fd = fd, .direct = direct, .expected = expected };
		return NULL;
	}
	napi_throw_error(env, "EMFILE", "too many files open in the pump");
	return NULL;
}

/* write(id, Uint8Array[, crc]) -> bool: bytes of file id that JavaScript parsed (a zstd chunk, or a frame the pump
 * did not take), appended in order; false (nothing written) if they would pass the announced size. `crc`: their
 * crc32 when JavaScript has it (it checked the frame), so that they are not hashed again. */
static napi_value pump_write(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3];
	struct pump *pp = this_pump(env, info, &argc, argv);
	if (!pp)
		return NULL;
	uint32_t id, crc = 0;
	size_t length;
	uint8_t *data;
	bool known = false;
	napi_valuetype t = napi_undefined;
	if (argc > 2 && napi_typeof(env, argv[2], &t) == napi_ok && t != napi_undefined)
		known = napi_get_value_uint32(env, argv[2], &crc) == napi_ok;
	if (argc < 2 || napi_get_value_uint32(env, argv[0], &id) != napi_ok || !gw_bytes_arg(env, argv[1], &data, &length) ||
	    (t != napi_undefined && !known)) {
		napi_throw_type_error(env, NULL, "write(id, Uint8Array[, crc])");
		return NULL;
	}
	struct file *f = open_file(env, pp, id);
	if (!f)
		return NULL;
	if (file_error(pp, f))
		return throw_write(env, f);
	bool ok = f->expected < 0 || f->size + length <= (uint64_t)f->expected;
	if (ok)
		append(pp, f, data, length, known ? crc : gw_crc32(0, data, length));
	napi_value r;
	napi_get_boolean(env, ok, &r);
	return r;
}

/* finish(id) -> { size, crc }: every byte of file id written (not synced), the file cut to its size if the last
 * block was padded; the id is forgotten. */
static napi_value pump_finish(napi_env env, napi_callback_info info)
{
	struct pump *pp;
	struct file *f;
	if (file_arg(env, info, "finish(id)", true, &pp, &f) < 0)
		return NULL;
	drain_file(pp, f);
	if (!f->err && f->direct >= 0 && (f->size & (ALIGN - 1)) && ftruncate(f->fd, (off_t)f->size) < 0) {
		f->err = errno;
		f->err_syscall = "ftruncate";
	}
	f->used = false;
	if (f->err)
		return throw_write(env, f);
	napi_value r, v;
	napi_create_object(env, &r);
	napi_create_double(env, (double)f->size, &v);
	napi_set_named_property(env, r, "size", v);
	napi_create_uint32(env, f->crc, &v);
	napi_set_named_property(env, r, "crc", v);
	return r;
}

/* drop(id): a failure path: wait for the file's writes, forget it (its errors no longer matter). */
static napi_value pump_drop(napi_env env, napi_callback_info info)
{
	struct pump *pp;
	struct file *f;
	if (file_arg(env, info, "drop(id)", false, &pp, &f) < 0 || !f)
		return NULL; /* a bad call throws; an id not open is dropped already */
	drain_file(pp, f);
	f->used = false;
	return NULL;
}

/* ---------------------------------------------------------------------------------------------- feed */

/* Starts a frame for JavaScript from the header bytes held in hdr; false if the length cannot be true. */
static bool give_start(struct pump *pp, uint32_t length)
{
	pp->give_len = HEADER + (size_t)length;
	pp->give = malloc(pp->give_len);
	if (!pp->give)
		return false;
	memcpy(pp->give, pp->hdr, pp->have);
	pp->state = S_GIVE;
	return true;
}

static void free_given(napi_env env, void *data, void *hint)
{
	(void)env;
	(void)hint;
	free(data);
}

/* Appends bytes to the result array as a Buffer: `own` is malloc'ed memory that the Buffer takes over (or, where
 * the runtime allows no external buffers, copies and frees); else a copy. false with an exception pending. */
static bool emit(napi_env env, napi_value out, uint32_t *n, const uint8_t *p, size_t len, uint8_t *own, uint64_t at)
{
	napi_value b, o;
	bool made = own && napi_create_external_buffer(env, len, own, free_given, NULL, &b) == napi_ok;
	if (!made) {
		made = napi_create_buffer_copy(env, len, own ? own : p, NULL, &b) == napi_ok;
		free(own);
	}
	if (!made || napi_create_double(env, (double)at, &o) != napi_ok || napi_set_element(env, out, (*n)++, b) != napi_ok ||
	    napi_set_element(env, out, (*n)++, o) != napi_ok) {
		bool pending = false;
		napi_is_exception_pending(env, &pending);
		if (!pending)
			gw_throw_sys(env, ENOMEM, "napi_create_buffer", "cannot hand a frame to JavaScript", NULL, 0);
		return false;
	}
	return true;
}

/* feed(chunk, fast) -> [consumed, buffer, offset, buffer, offset, ...]: the bytes for JavaScript, each with its
 * stream offset; or null when the pump consumed the whole chunk and passed nothing on. `fast`: JavaScript has
 * nothing pending, so frames may be taken. A frame the pump would take while JavaScript is not idle (or after it
 * passed a frame on in this call) stops the feed: consumed < chunk length, and the rest is to be fed again once
 * JavaScript is idle. */
static napi_value pump_feed(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	struct pump *pp = this_pump(env, info, &argc, argv);
	if (!pp)
		return NULL;
	size_t n;
	uint8_t *data;
	bool fast = false;
	if (argc < 2 || !gw_bytes_arg(env, argv[0], &data, &n) || napi_get_value_bool(env, argv[1], &fast) != napi_ok) {
		napi_throw_type_error(env, NULL, "feed(Uint8Array, fast)");
		return NULL;
	}
	const uint8_t *p = data;
	const size_t total = n;
	napi_value out = NULL;
	uint32_t outn = 1; /* out[0]: the bytes consumed */
#define EMIT(ptr, len, own, at)                                                                   \
	do {                                                                                      \
		if (!out && napi_create_array(env, &out) != napi_ok)                              \
			return gw_throw_sys(env, ENOMEM, "napi_create_array", "cannot hand frames over", NULL, 0); \
		if (!emit(env, out, &outn, ptr, len, own, at))                                    \
			return NULL;                                                              \
		fast = false;                                                                     \
	} while (0)

	while (n > 0) {
		switch (pp->state) {
		case S_PASS:
			EMIT(p, n, NULL, pp->offset);
			pp->offset += n;
			n = 0;
			break;

		case S_PREAMBLE: {
			size_t k = PREAMBLE_LEN - pp->have < n ? PREAMBLE_LEN - pp->have : n;
			memcpy(pp->hdr + pp->have, p, k);
			pp->have += k;
			p += k;
			n -= k;
			if (memcmp(pp->hdr, preamble, pp->have) != 0 || pp->have == PREAMBLE_LEN) {
				/* The preamble (or what stands in its place: JavaScript names a wrong one) goes over as is. */
				bool good = pp->have == PREAMBLE_LEN && memcmp(pp->hdr, preamble, PREAMBLE_LEN) == 0;
				EMIT(pp->hdr, pp->have, NULL, pp->offset);
				pp->offset += pp->have;
				pp->have = 0;
				pp->state = good ? S_HEADER : S_PASS;
				pp->frame_at = pp->offset;
			}
			break;
		}

		case S_HEADER: {
			/* Sixteen bytes decide; a data frame's eight-byte prefix too, before it is taken. */
			size_t want = HEADER;
			if (pp->have >= HEADER && pp->hdr[0] == TYPE_DATA && le32(pp->hdr + 4) >= PREFIX)
				want = HEADER + PREFIX;
			size_t k = want - pp->have < n ? want - pp->have : n;
			memcpy(pp->hdr + pp->have, p, k);
			pp->have += k;
			p += k;
			n -= k;
			pp->offset += k;
			if (pp->have < want)
				break;
			const uint8_t *h = pp->hdr;
			uint32_t length = le32(h + 4);
			if (gw_crc32(0, h, 12) != le32(h + 12) || length > MAX_FRAME - HEADER) {
				/* From here on the stream says nothing trustworthy about where frames are. */
				EMIT(h, pp->have, NULL, pp->frame_at);
				pp->have = 0;
				pp->state = S_PASS;
				break;
			}
			if (want == HEADER && h[0] == TYPE_DATA && length >= PREFIX)
				break; /* now read the prefix */
			struct file *f = NULL;
			if (want == HEADER + PREFIX && h[1] == 0 && h[2] == 0 && h[3] == 0 && length - PREFIX <= MAX_CHUNK &&
			    le32(h + HEADER + 4) == length - PREFIX)
				f = find(pp, le32(h + HEADER));
			if (f && (f->expected < 0 || f->size + (length - PREFIX) <= (uint64_t)f->expected) && !file_error(pp, f)) {
				if (!fast)
					goto stop; /* this frame is ours once JavaScript has caught up: feed() it again then */
				pp->take = f;
				pp->left = length - PREFIX;
				pp->frame_crc = gw_crc32(0, h + HEADER, PREFIX);
				pp->state = S_TAKE;
				pp->have = 0;
				if (pp->left == 0)
					goto take_done;
				break;
			}
			if (!give_start(pp, length))
				return gw_throw_sys(env, ENOMEM, "malloc", "cannot allocate a frame", NULL, 0);
			if (pp->have == pp->give_len)
				goto give_done;
			break;
		}

		case S_TAKE: {
			size_t k = pp->left < n ? pp->left : n;
			struct file *f = pp->take;
			uint32_t crc = gw_crc32(0, p, k);
			pp->frame_crc = crc32_combine(pp->frame_crc, crc, k);
			append(pp, f, p, k, crc);
			pp->left -= (uint32_t)k;
			p += k;
			n -= k;
			pp->offset += k;
			if (pp->left > 0)
				break;
		take_done:
			if (pp->frame_crc != le32(pp->hdr + 8))
				return throw_proto(env, pp, pp->frame_at, "(Data): payload checksum mismatch (the stream is corrupted)");
			{
				double raw = (double)(le32(pp->hdr + 4) - PREFIX);
				pp->counters[0] += raw;
				pp->counters[1] += PREFIX + raw;
				pp->counters[2] += 1;
			}
			pp->frames++;
			pp->take = NULL;
			pp->state = S_HEADER;
			pp->frame_at = pp->offset;
			break;
		}

		case S_GIVE: {
			size_t k = pp->give_len - pp->have < n ? pp->give_len - pp->have : n;
			memcpy(pp->give + pp->have, p, k);
			pp->have += k;
			p += k;
			n -= k;
			pp->offset += k;
			if (pp->have < pp->give_len)
				break;
		give_done: {
			uint8_t *g = pp->give;
			pp->give = NULL;
			EMIT(g, pp->give_len, g, pp->frame_at);
			pp->frames++;
			pp->have = 0;
			pp->state = S_HEADER;
			pp->frame_at = pp->offset;
		}
			break;
		}
		}
	}
stop:
#undef EMIT
	if (!out && n == 0) {
		napi_get_null(env, &out);
		return out;
	}
	napi_value consumed;
	if ((!out && napi_create_array(env, &out) != napi_ok) || napi_create_double(env, (double)(total - n), &consumed) != napi_ok ||
	    napi_set_element(env, out, 0, consumed) != napi_ok)
		return gw_throw_sys(env, ENOMEM, "napi_create_array", "cannot hand frames over", NULL, 0);
	return out;
}

/* atBoundary() -> bool: the stream is between frames (EOF here is a clean end). */
static napi_value pump_at_boundary(napi_env env, napi_callback_info info)
{
	size_t argc = 0;
	struct pump *pp = this_pump(env, info, &argc, NULL);
	if (!pp)
		return NULL;
	napi_value r;
	napi_get_boolean(env, pp->state == S_PASS || ((pp->state == S_HEADER || pp->state == S_PREAMBLE) && pp->have == 0), &r);
	return r;
}

/* offset() -> the stream offset of the next byte. */
static napi_value pump_offset(napi_env env, napi_callback_info info)
{
	size_t argc = 0;
	struct pump *pp = this_pump(env, info, &argc, NULL);
	if (!pp)
		return NULL;
	napi_value r;
	napi_create_double(env, (double)pp->offset, &r);
	return r;
}

/* close(): stops the writer thread and frees the blocks (files still open are abandoned). */
static napi_value pump_close(napi_env env, napi_callback_info info)
{
	size_t argc = 0;
	struct pump *pp = this_pump(env, info, &argc, NULL);
	if (!pp)
		return NULL;
	for (int i = 0; i < MAX_FILES; i++)
		if (pp->files[i].used) {
			drain_file(pp, &pp->files[i]);
			pp->files[i].used = false;
		}
	pump_free(pp);
	pp->closed = true;
	return NULL;
}

napi_value gw_pump_class(napi_env env)
{
	napi_property_descriptor methods[] = {
		{ "open", NULL, pump_open, NULL, NULL, NULL, napi_default, NULL },
		{ "write", NULL, pump_write, NULL, NULL, NULL, napi_default, NULL },
		{ "finish", NULL, pump_finish, NULL, NULL, NULL, napi_default, NULL },
		{ "drop", NULL, pump_drop, NULL, NULL, NULL, napi_default, NULL },
		{ "feed", NULL, pump_feed, NULL, NULL, NULL, napi_default, NULL },
		{ "atBoundary", NULL, pump_at_boundary, NULL, NULL, NULL, napi_default, NULL },
		{ "offset", NULL, pump_offset, NULL, NULL, NULL, napi_default, NULL },
		{ "close", NULL, pump_close, NULL, NULL, NULL, napi_default, NULL },
	};
	napi_value cls;
	if (napi_define_class(env, "Pump", NAPI_AUTO_LENGTH, pump_new, NULL, sizeof(methods) / sizeof(methods[0]), methods, &cls) != napi_ok)
		return NULL;
	return cls;
}
