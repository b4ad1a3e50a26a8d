/* godwit.node: godwit's Node-API addon, for what Node itself cannot do or does slowly on the hot paths.
 *
 *   readv.c    process_vm_readv for the dump's page readers
 *   stream.c   pipe sizes and buffer alignment for the receiving end of a stream; reads hashed off the main thread;
 *              TCP_QUICKACK for the SSH connection
 *   crc32.c    CRC-32 by carry-less multiplication for the stream's frames (../common/crc32.c)
 *   pump.c     the receiving end's frame pump: data frames of large files to disk without JavaScript
 *   rawframe.c a zstd frame of raw blocks, for the page container's chunks that do not compress
 *   seal.c     the sending end's SSH packets: channel data sealed with AES-GCM without JavaScript per packet
 *
 * Node-API only and context-aware: it loads in worker threads too (the page readers and compressors run there). */
#define _GNU_SOURCE
#include <string.h>

#include "addon.h"

/* An Error shaped like Node's errno errors (code, errno, syscall), with one more numeric property when key is set.
 * errno is positive, as in godwit's SysError. */
napi_value gw_sys_error(napi_env env, int err, const char *syscall, const char *msg, const char *key, double val)
{
	napi_value m, e, v;
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
	napi_create_error(env, NULL, m, &e);
	napi_create_int32(env, err, &v);
	napi_set_named_property(env, e, "errno", v);
	const char *name = strerrorname_np(err);
	if (name) {
		napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v);
		napi_set_named_property(env, e, "code", v);
	}
	napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
	napi_set_named_property(env, e, "syscall", v);
	if (key) {
		napi_create_double(env, val, &v);
		napi_set_named_property(env, e, key, v);
	}
	return e;
}

napi_value gw_throw_sys(napi_env env, int err, const char *syscall, const char *msg, const char *key, double val)
{
	napi_throw(env, gw_sys_error(env, err, syscall, msg, key, val));
	return NULL;
}

bool gw_bytes_arg(napi_env env, napi_value v, uint8_t **data, size_t *len)
{
	napi_typedarray_type type;
	void *p;
	if (napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok || type != napi_uint8_array)
		return false;
	*data = p;
	return true;
}

static void export_fn(napi_env env, napi_value exports, const char *name, napi_callback fn)
{
	napi_value f;
	napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
	napi_set_named_property(env, exports, name, f);
}

NAPI_MODULE_INIT()
{
	export_fn(env, exports, "readv", gw_readv_js);
	export_fn(env, exports, "pipeSize", gw_pipe_size_js);
	export_fn(env, exports, "alignOffset", gw_align_offset_js);
	export_fn(env, exports, "tcpQuickAck", gw_tcp_quickack_js);
	export_fn(env, exports, "zstdRawFrame", gw_zstd_raw_frame_js);
	export_fn(env, exports, "zstdUniformFrame", gw_zstd_uniform_frame_js);
	/* Absent where the CPU cannot fold (no PCLMULQDQ): callers fall back to zlib's crc32. */
	if (gw_crc32_accelerated()) {
		export_fn(env, exports, "crc32", gw_crc32_js);
		export_fn(env, exports, "readCrc", gw_read_crc_js);
		/* The pump hashes with the folding crc32 too; without it the receiver stays in JavaScript. */
		napi_value pump = gw_pump_class(env);
		if (pump)
			napi_set_named_property(env, exports, "Pump", pump);
	}
	napi_value seal = gw_seal_class(env);
	if (seal)
		napi_set_named_property(env, exports, "GcmSeal", seal);
	return exports;
}
