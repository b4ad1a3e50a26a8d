/* What the receiving end of an image stream needs from the kernel that Node does not offer.
 *
 * pipeSize(fd[, bytes]) -> bytes: F_SETPIPE_SZ (when bytes is given) then F_GETPIPE_SZ on fd; Node has no fcntl()
 * (transport/pipe-size.ts grows the stdin pipe `godwit receive` reads its stream from). Throws an Error with
 * .errno and .syscall.
 *
 * tcpQuickAck(fd): TCP_QUICKACK on a TCP socket: an ACK the kernel holds back (delayed ACK) goes out now. Node has
 * no such socket option (transport/ssh.ts uses it on the SSH connection, see there why).
 *
 * alignOffset(view, align) -> bytes from the view's start to the next address that is a multiple of align (the
 * receiver's O_DIRECT staging buffers, transport/direct-appender.ts).
 *
 * readCrc(fd, buffer, position): the sending end's reads, hashed in the threadpool (below). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

napi_value gw_tcp_quickack_js(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	int32_t fd;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
	    napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
		napi_throw_type_error(env, NULL, "tcpQuickAck(fd)");
		return NULL;
	}
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one)) < 0)
		return fail_fd(env, errno, "setsockopt(TCP_QUICKACK)", fd);
	return NULL;
}

/* alignOffset(view, align) -> bytes to skip from the view's start to reach an address that is a multiple of align
 * (a power of two): O_DIRECT writes need aligned memory, and JavaScript cannot see addresses. */
napi_value gw_align_offset_js(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	uint32_t align;
	size_t length;
	uint8_t *data;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !gw_bytes_arg(env, argv[0], &data, &length) ||
	    napi_get_value_uint32(env, argv[1], &align) != napi_ok || align == 0 ||
	    (align & (align - 1)) != 0) {
		napi_throw_type_error(env, NULL, "alignOffset(Uint8Array, power of two)");
		return NULL;
	}
	uintptr_t a = (uintptr_t)data;
	napi_value r;
	napi_create_uint32(env, (uint32_t)((align - (a & (align - 1))) & (align - 1)), &r);
	return r;
}

/* readCrc(fd, buffer, position) -> Promise<{ bytes, crc }>: pread()s until the buffer is full or the file ends,
 * and hashes what it read, both in libuv's threadpool. The sender's main thread runs ssh2 (encryption and packets)
 * and is the stream's bottleneck: hashing each chunk there cost it 0.05-0.06 s per 542 MB. */
struct read_crc {
	napi_async_work work;
	napi_deferred deferred;
	napi_ref buffer;
	int fd;
	uint8_t *dst;
	size_t len;
	int64_t pos;
	size_t got;
	uint32_t crc;
	int err;
};

static void read_crc_execute(napi_env env, void *data)
{
	(void)env;
	struct read_crc *r = data;
	while (r->got < r->len) {
		ssize_t n = pread(r->fd, r->dst + r->got, r->len - r->got, (off_t)(r->pos + (int64_t)r->got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r->err = errno;
			return;
		}
		if (n == 0)
			break;
		r->got += (size_t)n;
	}
	r->crc = r->got ? gw_crc32(0, r->dst, r->got) : 0;
}

static void read_crc_complete(napi_env env, napi_status status, void *data)
{
	struct read_crc *r = data;
	napi_value v, res;
	if (status != napi_ok || r->err) {
		int err = status != napi_ok ? ECANCELED : r->err;
		char msg[128];
		snprintf(msg, sizeof(msg), "pread failed: %s (fd %d)", strerror(err), r->fd);
		napi_value e = gw_sys_error(env, err, "pread", msg, NULL, 0);
		napi_reject_deferred(env, r->deferred, e);
	} else {
		napi_create_object(env, &res);
		napi_create_double(env, (double)r->got, &v);
		napi_set_named_property(env, res, "bytes", v);
		napi_create_uint32(env, r->crc, &v);
		napi_set_named_property(env, res, "crc", v);
		napi_resolve_deferred(env, r->deferred, res);
	}
	napi_delete_reference(env, r->buffer);
	napi_delete_async_work(env, r->work);
	free(r);
}

napi_value gw_read_crc_js(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3], promise, name;
	size_t length;
	uint8_t *data;
	int32_t fd;
	int64_t pos;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
	    napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || !gw_bytes_arg(env, argv[1], &data, &length) ||
	    napi_get_value_int64(env, argv[2], &pos) != napi_ok || pos < 0) {
		napi_throw_type_error(env, NULL, "readCrc(fd, Uint8Array, position >= 0)");
		return NULL;
	}
	struct read_crc *r = calloc(1, sizeof(*r));
	if (!r)
		return gw_throw_sys(env, ENOMEM, "calloc", "cannot allocate a read", NULL, 0);
	r->fd = fd;
	r->dst = data;
	r->len = length;
	r->pos = pos;
	/* The buffer stays alive (and unmoved: typed arrays' backing stores do not move) until the read completes. */
	if (napi_create_reference(env, argv[1], 1, &r->buffer) != napi_ok ||
	    napi_create_promise(env, &r->deferred, &promise) != napi_ok ||
	    napi_create_string_utf8(env, "godwit.readCrc", NAPI_AUTO_LENGTH, &name) != napi_ok ||
	    napi_create_async_work(env, NULL, name, read_crc_execute, read_crc_complete, r, &r->work) != napi_ok ||
	    napi_queue_async_work(env, r->work) != napi_ok) {
		free(r);
		return gw_throw_sys(env, ENOMEM, "napi_queue_async_work", "cannot start a read", NULL, 0);
	}
	return promise;
}
