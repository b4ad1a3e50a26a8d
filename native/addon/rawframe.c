/* zstdRawFrame(dst, src) -> bytes: src stored as a zstd frame of raw blocks (RFC 8878 §3.1.1), no compression.
 *
 * The page container's writers store a chunk this way when a sample of it does not compress (random or encrypted
 * memory, already-compressed data): zstd level 1 spends ~0.12 s per 256 MiB of such bytes finding nothing, this
 * a copy. Any zstd decoder reads the frame; the copy is here because V8 copies out of the SharedArrayBuffer that
 * holds the pages byte by byte with relaxed atomics (~2 GB/s), memcpy at ~16 GB/s. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "addon.h"

#define ZSTD_MAGIC 0xFD2FB528u
/* Single segment (the window is the content), content size in 4 bytes, no checksum, no dictionary. */
#define FHD_SINGLE_SEGMENT_FCS4 0xA0
#define FRAME_HEADER 9 /* magic, descriptor, content size */
#define BLOCK_HEADER 3
#define BLOCK_MAX (128u << 10) /* RFC 8878: Block_Maximum_Size */

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

napi_value gw_zstd_raw_frame_js(napi_env env, napi_callback_info info)
{
	size_t argc = 2, dst_len, src_len;
	napi_value argv[2], r;
	uint8_t *dst, *src;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !gw_bytes_arg(env, argv[0], &dst, &dst_len) ||
	    !gw_bytes_arg(env, argv[1], &src, &src_len)) {
		napi_throw_type_error(env, NULL, "zstdRawFrame(dst: Uint8Array, src: Uint8Array)");
		return NULL;
	}
	if (src_len > UINT32_MAX)
		return gw_throw_sys(env, EFBIG, "zstdRawFrame", "zstdRawFrame: src is larger than a 4-byte content size", NULL, 0);
	if (dst_len < raw_frame_size(src_len))
		return gw_throw_sys(env, ENOBUFS, "zstdRawFrame", "zstdRawFrame: dst is smaller than the frame", NULL, 0);
	uint8_t *o = dst;
	put_le(o, ZSTD_MAGIC, 4);
	o[4] = FHD_SINGLE_SEGMENT_FCS4;
	put_le(o + 5, src_len, 4);
	o += FRAME_HEADER;
	size_t at = 0;
	do {
		size_t n = src_len - at < BLOCK_MAX ? src_len - at : BLOCK_MAX;
		int last = at + n == src_len;
		put_le(o, (uint32_t)(n << 3) | 0 << 1 | (uint32_t)last, BLOCK_HEADER); /* Block_Type 0: raw */
		memcpy(o + BLOCK_HEADER, src + at, n);
		o += BLOCK_HEADER + n;
		at += n;
	} while (at < src_len);
	napi_create_double(env, (double)(o - dst), &r);
	return r;
}
