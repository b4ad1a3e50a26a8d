/* godwit-helper: entry, setup, the request loop and shutdown.
 *
 * Started by native/helper.ts with fd 3 = control socket. It announces itself (Hello), then handles one
 * request at a time until the socket closes or a termination signal arrives; either way it puts every tracee
 * back as it found it (injected state is always undone before a request returns) and detaches before exiting.
 * It never exits without saying why: a final Response.error on the control socket, or stderr if that is gone. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

/* 4 MiB of staging for page reads: big enough that process_vm_readv is called with many pages at once
 * (the measured 5 GB/s needs large batches), small enough to stay cache-friendly; see docs/ARCHITECTURE.md. */
#define BULK_BUF_SIZE (4u << 20)
/* The pipe cannot grow beyond /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE (1 MiB here). */
#define BULK_PIPE_WANT (1u << 20)

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned pipe_max_size(void)
{
	unsigned v = 0;
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
	if (f) {
		if (fscanf(f, "%u", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static int setup_bulk(struct helper *h)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return gw_fail_errno(&h->err, "pipe2", 0, "bulk pipe");
	h->bulk_r = p[0];
	h->bulk_w = p[1];
	int sz = fcntl(h->bulk_w, F_SETPIPE_SZ, BULK_PIPE_WANT);
	if (sz < 0 && errno == EPERM) {
		unsigned max = pipe_max_size();
		if (max && max < BULK_PIPE_WANT)
			sz = fcntl(h->bulk_w, F_SETPIPE_SZ, max);
	}
	if (sz < 0)
		sz = fcntl(h->bulk_w, F_GETPIPE_SZ);
	h->bulk_pipe_size = sz > 0 ? (unsigned)sz : 65536;
	/* Writes poll so that a cancel or a dead reader is noticed while the pipe is full. */
	fcntl(h->bulk_w, F_SETFL, O_NONBLOCK);
	h->bulk_buf_size = BULK_BUF_SIZE;
	for (int i = 0; i < 2; i++) {
		h->bulk_bufs[i] = aligned_alloc(4096, h->bulk_buf_size);
		if (!h->bulk_bufs[i])
			return gw_fail(&h->err, ENOMEM, "aligned_alloc", 0, "bulk staging buffer");
	}
	/* vmsplice hands the staging pages to the pipe instead of copying them: 1.5x the throughput of write()
	 * from C to C here (bench/native-read.ts compares both on the Node side). */
	const char *mode = getenv("GODWIT_HELPER_BULK");
	h->bulk_vmsplice = !(mode && strcmp(mode, "write") == 0);
	return 0;
}

static int setup_signals(struct helper *h)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		return gw_fail_errno(&h->err, "sigprocmask", 0, "block signals");
	h->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (h->sig_fd < 0)
		return gw_fail_errno(&h->err, "signalfd", 0, "signal fd");
	/* A dead reader on the bulk pipe or control socket gives EPIPE, never a silent death. */
	signal(SIGPIPE, SIG_IGN);
	/* While we seize, the target's busy threads compete with us for the CPU (9 spinning threads on 2 cores
	 * made a seize round trip take 1 to 130 ms): run ahead of them when allowed (root). */
	setpriority(PRIO_PROCESS, 0, -10);
	/* If the TypeScript process dies, shut down as for SIGTERM (the control socket EOF says the same). */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	return 0;
}

static void put_hello(struct helper *h, struct pb_buf *b)
{
	size_t m = pb_begin(b, F_Response_hello);
	pb_varint(b, F_Hello_version, HELPER_PROTOCOL_VERSION);
	pb_int(b, F_Hello_pid, getpid());
	pb_int(b, F_Hello_bulk_fd, h->bulk_r);
	pb_varint(b, F_Hello_bulk_pipe_size, h->bulk_pipe_size);
	pb_varint(b, F_Hello_page_size, (uint64_t)h->page_size);
	unsigned a, bx, c, d;
	if (__get_cpuid(1, &a, &bx, &c, &d) && (c & bit_OSXSAVE)) {
		uint32_t lo, hi;
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		uint64_t xcr0 = (uint64_t)hi << 32 | lo;
		pb_varint(b, F_Hello_xcr0, xcr0);
		pb_varint(b, F_Hello_xsave_size, h->xsave_size);
		for (unsigned i = 2; i < 64; i++) {
			if (!(xcr0 & (1ull << i)))
				continue;
			__cpuid_count(0xd, i, a, bx, c, d);
			size_t cm = pb_begin(b, F_Hello_xsave_components);
			pb_varint(b, F_XsaveComponent_index, i);
			pb_varint(b, F_XsaveComponent_offset, bx);
			pb_varint(b, F_XsaveComponent_size, a);
			pb_end(b, cm);
		}
	}
	pb_end(b, m);
}

static void put_error(struct pb_buf *b, const struct gw_err *e)
{
	size_t m = pb_begin(b, F_Response_error);
	pb_int(b, F_Error_errnum, e->errnum);
	pb_string(b, F_Error_syscall, e->syscall ? e->syscall : "");
	pb_int(b, F_Error_pid, e->pid);
	pb_string(b, F_Error_detail, e->detail);
	pb_end(b, m);
}

typedef int (*op_fn)(struct helper *, const uint8_t *, size_t, struct pb_buf *);

struct op {
	unsigned req_field;
	unsigned resp_field;
	op_fn fn;
};

static const struct op ops[] = {
	{ F_Request_seize, F_Response_seize, op_seize },
	{ F_Request_detach, F_Response_detach, op_detach },
	{ F_Request_kill, F_Response_kill, op_kill },
	{ F_Request_thread_regs, F_Response_thread_regs, op_thread_regs },
	{ F_Request_dump_process, F_Response_dump_process, op_dump_process },
	{ F_Request_read_pages, F_Response_read_pages, op_read_pages },
	{ F_Request_peek_pipe, F_Response_peek_pipe, op_peek_pipe },
	{ F_Request_peek_socket, F_Response_peek_socket, op_peek_socket },
	{ F_Request_unix_diag, F_Response_unix_diag, op_unix_diag },
	{ F_Request_sock_opts, F_Response_sock_opts, op_sock_opts },
	{ F_Request_tty_queue, F_Response_tty_queue, op_tty_queue },
	{ F_Request_inet_sock, F_Response_inet_sock, op_inet_sock },
	{ F_Request_tcp_repair_on, F_Response_tcp_repair_on, op_tcp_repair_on },
	{ F_Request_tcp_repair_dump, F_Response_tcp_repair_dump, op_tcp_repair_dump },
	{ F_Request_tcp_repair_off, F_Response_tcp_repair_off, op_tcp_repair_off },
	{ F_Request_track_start, F_Response_track_start, op_track_start },
	{ F_Request_track_register, F_Response_track_register, op_track_register },
	{ F_Request_track_scan, F_Response_track_scan, op_track_scan },
	{ F_Request_track_stop, F_Response_track_stop, op_track_stop },
	{ F_Request_present_pages, F_Response_present_pages, op_present_pages },
	{ F_Request_fd_query, F_Response_fd_query, op_fd_query },
};

/* Handles one request frame and sends its response. -1 only if the response could not be sent. */
static int handle(struct helper *h, const uint8_t *msg, size_t len)
{
	uint32_t id = 0;
	const struct op *op = NULL;
	const uint8_t *body = NULL;
	size_t body_len = 0;
	int cancel_only = 0;
	struct pb_reader r = pb_reader(msg, len);
	struct pb_field f;
	int rc;

	gw_clear(&h->err);
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_Request_id && f.wire == PB_VARINT) {
			id = (uint32_t)f.v;
			continue;
		}
		if (f.num == F_Request_cancel) {
			cancel_only = 1;
			continue;
		}
		for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
			if (ops[i].req_field == f.num && f.wire == PB_LEN) {
				op = &ops[i];
				body = f.data;
				body_len = f.len;
			}
	}
	/* A cancel that arrives after its request finished has nothing to do and gets no response. */
	if (!op && cancel_only && rc == 0)
		return 0;

	h->cur_id = id;
	h->cancelled = 0;
	ctl_begin_response(h, id);
	if (rc < 0) {
		gw_fail(&h->err, EBADMSG, "decode", 0, "malformed Request (%zu bytes)", len);
	} else if (!op) {
		gw_fail(&h->err, EOPNOTSUPP, "decode", 0, "Request %u names no operation this helper knows", id);
	} else {
		size_t m = pb_begin(&h->out, op->resp_field);
		op->fn(h, body, body_len, &h->out);
		pb_end(&h->out, m);
	}
	if (h->err.errnum)
		put_error(&h->out, &h->err);
	if (h->out.oom) {
		/* Say so in a small response rather than not at all. */
		struct gw_err e = h->err;
		ctl_begin_response(h, id);
		gw_clear(&h->err);
		gw_fail(&h->err, ENOMEM, "realloc", 0, "response too large to encode%s%s", e.errnum ? "; " : "",
			e.errnum ? e.detail : "");
		put_error(&h->out, &h->err);
	}
	h->cur_id = 0;
	return ctl_send(h);
}

/* Last words: to TypeScript if the control socket still works, else to stderr. */
static void say_fatal(struct helper *h)
{
	fprintf(stderr, "godwit-helper: %s failed: %s (pid %d): %s\n", h->err.syscall, strerror(h->err.errnum),
		h->err.pid, h->err.detail);
	if (h->ctl_fd >= 0 && !h->in.eof) {
		struct gw_err e = h->err;
		ctl_begin_response(h, 0);
		put_error(&h->out, &e);
		ctl_send(h);
	}
}

int main(int argc, char **argv __attribute__((unused)))
{
	struct helper helper = { .ctl_fd = 3, .bulk_w = -1, .bulk_r = -1, .sig_fd = -1 };
	struct helper *h = &helper;
	int status = 1;
	struct stat st;

	if (argc > 1) {
		fprintf(stderr, "usage: godwit-helper (started by godwit with fd 3 = control socket; no arguments)\n");
		return 2;
	}
	if (fstat(h->ctl_fd, &st) || !S_ISSOCK(st.st_mode)) {
		fprintf(stderr, "godwit-helper: fd 3 must be the control socket (a unix stream socket); "
				"this program is started by godwit, not by hand\n");
		return 2;
	}
	/* Whatever Node inherited without O_CLOEXEC came along: drop it, so the helper never holds someone else's
	 * pipe or socket open (fd 3 is ours, 0-2 are stdio). */
	close_range(4, ~0u, 0);
	fcntl(h->ctl_fd, F_SETFD, FD_CLOEXEC);
	fcntl(h->ctl_fd, F_SETFL, O_NONBLOCK);
	h->page_size = sysconf(_SC_PAGESIZE);
	unsigned a, b, c, d;
	h->xsave_size = __get_cpuid_count(0xd, 0, &a, &b, &c, &d) && b ? b : 4096;

	if (setup_signals(h) || setup_bulk(h)) {
		say_fatal(h);
		return 1;
	}
	ctl_begin_response(h, 0);
	put_hello(h, &h->out);
	if (ctl_send(h)) {
		say_fatal(h);
		return 1;
	}

	for (;;) {
		const uint8_t *frame;
		size_t len;
		gw_clear(&h->err);
		int rc = ctl_wait_frame(h, &frame, &len);
		if (rc == 0) {
			status = 0; /* orderly: TypeScript closed the channel or asked us to stop */
			break;
		}
		if (rc < 0) {
			say_fatal(h);
			break;
		}
		/* TypeScript opened the bulk pipe before sending anything: drop our read end so that a dead reader
		 * shows as EPIPE instead of a pipe that fills up forever. */
		if (h->bulk_r >= 0) {
			close(h->bulk_r);
			h->bulk_r = -1;
		}
		/* Long operations read the control socket for cancels (which may move the input buffer): work on
		 * a copy of the request. */
		uint8_t *req = malloc(len ? len : 1);
		if (!req) {
			gw_fail(&h->err, ENOMEM, "malloc", 0, "request of %zu bytes", len);
			say_fatal(h);
			break;
		}
		memcpy(req, frame, len);
		ctl_consume(h, len);
		rc = handle(h, req, len);
		free(req);
		if (rc) {
			say_fatal(h);
			break;
		}
		if (h->terminate)
			break;
	}
	/* Connections first: a task resumed by detach_all must not find its socket in repair mode. */
	tcp_repair_all_off(h);
	track_close_all(h);
	detach_all(h);
	free(h->tr.v);
	free(h->in.buf);
	free(h->bulk_bufs[0]);
	free(h->bulk_bufs[1]);
	pb_buf_free(&h->out);
	return status;
}
