/* TCP and UDP sockets of a dumped task, read through a copy of its fd (pidfd_getfd: the same socket).
 * - InetSock: state, v6only, listen backlog and accept queue, TCP and IP options that SockOpts does not show.
 * - TcpRepairOn: TCP_REPAIR for every connection of the tree in one go, with the send queue selected so that
 *   the kernel transmits no new data while the others are read (what it would send is kept as sent and goes
 *   out again as a retransmission). The helper keeps its copies in struct helper until TcpRepairOff.
 * - TcpRepairDump: sequence numbers, both queues (peeked), options, window and timestamp of one connection.
 * - TcpRepairOff: repair mode off again (the tree runs on), or copies dropped with the sockets left in repair
 *   mode (the tree was killed: a socket closed in repair mode sends neither FIN nor RST). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

/* A connection's queues are bounded by its buffers (tcp_wmem/tcp_rmem maxima are a few MiB); this bounds our
 * allocation if someone raised them far beyond. */
#define TCP_QUEUE_DEFAULT_MAX (64u << 20)
/* The receive queue can grow while we look (packets from a peer outside the tree): read it again this often. */
#define RCVQ_TRIES 4
#define MAX_REPAIRED 65536

static int get_int(int s, int level, int opt, int *v)
{
	socklen_t l = sizeof(*v);
	*v = 0;
	return getsockopt(s, level, opt, v, &l);
}

static int set_int(int s, int level, int opt, int v)
{
	return setsockopt(s, level, opt, &v, sizeof(v));
}

int op_inet_sock(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct fd_req q;
	if (parse_fd_req(h, req, len, &q, "InetSockReq"))
		return -1;
	int s AUTO_CLOSE = grab_fd(h, q.pid, q.fd);
	if (s < 0)
		return -1;
	int domain, type, proto;
	if (get_int(s, SOL_SOCKET, SO_DOMAIN, &domain) || get_int(s, SOL_SOCKET, SO_TYPE, &type) ||
	    get_int(s, SOL_SOCKET, SO_PROTOCOL, &proto))
		return gw_fail_errno(&h->err, "getsockopt", q.pid, "fd %d is not a socket?", q.fd);
	if (domain != AF_INET && domain != AF_INET6)
		return gw_fail(&h->err, EAFNOSUPPORT, "inet_sock", q.pid, "fd %d is no inet socket (domain %d)", q.fd, domain);
	int v;
	if (proto == IPPROTO_TCP) {
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		memset(&ti, 0, sizeof(ti));
		if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &tl))
			return gw_fail_errno(&h->err, "getsockopt(TCP_INFO)", q.pid, "fd %d", q.fd);
		pb_varint(out, F_InetSockResp_state, ti.tcpi_state);
		if (ti.tcpi_state == TCP_LISTEN) {
			/* For listeners tcp_info carries the accept queue (unacked) and listen()'s backlog (sacked). */
			pb_varint(out, F_InetSockResp_backlog, ti.tcpi_sacked);
			pb_varint(out, F_InetSockResp_accept_queue, ti.tcpi_unacked);
		}
		static const struct {
			int opt;
			unsigned field;
			const char *name;
		} tcp_ints[] = {
			{ TCP_NODELAY, F_InetSockResp_nodelay, "TCP_NODELAY" },
			{ TCP_CORK, F_InetSockResp_cork, "TCP_CORK" },
			{ TCP_KEEPCNT, F_InetSockResp_keepcnt, "TCP_KEEPCNT" },
			{ TCP_KEEPIDLE, F_InetSockResp_keepidle, "TCP_KEEPIDLE" },
			{ TCP_KEEPINTVL, F_InetSockResp_keepintvl, "TCP_KEEPINTVL" },
		};
		for (size_t i = 0; i < sizeof(tcp_ints) / sizeof(tcp_ints[0]); i++) {
			if (get_int(s, IPPROTO_TCP, tcp_ints[i].opt, &v))
				return gw_fail_errno(&h->err, "getsockopt", q.pid, "%s of fd %d", tcp_ints[i].name, q.fd);
			pb_varint(out, tcp_ints[i].field, (uint32_t)v);
		}
	} else {
		struct sockaddr_storage a;
		socklen_t al = sizeof(a);
		/* UDP keeps TCP's state numbers in the kernel: ESTABLISHED once connected, CLOSE otherwise. */
		pb_varint(out, F_InetSockResp_state, getpeername(s, (struct sockaddr *)&a, &al) == 0 ? TCP_ESTABLISHED : TCP_CLOSE);
	}
	if (domain == AF_INET6) {
		if (get_int(s, IPPROTO_IPV6, IPV6_V6ONLY, &v))
			return gw_fail_errno(&h->err, "getsockopt(IPV6_V6ONLY)", q.pid, "fd %d", q.fd);
		pb_varint(out, F_InetSockResp_v6only, v != 0);
	}
	if (get_int(s, IPPROTO_IP, IP_FREEBIND, &v) == 0)
		pb_varint(out, F_InetSockResp_freebind, v != 0);
	char dev[IFNAMSIZ + 1] = "";
	socklen_t dl = IFNAMSIZ;
	if (getsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl) == 0 && dl > 0 && dev[0])
		pb_string(out, F_InetSockResp_bound_dev, dev);
	return 0;
}

static struct repaired_sk *repaired_find(struct helper *h, int pid, int fd)
{
	for (size_t i = 0; i < h->repaired.n; i++)
		if (h->repaired.v[i].pid == pid && h->repaired.v[i].fd == fd)
			return &h->repaired.v[i];
	return NULL;
}

int repaired_reuseaddr(struct helper *h, int pid, int fd)
{
	struct repaired_sk *rs = repaired_find(h, pid, fd);
	return rs ? rs->reuseaddr : -1;
}

/* Repair mode on for one connection; the copy is recorded only once it is in repair mode. */
static int repair_one(struct helper *h, int pid, int fd)
{
	if (repaired_find(h, pid, fd))
		return 0;
	if (h->repaired.n == MAX_REPAIRED)
		return gw_fail(&h->err, E2BIG, "tcp_repair_on", pid, "more than %d connections", MAX_REPAIRED);
	if (h->repaired.n == h->repaired.cap) {
		size_t cap = h->repaired.cap ? h->repaired.cap * 2 : 16;
		struct repaired_sk *v = realloc(h->repaired.v, cap * sizeof(*v));
		if (!v)
			return gw_fail(&h->err, ENOMEM, "realloc", pid, "repaired socket list");
		h->repaired.v = v;
		h->repaired.cap = cap;
	}
	int s = grab_fd(h, pid, fd);
	if (s < 0)
		return -1;
	int reuse = 0;
	socklen_t rl = sizeof(reuse);
	if (getsockopt(s, SOL_SOCKET, SO_REUSEADDR, &reuse, &rl)) {
		int e = errno;
		close(s);
		return gw_fail(&h->err, e, "getsockopt(SO_REUSEADDR)", pid, "fd %d", fd);
	}
	if (set_int(s, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)) {
		int e = errno;
		close(s);
		return gw_fail(&h->err, e, "setsockopt(TCP_REPAIR)", pid, "fd %d", fd);
	}
	h->repaired.v[h->repaired.n++] = (struct repaired_sk){ pid, fd, s, reuse };
	if (set_int(s, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE))
		return gw_fail_errno(&h->err, "setsockopt(TCP_REPAIR_QUEUE)", pid, "fd %d", fd);
	return 0;
}

int op_tcp_repair_on(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc;
	uint32_t count = 0;
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num != F_TcpRepairOnReq_socks || f.wire != PB_LEN)
			continue;
		struct fd_req q;
		if (parse_fd_req(h, f.data, f.len, &q, "TcpSock"))
			return -1;
		/* Stop at the first failure: those already in repair mode stay listed for TcpRepairOff. */
		if (repair_one(h, q.pid, q.fd))
			return -1;
		count++;
	}
	if (rc < 0)
		return gw_fail(&h->err, EBADMSG, "decode", 0, "malformed TcpRepairOnReq");
	pb_varint(out, F_TcpRepairOnResp_count, count);
	return 0;
}

/* Peeks `want` bytes of the selected queue (repair mode lets MSG_PEEK read the send queue too). */
static int peek_queue(struct helper *h, int s, int pid, int fd, const char *which, uint32_t want, uint8_t **data,
		      uint32_t *got)
{
	*got = 0;
	*data = malloc(want ? want : 1);
	if (!*data)
		return gw_fail(&h->err, ENOMEM, "malloc", pid, "%u bytes of the %s queue of fd %d", want, which, fd);
	if (!want)
		return 0;
	ssize_t n = recv(s, *data, want, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0)
		return gw_fail_errno(&h->err, "recv(MSG_PEEK)", pid, "%s queue of fd %d", which, fd);
	*got = (uint32_t)n;
	return 0;
}

int op_tcp_repair_dump(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct fd_req q;
	if (parse_fd_req(h, req, len, &q, "TcpRepairDumpReq"))
		return -1;
	struct repaired_sk *rs = repaired_find(h, q.pid, q.fd);
	if (!rs)
		return gw_fail(&h->err, ENOENT, "tcp_repair_dump", q.pid, "fd %d was not put into repair mode first", q.fd);
	int s = rs->copy;
	uint32_t max = q.max_bytes ? q.max_bytes : TCP_QUEUE_DEFAULT_MAX;
	int v;

	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &tl))
		return gw_fail_errno(&h->err, "getsockopt(TCP_INFO)", q.pid, "fd %d", q.fd);

	/* Send queue: nothing moves its end (write_seq) while the task is stopped. */
	if (set_int(s, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE))
		return gw_fail_errno(&h->err, "setsockopt(TCP_REPAIR_QUEUE)", q.pid, "send queue of fd %d", q.fd);
	int snd_seq, outq, unsent;
	if (get_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, &snd_seq))
		return gw_fail_errno(&h->err, "getsockopt(TCP_QUEUE_SEQ)", q.pid, "send queue of fd %d", q.fd);
	if (ioctl(s, SIOCOUTQ, &outq) || ioctl(s, SIOCOUTQNSD, &unsent))
		return gw_fail_errno(&h->err, "ioctl(SIOCOUTQ)", q.pid, "fd %d", q.fd);
	if ((uint32_t)outq > max)
		return gw_fail(&h->err, E2BIG, "tcp_repair_dump", q.pid, "send queue of fd %d holds %d bytes (limit %u)",
			       q.fd, outq, max);
	uint8_t *outd AUTO_FREE = NULL;
	uint32_t outn;
	if (peek_queue(h, s, q.pid, q.fd, "send", (uint32_t)outq, &outd, &outn))
		return -1;
	/* An ACK that arrived between SIOCOUTQ and the peek shortened the queue from its head: the peek is what
	 * is left, and it still ends at snd_seq. */
	/* A FIN not acked yet is in the send queue: it holds a sequence number (counted by SIOCOUTQ and, until it
	 * is sent, by SIOCOUTQNSD) but no byte. It is always last, so it is unsent whenever anything is. */
	if ((ti.tcpi_state == TCP_FIN_WAIT1 || ti.tcpi_state == TCP_CLOSING || ti.tcpi_state == TCP_LAST_ACK) && unsent > 0)
		unsent--;
	if (unsent > (int)outn)
		unsent = (int)outn;

	/* Receive queue: a peer outside the tree may still deliver; read seq, data, seq until they agree. */
	if (set_int(s, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE))
		return gw_fail_errno(&h->err, "setsockopt(TCP_REPAIR_QUEUE)", q.pid, "receive queue of fd %d", q.fd);
	int rcv_seq = 0, again = 0, inq;
	uint8_t *ind AUTO_FREE = NULL;
	uint32_t inn = 0;
	for (int tries = 0;; tries++) {
		if (get_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, &rcv_seq))
			return gw_fail_errno(&h->err, "getsockopt(TCP_QUEUE_SEQ)", q.pid, "receive queue of fd %d", q.fd);
		if (ioctl(s, SIOCINQ, &inq))
			return gw_fail_errno(&h->err, "ioctl(SIOCINQ)", q.pid, "fd %d", q.fd);
		if ((uint64_t)(uint32_t)inq + outn > max)
			return gw_fail(&h->err, E2BIG, "tcp_repair_dump", q.pid,
				       "queues of fd %d hold %d + %u bytes (limit %u)", q.fd, inq, outn, max);
		free(ind);
		ind = NULL;
		if (peek_queue(h, s, q.pid, q.fd, "receive", (uint32_t)inq, &ind, &inn))
			return -1;
		if (get_int(s, IPPROTO_TCP, TCP_QUEUE_SEQ, &again))
			return gw_fail_errno(&h->err, "getsockopt(TCP_QUEUE_SEQ)", q.pid, "receive queue of fd %d", q.fd);
		if (again == rcv_seq && inn == (uint32_t)inq)
			break;
		if (tries + 1 == RCVQ_TRIES)
			return gw_fail(&h->err, EAGAIN, "tcp_repair_dump", q.pid,
				       "receive queue of fd %d kept changing (the peer is still sending)", q.fd);
	}
	/* Back to the send queue: the mode that keeps the kernel from transmitting while frozen. */
	if (set_int(s, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE))
		return gw_fail_errno(&h->err, "setsockopt(TCP_REPAIR_QUEUE)", q.pid, "send queue of fd %d", q.fd);

	int mss;
	if (get_int(s, IPPROTO_TCP, TCP_MAXSEG, &mss)) /* in repair mode: the mss clamp */
		return gw_fail_errno(&h->err, "getsockopt(TCP_MAXSEG)", q.pid, "fd %d", q.fd);

	pb_varint(out, F_TcpRepairDumpResp_snd_seq, (uint32_t)snd_seq);
	pb_varint(out, F_TcpRepairDumpResp_rcv_seq, (uint32_t)rcv_seq);
	pb_bytes(out, F_TcpRepairDumpResp_outq, outd, outn);
	pb_varint(out, F_TcpRepairDumpResp_unsent, (uint32_t)unsent);
	pb_bytes(out, F_TcpRepairDumpResp_inq, ind, inn);
	pb_varint(out, F_TcpRepairDumpResp_opt_mask, ti.tcpi_options);
	pb_varint(out, F_TcpRepairDumpResp_snd_wscale, ti.tcpi_snd_wscale);
	pb_varint(out, F_TcpRepairDumpResp_rcv_wscale, ti.tcpi_rcv_wscale);
	pb_varint(out, F_TcpRepairDumpResp_mss_clamp, (uint32_t)mss);
	if (ti.tcpi_options & TCPI_OPT_TIMESTAMPS) {
		if (get_int(s, IPPROTO_TCP, TCP_TIMESTAMP, &v))
			return gw_fail_errno(&h->err, "getsockopt(TCP_TIMESTAMP)", q.pid, "fd %d", q.fd);
		pb_varint(out, F_TcpRepairDumpResp_timestamp, (uint32_t)v);
	}
	struct tcp_repair_window w;
	socklen_t wl = sizeof(w);
	if (getsockopt(s, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &wl) == 0) {
		pb_varint(out, F_TcpRepairDumpResp_has_window, 1);
		pb_varint(out, F_TcpRepairDumpResp_snd_wl1, w.snd_wl1);
		pb_varint(out, F_TcpRepairDumpResp_snd_wnd, w.snd_wnd);
		pb_varint(out, F_TcpRepairDumpResp_max_window, w.max_window);
		pb_varint(out, F_TcpRepairDumpResp_rcv_wnd, w.rcv_wnd);
		pb_varint(out, F_TcpRepairDumpResp_rcv_wup, w.rcv_wup);
	} else if (errno != ENOPROTOOPT) {
		return gw_fail_errno(&h->err, "getsockopt(TCP_REPAIR_WINDOW)", q.pid, "fd %d", q.fd);
	}
	return 0;
}

/* Whether pid will run again: not gone, not a zombie. A killed task's connection must stay in repair mode
 * (leaving it would send FIN or RST from a socket whose only holder is our copy). */
static int task_alive(int pid)
{
	char st = proc_state(pid);
	return st && st != 'Z' && st != 'X';
}

/* Ends repair mode (release = 0) or only drops the copies (release = 1); returns how many failed. Connections of
 * tasks that are gone are only dropped either way. */
static unsigned repair_off_all(struct helper *h, int release)
{
	unsigned failed = 0;
	for (size_t i = 0; i < h->repaired.n; i++) {
		struct repaired_sk *rs = &h->repaired.v[i];
		if (!release && task_alive(rs->pid)) {
			/* Queue selection back to none, then repair off (the kernel sends a window probe, which tells the
			 * peer the window as it is now). */
			set_int(rs->copy, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
			/* Leaving repair mode resets SO_REUSEADDR (zdtm socket-tcp with --leave-running): set it back. */
			if (set_int(rs->copy, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF) ||
			    set_int(rs->copy, SOL_SOCKET, SO_REUSEADDR, rs->reuseaddr)) {
				if (!failed)
					gw_fail_errno(&h->err, "setsockopt(TCP_REPAIR off, SO_REUSEADDR)", rs->pid, "fd %d", rs->fd);
				failed++;
			}
		}
		close(rs->copy);
	}
	h->repaired.n = 0;
	return failed;
}

int op_tcp_repair_off(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc, release = 0;
	while ((rc = pb_next(&r, &f)) > 0)
		if (f.num == F_TcpRepairOffReq_release)
			release = f.v != 0;
	if (rc < 0)
		return gw_fail(&h->err, EBADMSG, "decode", 0, "malformed TcpRepairOffReq");
	uint32_t n = (uint32_t)h->repaired.n;
	unsigned failed = repair_off_all(h, release);
	pb_varint(out, F_TcpRepairOffResp_count, n);
	return failed ? -1 : 0;
}

void tcp_repair_all_off(struct helper *h)
{
	if (h->repaired.n) {
		struct gw_err saved = h->err;
		gw_clear(&h->err);
		if (repair_off_all(h, 0))
			fprintf(stderr, "godwit-helper: could not end repair mode of a TCP connection of pid %d fd: %s\n",
				h->err.pid, h->err.detail);
		h->err = saved;
	}
	free(h->repaired.v);
	h->repaired.v = NULL;
	h->repaired.cap = 0;
}
