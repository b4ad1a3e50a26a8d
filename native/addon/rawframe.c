/* zstdRawFrame(dst, src) -> bytes: src stored as a zstd frame of raw blocks (RFC 8878 §3.1.1), no compression.
 * zstdUniformFrame(dst, src) -> bytes, or 0: src as a frame of RLE blocks when each of its pages is one byte repeated.
 *
 * The page container's writers store a chunk this way when a sample of it does not compress (random or encrypted
 * memory, already-compressed data): zstd level 1 spends ~0.12 s per 256 MiB of such bytes finding nothing, this
 * a copy. Any zstd decoder reads the frame; the copy is here because V8 copies out of the SharedArrayBuffer that
 * holds the pages byte by byte with relaxed atomics (~2 GB/s), memcpy at ~16 GB/s. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "addon.h"

#define ZSTD_MAGIC 0xFD2FB528u
/* Single segment (the window is the content), content size in 4 bytes, no checksum, no dictionary. */
#define FHD_SINGLE_SEGMENT_FCS4 0xA0
#define FRAME_HEADER 9 /* magic, descriptor, content size */
#define BLOCK_HEADER 3
#define BLOCK_MAX (128u << 10) /* RFC 8878: Block_Maximum_Size */
#define BLOCK_RAW 0
#define BLOCK_RLE 1
#define PAGE 4096u

static size_t raw_frame_size(size_t n)
{
	size_t blocks = n ? (n + BLOCK_MAX - 1) / BLOCK_MAX : 1;
	return FRAME_HEADER + blocks * BLOCK_HEADER + n;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void frame_header(uint8_t *p, size_t content)
{
	put_le(p, ZSTD_MAGIC, 4);
	p[4] = FHD_SINGLE_SEGMENT_FCS4;
	put_le(p + 5, content, 4);
}

/* The (dst, src) arguments both functions take, src within a 4-byte content size; false with an exception pending. */
static bool frame_args(napi_env env, napi_callback_info info, const char *fn, uint8_t **dst, size_t *dst_len, uint8_t **src,
		       size_t *src_len)
{
	size_t argc = 2;
	napi_value argv[2];
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !gw_bytes_arg(env, argv[0], dst, dst_len) ||
	    !gw_bytes_arg(env, argv[1], src, src_len)) {
		char usage[64];
		snprintf(usage, sizeof(usage), "%s(dst: Uint8Array, src: Uint8Array)", fn);
		napi_throw_type_error(env, NULL, usage);
		return false;
	}
	if (*src_len > UINT32_MAX) {
		char msg[64];
		snprintf(msg, sizeof(msg), "%s: src is larger than a 4-byte content size", fn);
		gw_throw_sys(env, EFBIG, fn, msg, NULL, 0);
		return false;
	}
	return true;
}

napi_value gw_zstd_raw_frame_js(napi_env env, napi_callback_info info)
{
	size_t dst_len, src_len;
	napi_value r;
	uint8_t *dst, *src;
	if (!frame_args(env, info, "zstdRawFrame", &dst, &dst_len, &src, &src_len))
		return NULL;
	if (dst_len < raw_frame_size(src_len))
		return gw_throw_sys(env, ENOBUFS, "zstdRawFrame", "zstdRawFrame: dst is smaller than the frame", NULL, 0);
	uint8_t *o = dst;
	frame_header(o, src_len);
	o += FRAME_HEADER;
	size_t at = 0;
	do {
		size_t n = src_len - at < BLOCK_MAX ? src_len - at : BLOCK_MAX;
		int last = at + n == src_len;
		put_le(o, (uint32_t)(n << 3) | BLOCK_RAW << 1 | (uint32_t)last, BLOCK_HEADER);
		memcpy(o + BLOCK_HEADER, src + at, n);
		o += BLOCK_HEADER + n;
		at += n;
	} while (at < src_len);
	napi_create_double(env, (double)(o - dst), &r);
	return r;
}

/* Whether p[0..n) is n copies of p[0]: eight words at a time, so that a page of other bytes fails at its first line. */
static bool uniform(const uint8_t *p, size_t n)
{
	const uint64_t w = 0x0101010101010101ull * p[0];
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		uint64_t x = 0;
		for (int k = 0; k < 8; k++) {
			uint64_t v;
			memcpy(&v, p + i + 8 * k, 8);
			x |= v ^ w;
		}
		if (x)
			return false;
	}
	for (; i < n; i++)
		if (p[i] != p[0])
			return false;
	return true;
}

/* Pages of one repeated byte (zeroed memory above all, memset buffers) are common in a process's memory. zstd level 1
 * compresses them at ~6 GB/s on one core here, this check runs at ~11 GB/s (the page buffer's memory speed) and writes
 * a frame of one 4-byte RLE block (RFC 8878 §3.1.1.2.2) per run of up to 128 KiB of the same byte, about as small as
 * zstd's. A chunk with any other page gives 0 at that page and goes to zstd: a random chunk costs one cache line. */
napi_value gw_zstd_uniform_frame_js(napi_env env, napi_callback_info info)
{
	size_t dst_len, src_len;
	napi_value r;
	uint8_t *dst, *src;
	if (!frame_args(env, info, "zstdUniformFrame", &dst, &dst_len, &src, &src_len))
		return NULL;
	/* At most one block per page and one per 128 KiB of a run. */
	size_t pages = (src_len + PAGE - 1) / PAGE;
	if (dst_len < FRAME_HEADER + (pages + src_len / BLOCK_MAX + 1) * (BLOCK_HEADER + 1))
		return gw_throw_sys(env, ENOBUFS, "zstdUniformFrame", "zstdUniformFrame: dst is smaller than the largest frame", NULL, 0);
	size_t frame = 0;
	if (src_len > 0) {
		uint8_t *o = dst + FRAME_HEADER;
		size_t run = 0; /* bytes of `byte` not yet written as a block */
		uint8_t byte = src[0];
		for (size_t at = 0; at < src_len; at += PAGE) {
			size_t n = src_len - at < PAGE ? src_len - at : PAGE;
			if (!uniform(src + at, n))
				goto out;
			/* A block is written once the run it ends is known not to be the last. */
			if (run > 0 && (src[at] != byte || run + n > BLOCK_MAX)) {
				put_le(o, (uint32_t)(run << 3) | BLOCK_RLE << 1, BLOCK_HEADER);
				o[BLOCK_HEADER] = byte;
				o += BLOCK_HEADER + 1;
				run = 0;
			}
			byte = src[at];
			run += n;
		}
		put_le(o, (uint32_t)(run << 3) | BLOCK_RLE << 1 | 1, BLOCK_HEADER);
		o[BLOCK_HEADER] = byte;
		o += BLOCK_HEADER + 1;
		frame_header(dst, src_len);
		frame = (size_t)(o - dst);
	}
out:
	napi_create_double(env, (double)frame, &r);
	return r;
}
