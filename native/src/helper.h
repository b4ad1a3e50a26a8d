/* The helper's one context: everything an operation needs is reached from struct helper, which main()
 * owns and passes down. No global holds operation state. */
#ifndef GODWIT_HELPER_H
#define GODWIT_HELPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "pb.h"

#define HELPER_PROTOCOL_VERSION 1

/* A thread this helper has seized. */
struct tracee {
	int tid;
	int tgid;
	int status;      /* E_SeizeStatus_STOPPED, _GROUP_STOPPED or _TIMEOUT */
	int stopped;     /* in a ptrace stop: ptrace requests work */
	int stop_signal; /* group stop signal, if any */
};

struct tracees {
	struct tracee *v;
	size_t n, cap;
};

/* A TCP connection of a dumped task that the helper put into repair mode: its own copy of the socket
 * (pidfd_getfd), kept so that repair mode can be ended even if the task is gone. */
struct repaired_sk {
	int pid, fd, copy;
	int reuseaddr; /* SO_REUSEADDR before repair mode, which leaving repair mode clears */
};

struct repaired_sks {
	struct repaired_sk *v;
	size_t n, cap;
};

/* A process whose writes are tracked for pre-copy (track.c): our copy of the userfaultfd injected into it
 * (the only reference) and its /proc/PID/pagemap for PAGEMAP_SCAN. */
struct track {
	int pid;
	int uffd;
	int pagemap_fd;
};

struct trackers {
	struct track *v;
	size_t n, cap;
};

/* Control channel input: bytes received but not yet handled (possibly several frames). */
struct ctl_in {
	uint8_t *buf;
	size_t len, cap;
	int eof;
};

struct helper {
	int ctl_fd;   /* fd 3: unix stream socket to TypeScript */
	int bulk_w;   /* write end of the bulk pipe */
	int bulk_r;   /* read end: kept until TypeScript has opened it through /proc, then closed */
	int sig_fd;   /* signalfd for SIGCHLD (tracee stops) and SIGTERM/SIGINT/SIGHUP (shut down) */
	int terminate; /* shut down requested (signal or control channel closed) */
	unsigned bulk_pipe_size;
	long page_size;

	struct ctl_in in;
	struct pb_buf out;
	struct gw_err err;

	/* The request being handled, and whether TypeScript asked to cancel it. */
	uint32_t cur_id;
	int cancelled;

	struct tracees tr;
	struct repaired_sks repaired; /* inet.c: connections in repair mode */
	struct trackers trk;

	/* Two staging buffers for page reads (process_vm_readv target, then spliced or written to the bulk
	 * pipe). A buffer handed to the pipe with vmsplice is referenced by it until read: it is reused only once
	 * the pipe holds no byte of it (bulk_pushed counts every byte ever put into the pipe). */
	uint8_t *bulk_bufs[2];
	uint64_t bulk_pushed_end[2]; /* bulk_pushed after the buffer's last byte went in; 0: not in the pipe */
	int bulk_next;
	size_t bulk_buf_size;
	uint64_t bulk_pushed;
	int bulk_vmsplice; /* 1: vmsplice payloads (default); 0: write() them (GODWIT_HELPER_BULK=write) */

	/* XSAVE area size for NT_X86_XSTATE on this CPU (CPUID 0xD). */
	unsigned xsave_size;
};

/* ---- ctl.c: framing on the control socket */
#define CTL_MAX_FRAME (16u << 20) /* a request never needs more; refuse larger lengths as corrupt framing */
/* Waits until a complete frame is buffered; 1 with frame and len set, 0 on shutdown (EOF or signal), -1 on error. */
int ctl_wait_frame(struct helper *h, const uint8_t **frame, size_t *len);
void ctl_consume(struct helper *h, size_t frame_len);
/* Writes h->out (which starts with a 4-byte hole for the length) as one frame. */
int ctl_send(struct helper *h);
/* Starts a response in h->out: length hole + id. */
void ctl_begin_response(struct helper *h, uint32_t id);
/* For long operations: reads what TypeScript sent without blocking; a Cancel for the current request sets
 * h->cancelled, EOF sets h->terminate. Returns 1 if the operation should stop. */
int ctl_check_cancel(struct helper *h);
/* Drains the signalfd: SIGTERM/SIGINT/SIGHUP set h->terminate. */
void ctl_drain_signals(struct helper *h);

/* ---- seize.c: seizing, waiting, detaching, killing */
struct tracee *tracee_find(struct helper *h, int tid);
/* Waits for tid to change state; 1: *status set, 0: timed out, -1: error (errno, e.g. ECHILD). */
int wait_tid(struct helper *h, int tid, int *status, int timeout_ms);
int op_seize(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_detach(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_kill(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
/* Detaches every tracee (used on shutdown); never fails, reports problems on stderr. */
void detach_all(struct helper *h);
/* The tracee for tid, which must be seized and stopped (else fails with ESRCH naming tid). */
struct tracee *tracee_stopped(struct helper *h, int tid);
/* The state letter of /proc/<tid>/stat (R, S, T, t, Z, X, ...), or 0 if the task is gone. */
char proc_state(int tid);

/* ---- regs.c: per-thread state through ptrace */
int op_thread_regs(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
/* Pending signals (raw 128-byte siginfo) of tid, per thread or shared, as repeated bytes field `field`. */
int put_pending(struct helper *h, int tid, int shared, unsigned field, struct pb_buf *out);

/* ---- procstate.c: per-process state through injected syscalls */
int op_dump_process(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);

/* ---- mem.c: page contents to the bulk pipe */
int op_read_pages(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);

/* ---- track.c: dirty tracking for pre-copy (userfaultfd WP_ASYNC + PAGEMAP_SCAN) */
int op_track_start(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_track_register(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_track_scan(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_track_stop(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
/* Present/swapped pages of private mappings without zero and page-cache pages (PAGEMAP_SCAN, no tracking). */
int op_present_pages(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
/* Closes every tracking userfaultfd (shutdown): the kernel drops the protection. */
void track_close_all(struct helper *h);

/* ---- files.c: pipes and sockets through pidfd_getfd */
/* Our own fd (O_CLOEXEC) for fd `fd` of pid. */
int grab_fd(struct helper *h, int pid, int fd);
/* pid, fd and max_bytes of a request on one fd of a task (PeekPipeReq, PeekSocketReq, SockOptsReq, InetSockReq,
 * TcpSock, TcpRepairDumpReq: same field numbers); `what` names the message in the error. */
struct fd_req {
	int pid, fd;
	uint32_t max_bytes;
};
int parse_fd_req(struct helper *h, const uint8_t *req, size_t len, struct fd_req *q, const char *what);
int op_peek_pipe(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_tty_queue(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_peek_socket(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_sock_opts(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_fd_query(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);

/* ---- diag.c: NETLINK_SOCK_DIAG for unix sockets */
int op_unix_diag(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);

/* ---- inet.c: TCP and UDP sockets, TCP_REPAIR */
int op_inet_sock(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_tcp_repair_on(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_tcp_repair_dump(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
int op_tcp_repair_off(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out);
/* SO_REUSEADDR of a connection before repair mode forced it; -1 if fd `fd` of `pid` is not in repair mode. */
int repaired_reuseaddr(struct helper *h, int pid, int fd);
/* Ends repair mode on every connection still held (shutdown: the tasks must find them as they were). */
void tcp_repair_all_off(struct helper *h);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

#endif
