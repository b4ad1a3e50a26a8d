/* The functions of godwit's Node-API addon (module.c registers them). */
#ifndef GW_ADDON_H
#define GW_ADDON_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Throws an Error shaped like Node's errno errors (errno, syscall), with one more numeric property when key is set;
 * returns NULL for the caller to return. */
/* The same Error, made but not thrown (to reject a promise with). */
napi_value gw_sys_error(napi_env env, int err, const char *syscall, const char *msg, const char *key, double val);
napi_value gw_throw_sys(napi_env env, int err, const char *syscall, const char *msg, const char *key, double val);

/* v as a Uint8Array's bytes (a Buffer is one); false if it is anything else. */
bool gw_bytes_arg(napi_env env, napi_value v, uint8_t **data, size_t *len);

napi_value gw_readv_js(napi_env env, napi_callback_info info);
napi_value gw_pipe_size_js(napi_env env, napi_callback_info info);
napi_value gw_align_offset_js(napi_env env, napi_callback_info info);
napi_value gw_tcp_quickack_js(napi_env env, napi_callback_info info);
napi_value gw_crc32_js(napi_env env, napi_callback_info info);
napi_value gw_read_crc_js(napi_env env, napi_callback_info info);
napi_value gw_zstd_raw_frame_js(napi_env env, napi_callback_info info);
napi_value gw_zstd_uniform_frame_js(napi_env env, napi_callback_info info);
/* The GcmSeal class (seal.c), or NULL if it could not be defined. */
napi_value gw_seal_class(napi_env env);
/* The Pump class (pump.c), or NULL if it could not be defined. */
napi_value gw_pump_class(napi_env env);

#include "../common/crc32.h"

#endif
