/* Files and sockets that /proc cannot show, read through a copy of the target's fd (pidfd_getfd: same open
 * file description, our own fd number), without changing what the target will see:
 * - PeekPipe: the bytes in flight in a pipe, duplicated with tee() into a private pipe (nothing is consumed).
 * - PeekSocket: the receive queue of a unix socket, read with MSG_PEEK from peek offset 0 (SO_PEEK_OFF is set
 *   and put back), fds passed in the queue counted and closed again.
 * - SockOpts: socket options and names. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

#ifndef SO_PEEK_OFF
#define SO_PEEK_OFF 42
#endif
/* Default cap on what one peek returns: a unix socket queue is bounded by the peer's sndbuf (hundreds of KiB
 * by default), so 16 MiB leaves room for raised buffers while bounding our allocation. */
#define PEEK_DEFAULT_MAX (16u << 20)

/* Every request on one fd of a task shares field numbers 1-3 (pid, fd, max_bytes): one parser serves them all. */
_Static_assert(F_PeekSocketReq_pid == F_PeekPipeReq_pid && F_SockOptsReq_pid == F_PeekPipeReq_pid &&
		       F_InetSockReq_pid == F_PeekPipeReq_pid && F_TcpSock_pid == F_PeekPipeReq_pid &&
		       F_TcpRepairDumpReq_pid == F_PeekPipeReq_pid,
	       "fd requests share the pid field number");
_Static_assert(F_PeekSocketReq_fd == F_PeekPipeReq_fd && F_SockOptsReq_fd == F_PeekPipeReq_fd &&
		       F_InetSockReq_fd == F_PeekPipeReq_fd && F_TcpSock_fd == F_PeekPipeReq_fd &&
		       F_TcpRepairDumpReq_fd == F_PeekPipeReq_fd,
	       "fd requests share the fd field number");
_Static_assert(F_PeekSocketReq_max_bytes == F_PeekPipeReq_max_bytes &&
		       F_TcpRepairDumpReq_max_bytes == F_PeekPipeReq_max_bytes,
	       "fd requests share the max_bytes field number");

int parse_fd_req(struct helper *h, const uint8_t *req, size_t len, struct fd_req *q, const char *what)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc;
	memset(q, 0, sizeof(*q));
	q->fd = -1;
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_PeekPipeReq_pid)
			q->pid = (int)f.v;
		else if (f.num == F_PeekPipeReq_fd)
			q->fd = (int)f.v;
		else if (f.num == F_PeekPipeReq_max_bytes)
			q->max_bytes = (uint32_t)f.v;
	}
	if (rc < 0 || q->pid <= 0 || q->fd < 0)
		return gw_fail(&h->err, EBADMSG, "decode", q->pid, "malformed %s (pid %d, fd %d)", what, q->pid, q->fd);
	return 0;
}

int grab_fd(struct helper *h, int pid, int fd)
{
	int pidfd AUTO_CLOSE = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return gw_fail_errno(&h->err, "pidfd_open", pid, "to copy fd %d", fd);
	int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	if (copy < 0)
		return gw_fail_errno(&h->err, "pidfd_getfd", pid, "fd %d", fd);
	return copy; /* pidfd_getfd sets O_CLOEXEC on the new fd */
}

int op_peek_pipe(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct fd_req q;
	if (parse_fd_req(h, req, len, &q, "PeekPipeReq"))
		return -1;
	int src AUTO_CLOSE = grab_fd(h, q.pid, q.fd);
	if (src < 0)
		return -1;
	/* tee() needs a readable fd: if the process holds only the write end, open the pipe again for reading. */
	if ((fcntl(src, F_GETFL) & O_ACCMODE) == O_WRONLY) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", q.pid, q.fd);
		int rd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (rd < 0)
			return gw_fail_errno(&h->err, "open", q.pid, "%s (read side of a write-only pipe fd)", path);
		close(src);
		src = rd;
	}
	int size = fcntl(src, F_GETPIPE_SZ);
	if (size < 0)
		return gw_fail_errno(&h->err, "fcntl(F_GETPIPE_SZ)", q.pid, "fd %d is not a pipe?", q.fd);

	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK))
		return gw_fail_errno(&h->err, "pipe2", q.pid, "private pipe to tee fd %d into", q.fd);
	int pr AUTO_CLOSE = p[0], pw AUTO_CLOSE = p[1];
	/* As large as the source so that tee can duplicate all of it; bounded by pipe-max-size without
	 * CAP_SYS_RESOURCE, in which case what does not fit is reported as truncated. */
	if (fcntl(pw, F_SETPIPE_SZ, size) < 0)
		fcntl(pw, F_SETPIPE_SZ, h->bulk_pipe_size);
	uint32_t max = q.max_bytes ? q.max_bytes : (uint32_t)size;
	ssize_t n = tee(src, pw, max, SPLICE_F_NONBLOCK);
	if (n < 0 && errno != EAGAIN)
		return gw_fail_errno(&h->err, "tee", q.pid, "pipe fd %d", q.fd);
	if (n < 0)
		n = 0; /* empty pipe */
	uint8_t *data AUTO_FREE = malloc(n ? (size_t)n : 1);
	if (!data)
		return gw_fail(&h->err, ENOMEM, "malloc", q.pid, "%zd bytes of pipe data", n);
	size_t got = 0;
	while (got < (size_t)n) {
		ssize_t k = read(pr, data + got, (size_t)n - got);
		if (k <= 0)
			return gw_fail_errno(&h->err, "read", q.pid, "private copy of pipe fd %d", q.fd);
		got += (size_t)k;
	}
	/* Anything beyond what tee copied? FIONREAD on the source tells how much the pipe holds. */
	int queued = 0;
	if (ioctl(src, FIONREAD, &queued) < 0)
		queued = n;
	pb_bytes(out, F_PeekPipeResp_data, data, got);
	pb_varint(out, F_PeekPipeResp_pipe_size, (uint64_t)size);
	if (queued > n)
		pb_varint(out, F_PeekPipeResp_truncated, 1);
	return 0;
}

/* Closes fds that a MSG_PEEK installed in our table from SCM_RIGHTS messages; returns how many there were. */
static unsigned close_passed_fds(struct msghdr *m)
{
	unsigned n = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
		n += (unsigned)k;
	}
	return n;
}

int op_peek_socket(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct fd_req q;
	if (parse_fd_req(h, req, len, &q, "PeekSocketReq"))
		return -1;
	int s AUTO_CLOSE = grab_fd(h, q.pid, q.fd);
	if (s < 0)
		return -1;
	int type = 0, domain = 0;
	socklen_t sl = sizeof(type);
	if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &sl) ||
	    (sl = sizeof(domain), getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &sl)))
		return gw_fail_errno(&h->err, "getsockopt", q.pid, "fd %d is not a socket?", q.fd);
	if (domain != AF_UNIX)
		return gw_fail(&h->err, EAFNOSUPPORT, "peek_socket", q.pid, "fd %d: only unix sockets can be peeked "
			       "(domain %d)", q.fd, domain);

	/* The peek offset belongs to the socket, which the target shares: set it to 0 and put it back after. */
	int old_off = -1;
	sl = sizeof(old_off);
	if (getsockopt(s, SOL_SOCKET, SO_PEEK_OFF, &old_off, &sl))
		return gw_fail_errno(&h->err, "getsockopt(SO_PEEK_OFF)", q.pid, "fd %d", q.fd);
	int zero = 0;
	if (setsockopt(s, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)))
		return gw_fail_errno(&h->err, "setsockopt(SO_PEEK_OFF)", q.pid, "fd %d", q.fd);

	uint32_t max = q.max_bytes ? q.max_bytes : PEEK_DEFAULT_MAX;
	/* Room for the largest datagram at default buffer sizes; a larger one regrows the buffer below. */
	size_t cap = 256u << 10;
	uint8_t *buf AUTO_FREE = malloc(cap);
	int rv = 0;
	uint64_t total = 0;
	int stream = type == SOCK_STREAM;
	/* A stream's queue is one packet: its runs of bytes are gathered here. */
	struct pb_buf acc = { 0 };
	unsigned acc_fds = 0;
	if (!buf) {
		rv = gw_fail(&h->err, ENOMEM, "malloc", q.pid, "socket peek buffer");
		goto out;
	}
	for (;;) {
		/* One message (datagram/seqpacket) or a run of stream bytes per call; FIONREAD-free so that it
		 * works the same for all types: grow the buffer while MSG_TRUNC says the message was larger. */
		struct sockaddr_un addr;
		union {
			char b[CMSG_SPACE(sizeof(int) * 253)];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = { buf, cap };
		struct msghdr m = { .msg_name = &addr, .msg_namelen = sizeof(addr), .msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b) };
		ssize_t n = recvmsg(s, &m, MSG_PEEK | MSG_DONTWAIT | (stream ? 0 : MSG_TRUNC));
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			rv = gw_fail_errno(&h->err, "recvmsg(MSG_PEEK)", q.pid, "fd %d", q.fd);
			goto out;
		}
		unsigned passed = close_passed_fds(&m);
		if (n == 0 && stream)
			break; /* end of stream (peer shut down) */
		if (!stream && (size_t)n > cap) {
			/* The peek offset did not move for a truncated datagram? It did (by the bytes returned): rewind
			 * by peeking again from this message with a larger buffer. */
			int back = (int)total;
			setsockopt(s, SOL_SOCKET, SO_PEEK_OFF, &back, sizeof(back));
			size_t ncap = (size_t)n;
			uint8_t *nb = realloc(buf, ncap);
			if (!nb) {
				rv = gw_fail(&h->err, ENOMEM, "realloc", q.pid, "datagram of %zd bytes", n);
				goto out;
			}
			buf = nb;
			cap = ncap;
			continue;
		}
		if (total + (uint64_t)n > max) {
			pb_varint(out, F_PeekSocketResp_truncated, 1);
			break;
		}
		total += (uint64_t)n;
		if (stream) {
			uint8_t *dst = pb_reserve(&acc, (size_t)n);
			if (!dst) {
				rv = gw_fail(&h->err, ENOMEM, "realloc", q.pid, "%llu bytes of stream queue",
					     (unsigned long long)total);
				goto out;
			}
			memcpy(dst, buf, (size_t)n);
			acc.len += (size_t)n;
			acc_fds += passed;
		} else {
			size_t pm = pb_begin(out, F_PeekSocketResp_packets);
			pb_bytes(out, F_QueuedPacket_data, buf, (size_t)n);
			if (m.msg_namelen > offsetof(struct sockaddr_un, sun_path))
				pb_bytes(out, F_QueuedPacket_addr, addr.sun_path,
					 m.msg_namelen - offsetof(struct sockaddr_un, sun_path));
			if (passed)
				pb_varint(out, F_QueuedPacket_passed_fds, passed);
			pb_end(out, pm);
		}
	}
out:
	if (stream && acc.len) {
		size_t pm = pb_begin(out, F_PeekSocketResp_packets);
		pb_bytes(out, F_QueuedPacket_data, acc.data, acc.len);
		if (acc_fds)
			pb_varint(out, F_QueuedPacket_passed_fds, acc_fds);
		pb_end(out, pm);
	}
	pb_buf_free(&acc);
	if (setsockopt(s, SOL_SOCKET, SO_PEEK_OFF, &old_off, sizeof(old_off)) && !rv)
		rv = gw_fail_errno(&h->err, "setsockopt(SO_PEEK_OFF)", q.pid, "restore peek offset of fd %d", q.fd);
	return rv;
}

static int get_int(int s, int level, int opt, int *v)
{
	socklen_t l = sizeof(*v);
	*v = 0;
	return getsockopt(s, level, opt, v, &l);
}

int op_sock_opts(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct fd_req q;
	if (parse_fd_req(h, req, len, &q, "SockOptsReq"))
		return -1;
	int s AUTO_CLOSE = grab_fd(h, q.pid, q.fd);
	if (s < 0)
		return -1;
	int v;
	static const struct {
		int opt;
		unsigned field;
		const char *name;
	} ints[] = {
		{ SO_DOMAIN, F_SockOptsResp_domain, "SO_DOMAIN" },
		{ SO_TYPE, F_SockOptsResp_type, "SO_TYPE" },
		{ SO_PROTOCOL, F_SockOptsResp_protocol, "SO_PROTOCOL" },
		{ SO_SNDBUF, F_SockOptsResp_sndbuf, "SO_SNDBUF" },
		{ SO_RCVBUF, F_SockOptsResp_rcvbuf, "SO_RCVBUF" },
		{ SO_REUSEADDR, F_SockOptsResp_reuseaddr, "SO_REUSEADDR" },
		{ SO_REUSEPORT, F_SockOptsResp_reuseport, "SO_REUSEPORT" },
		{ SO_PASSCRED, F_SockOptsResp_passcred, "SO_PASSCRED" },
		{ SO_PASSSEC, F_SockOptsResp_passsec, "SO_PASSSEC" },
		{ SO_KEEPALIVE, F_SockOptsResp_keepalive, "SO_KEEPALIVE" },
		{ SO_BROADCAST, F_SockOptsResp_broadcast, "SO_BROADCAST" },
		{ SO_PRIORITY, F_SockOptsResp_priority, "SO_PRIORITY" },
		{ SO_MARK, F_SockOptsResp_mark, "SO_MARK" },
		{ SO_PEEK_OFF, F_SockOptsResp_peek_off, "SO_PEEK_OFF" },
		{ SO_RCVLOWAT, F_SockOptsResp_rcvlowat, "SO_RCVLOWAT" },
		{ SO_DONTROUTE, F_SockOptsResp_dontroute, "SO_DONTROUTE" },
		{ SO_NO_CHECK, F_SockOptsResp_no_check, "SO_NO_CHECK" },
		{ SO_OOBINLINE, F_SockOptsResp_oobinline, "SO_OOBINLINE" },
	};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		if (get_int(s, SOL_SOCKET, ints[i].opt, &v)) {
			/* Options a socket family does not implement are absent, not failures. */
			if (errno == ENOPROTOOPT || errno == EOPNOTSUPP)
				continue;
			return gw_fail_errno(&h->err, "getsockopt", q.pid, "%s of fd %d", ints[i].name, q.fd);
		}
		/* Repair mode forces SO_REUSEADDR: the application's value is the one seen before. */
		if (ints[i].opt == SO_REUSEADDR && repaired_reuseaddr(h, q.pid, q.fd) >= 0)
			v = repaired_reuseaddr(h, q.pid, q.fd);
		pb_int(out, ints[i].field, v);
	}
	struct timeval tv;
	socklen_t tl = sizeof(tv);
	if (getsockopt(s, SOL_SOCKET, SO_SNDTIMEO_OLD, &tv, &tl) == 0)
		pb_varint(out, F_SockOptsResp_snd_timeo_usec, (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec);
	tl = sizeof(tv);
	if (getsockopt(s, SOL_SOCKET, SO_RCVTIMEO_OLD, &tv, &tl) == 0)
		pb_varint(out, F_SockOptsResp_rcv_timeo_usec, (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec);
	struct linger lg;
	socklen_t ll = sizeof(lg);
	if (getsockopt(s, SOL_SOCKET, SO_LINGER, &lg, &ll) == 0) {
		pb_int(out, F_SockOptsResp_linger_onoff, lg.l_onoff);
		pb_int(out, F_SockOptsResp_linger, lg.l_linger);
	}
	struct sockaddr_storage a;
	socklen_t al = sizeof(a), inet_len = 0;
	if (getsockname(s, (struct sockaddr *)&a, &al) == 0 && al > sizeof(sa_family_t)) {
		pb_bytes(out, F_SockOptsResp_bound_name, (uint8_t *)&a + sizeof(sa_family_t), al - sizeof(sa_family_t));
		if (a.ss_family == AF_INET || a.ss_family == AF_INET6)
			inet_len = al;
	}
	al = sizeof(a);
	/* SO_PEERNAME where getpeername refuses: a TCP connection that closed keeps its peer's address (the kernel
	 * wants the exact address size). */
	if ((getpeername(s, (struct sockaddr *)&a, &al) == 0 ||
	     (errno == ENOTCONN && inet_len && (al = inet_len, getsockopt(s, SOL_SOCKET, SO_PEERNAME, &a, &al) == 0))) &&
	    al > sizeof(sa_family_t))
		pb_bytes(out, F_SockOptsResp_peer_name, (uint8_t *)&a + sizeof(sa_family_t), al - sizeof(sa_family_t));
	/* sk_err shows as POLLERR without being consumed (getsockopt(SO_ERROR) would reset it). */
	struct pollfd pfd = { s, 0, 0 };
	if (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLERR))
		pb_varint(out, F_SockOptsResp_so_error_pending, 1);
	int fl = fcntl(s, F_GETFL);
	if (fl < 0)
		return gw_fail_errno(&h->err, "fcntl(F_GETFL)", q.pid, "fd %d", q.fd);
	pb_varint(out, F_SockOptsResp_file_flags, (uint64_t)fl);
	return 0;
}
