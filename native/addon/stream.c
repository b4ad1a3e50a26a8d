/* What the receiving end of an image stream needs from the kernel that Node does not offer.
 *
 * pipeSize(fd[, bytes]) -> bytes: F_SETPIPE_SZ (when bytes is given) then F_GETPIPE_SZ on fd; Node has no fcntl()
 * (transport/pipe-size.ts grows the stdin pipe `godwit receive` reads its stream from). Throws an Error with
 * .errno and .syscall.
 *
 * alignOffset(view, align) -> bytes from the view's start to the next address that is a multiple of align (the
 * receiver's O_DIRECT staging buffers, transport/direct-appender.ts). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "addon.h"

static napi_value fail_fd(napi_env env, int err, const char *syscall, int fd)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "%s failed: %s (fd %d)", syscall, strerror(err), fd);
	return gw_throw_sys(env, err, syscall, msg, NULL, 0);
}

napi_value gw_pipe_size_js(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	int32_t fd, bytes = 0;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
	    napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
	    (argc > 1 && (napi_get_value_int32(env, argv[1], &bytes) != napi_ok || bytes <= 0))) {
		napi_throw_type_error(env, NULL, "pipeSize(fd[, bytes > 0])");
		return NULL;
	}
	if (argc > 1 && fcntl(fd, F_SETPIPE_SZ, bytes) < 0)
		return fail_fd(env, errno, "fcntl(F_SETPIPE_SZ)", fd);
	int size = fcntl(fd, F_GETPIPE_SZ);
	if (size < 0)
		return fail_fd(env, errno, "fcntl(F_GETPIPE_SZ)", fd);
	napi_value r;
	napi_create_int32(env, size, &r);
	return r;
}

/* alignOffset(view, align) -> bytes to skip from the view's start to reach an address that is a multiple of align
 * (a power of two): O_DIRECT writes need aligned memory, and JavaScript cannot see addresses. */
napi_value gw_align_offset_js(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	uint32_t align;
	napi_typedarray_type type;
	size_t length;
	void *data;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
	    napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
	    type != napi_uint8_array || napi_get_value_uint32(env, argv[1], &align) != napi_ok || align == 0 ||
	    (align & (align - 1)) != 0) {
		napi_throw_type_error(env, NULL, "alignOffset(Uint8Array, power of two)");
		return NULL;
	}
	uintptr_t a = (uintptr_t)data;
	napi_value r;
	napi_create_uint32(env, (uint32_t)((align - (a & (align - 1))) & (align - 1)), &r);
	return r;
}
