/* godwit-readv.node: process_vm_readv for the dump's page readers (checkpoint/memreader.ts), straight into the
 * page store's shared memory from Node's own threads.
 *
 * /proc/PID/mem reads one range per system call and copies through a bounce page per page; process_vm_readv takes
 * up to 1024 remote ranges per call and copies them directly (DESIGN: ~5 GB/s against 2.8 GB/s). Going through the
 * helper instead would add a pipe and a copy. Ranges process_vm_readv refuses (PROT_NONE pages) are read through
 * /proc/PID/mem, which may read what the process itself cannot.
 *
 * readv(pid, dst, pieces) -> bytes: dst a Uint8Array (on a SharedArrayBuffer), pieces a Float64Array of
 * (address, length, offset in dst) triples. Throws an Error with .errno and .syscall. Node-API only: the module is
 * context-aware and loads in worker threads.
 *
 * alignOffset(view, align) -> bytes from the view's start to the next address that is a multiple of align (the
 * receiver's O_DIRECT staging buffers, transport/direct-appender.ts).
 *
 * pipeSize(fd[, bytes]) -> bytes: F_SETPIPE_SZ (when bytes is given) then F_GETPIPE_SZ on fd; Node has no fcntl()
 * (transport/pipe-size.ts grows the stdin pipe `godwit receive` reads its stream from). Throws like readv. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_IOV 1024 /* UIO_MAXIOV */

/* Throws an Error shaped like Node's errno errors (errno, syscall) with one more numeric property when key is set. */
static napi_value throw_sys(napi_env env, int err, const char *syscall, const char *msg, const char *key, double val)
{
	napi_value m, e, v;
	napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
	napi_create_error(env, NULL, m, &e);
	napi_create_int32(env, err, &v);
	napi_set_named_property(env, e, "errno", v);
	napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
	napi_set_named_property(env, e, "syscall", v);
	if (key) {
		napi_create_double(env, val, &v);
		napi_set_named_property(env, e, key, v);
	}
	napi_throw(env, e);
	return NULL;
}

static napi_value fail(napi_env env, int err, const char *syscall, int pid, uint64_t addr)
{
	char msg[160];
	snprintf(msg, sizeof(msg), "%s failed: %s (pid %d, address 0x%llx)", syscall, strerror(err), pid,
		 (unsigned long long)addr);
	return throw_sys(env, err, syscall, msg, "addr", (double)addr);
}

static int proc_mem_read(int pid, int *fd, uint64_t addr, uint8_t *dst, size_t len)
{
	if (*fd < 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/mem", pid);
		*fd = open(path, O_RDONLY | O_CLOEXEC);
		if (*fd < 0)
			return errno;
	}
	while (len) {
		ssize_t n = pread(*fd, dst, len, (off_t)addr);
		if (n <= 0)
			return n < 0 ? errno : EFAULT;
		addr += (uint64_t)n;
		dst += n;
		len -= (size_t)n;
	}
	return 0;
}

static void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static napi_value readv_js(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3];
	int32_t pid;
	napi_typedarray_type t1, t2;
	size_t dst_len, npieces;
	void *dst_data, *pc_data;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
	    napi_get_value_int32(env, argv[0], &pid) != napi_ok ||
	    napi_get_typedarray_info(env, argv[1], &t1, &dst_len, &dst_data, NULL, NULL) != napi_ok ||
	    napi_get_typedarray_info(env, argv[2], &t2, &npieces, &pc_data, NULL, NULL) != napi_ok ||
	    t1 != napi_uint8_array || t2 != napi_float64_array || npieces % 3) {
		napi_throw_type_error(env, NULL, "readv(pid, Uint8Array, Float64Array of address/length/offset triples)");
		return NULL;
	}
	uint8_t *dst = dst_data;
	const double *pc = pc_data;
	npieces /= 3;
	for (size_t i = 0; i < npieces; i++) {
		double at = pc[3 * i + 2], len = pc[3 * i + 1];
		if (at < 0 || len < 0 || at + len > (double)dst_len) {
			napi_throw_range_error(env, NULL, "a piece lies outside the destination buffer");
			return NULL;
		}
	}

	struct iovec local[MAX_IOV], remote[MAX_IOV];
	uint64_t total = 0;
	int memfd __attribute__((cleanup(closep))) = -1; /* opened on the first range that needs it */
	size_t next = 0;
	while (next < npieces) {
		size_t n = 0;
		while (n < MAX_IOV && next + n < npieces) {
			const double *p = pc + 3 * (next + n);
			remote[n].iov_base = (void *)(uintptr_t)p[0];
			remote[n].iov_len = (size_t)p[1];
			local[n].iov_base = dst + (size_t)p[2];
			local[n].iov_len = (size_t)p[1];
			n++;
		}
		/* local[i] and remote[i] have the same length: after a short read, skip the whole pieces read, read the
		 * failing one through /proc and go on after it. */
		size_t i = 0;
		while (i < n) {
			ssize_t got = process_vm_readv(pid, &local[i], (unsigned long)(n - i), &remote[i], (unsigned long)(n - i), 0);
			if (got < 0 && errno != EFAULT && errno != ENOMEM)
				return fail(env, errno, "process_vm_readv", pid, (uint64_t)(uintptr_t)remote[i].iov_base);
			size_t adv = got > 0 ? (size_t)got : 0;
			total += adv;
			while (i < n && adv >= remote[i].iov_len) {
				adv -= remote[i].iov_len;
				i++;
			}
			if (i == n)
				break;
			uint64_t a = (uint64_t)(uintptr_t)remote[i].iov_base + adv;
			size_t rest = remote[i].iov_len - adv;
			int e = proc_mem_read(pid, &memfd, a, (uint8_t *)local[i].iov_base + adv, rest);
			if (e)
				return fail(env, e, "pread(/proc/PID/mem)", pid, a);
			total += rest;
			i++;
		}
		next += n;
	}
	napi_value r;
	napi_create_double(env, (double)total, &r);
	return r;
}

static napi_value fail_fd(napi_env env, int err, const char *syscall, int fd)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "%s failed: %s (fd %d)", syscall, strerror(err), fd);
	return throw_sys(env, err, syscall, msg, NULL, 0);
}

static napi_value pipe_size_js(napi_env env, napi_callback_info info)
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
static napi_value align_offset_js(napi_env env, napi_callback_info info)
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

NAPI_MODULE_INIT()
{
	napi_value fn;
	napi_create_function(env, "readv", NAPI_AUTO_LENGTH, readv_js, NULL, &fn);
	napi_set_named_property(env, exports, "readv", fn);
	napi_create_function(env, "pipeSize", NAPI_AUTO_LENGTH, pipe_size_js, NULL, &fn);
	napi_set_named_property(env, exports, "pipeSize", fn);
	napi_create_function(env, "alignOffset", NAPI_AUTO_LENGTH, align_offset_js, NULL, &fn);
	napi_set_named_property(env, exports, "alignOffset", fn);
	return exports;
}
