/* crc32() for JavaScript: the folding crc32 of native/common/crc32.c. */
#include "addon.h"
#include "../common/crc32.h"

/* crc32(view, previous = 0) -> uint32, as zlib.crc32(view, previous). */
napi_value gw_crc32_js(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	size_t length;
	uint8_t *data;
	uint32_t previous = 0;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !gw_bytes_arg(env, argv[0], &data, &length) ||
	    (argc > 1 && napi_get_value_uint32(env, argv[1], &previous) != napi_ok)) {
		napi_throw_type_error(env, NULL, "crc32(Uint8Array[, previous crc])");
		return NULL;
	}
	napi_value r;
	napi_create_uint32(env, gw_crc32(previous, data, length), &r);
	return r;
}
