#define _GNU_SOURCE
/* Framing on the control socket: u32 little-endian length + protobuf message, both ways. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void ctl_drain_signals(struct helper *h)
{
	struct signalfd_siginfo si[16];
	for (;;) {
		ssize_t n = read(h->sig_fd, si, sizeof(si));
		if (n <= 0)
			return;
		for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++)
			if (si[i].ssi_signo != SIGCHLD)
				h->terminate = 1;
	}
}

/* Reads what is available on the control socket (non-blocking). */
static int ctl_read_available(struct helper *h)
{
	struct ctl_in *in = &h->in;
	for (;;) {
		if (in->cap - in->len < 65536) {
			size_t cap = in->cap ? in->cap * 2 : 131072;
			if (cap > CTL_MAX_FRAME * 2 + 65536)
				return gw_fail(&h->err, ENOBUFS, "read", 0, "control input backlog exceeds %u bytes",
					       CTL_MAX_FRAME * 2);
			uint8_t *b = realloc(in->buf, cap);
			if (!b)
				return gw_fail(&h->err, ENOMEM, "realloc", 0, "control input buffer");
			in->buf = b;
			in->cap = cap;
		}
		ssize_t n = read(h->ctl_fd, in->buf + in->len, in->cap - in->len);
		if (n > 0) {
			in->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			in->eof = 1;
			h->terminate = 1;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return 0;
		if (errno == ECONNRESET) {
			in->eof = 1;
			h->terminate = 1;
			return 0;
		}
		return gw_fail_errno(&h->err, "read", 0, "control socket");
	}
}

/* Length of the complete frame at offset off (header included), 0 if incomplete, -1 if corrupt. */
static long frame_at(struct helper *h, size_t off)
{
	if (h->in.len - off < 4)
		return 0;
	uint32_t n = get_le32(h->in.buf + off);
	if (n > CTL_MAX_FRAME)
		return -1;
	if (h->in.len - off < 4 + (size_t)n)
		return 0;
	return 4 + (long)n;
}

int ctl_wait_frame(struct helper *h, const uint8_t **frame, size_t *len)
{
	for (;;) {
		long n = frame_at(h, 0);
		if (n < 0)
			return gw_fail(&h->err, EPROTO, "read", 0, "control frame length %u exceeds %u bytes",
				       get_le32(h->in.buf), CTL_MAX_FRAME);
		if (n > 0) {
			*frame = h->in.buf + 4;
			*len = (size_t)n - 4;
			return 1;
		}
		if (h->terminate || h->in.eof)
			return 0;
		struct pollfd p[2] = { { h->ctl_fd, POLLIN, 0 }, { h->sig_fd, POLLIN, 0 } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return gw_fail_errno(&h->err, "poll", 0, "control socket");
		if (p[1].revents)
			ctl_drain_signals(h);
		if (p[0].revents && ctl_read_available(h))
			return -1;
	}
}

void ctl_consume(struct helper *h, size_t frame_len)
{
	size_t n = frame_len + 4;
	memmove(h->in.buf, h->in.buf + n, h->in.len - n);
	h->in.len -= n;
}

/* Whether the frame is a CancelReq for target id; decoding errors count as "no". */
static int is_cancel_for(const uint8_t *msg, size_t len, uint32_t target)
{
	struct pb_reader r = pb_reader(msg, len);
	struct pb_field f;
	while (pb_next(&r, &f) > 0) {
		if (f.num != F_Request_cancel || f.wire != PB_LEN)
			continue;
		struct pb_reader c = pb_reader(f.data, f.len);
		struct pb_field g;
		while (pb_next(&c, &g) > 0)
			if (g.num == F_CancelReq_target && g.v == target)
				return 1;
	}
	return 0;
}

int ctl_check_cancel(struct helper *h)
{
	struct pollfd p[2] = { { h->ctl_fd, POLLIN, 0 }, { h->sig_fd, POLLIN, 0 } };
	if (poll(p, 2, 0) > 0) {
		if (p[1].revents)
			ctl_drain_signals(h);
		if (p[0].revents) {
			struct gw_err saved = h->err;
			gw_clear(&h->err);
			if (ctl_read_available(h))
				h->terminate = 1; /* the control channel is unusable: stop and shut down */
			h->err = saved;
		}
	}
	/* Take cancels out of the backlog; other requests stay queued (TypeScript sends none meanwhile). */
	size_t off = 0;
	for (;;) {
		long n = frame_at(h, off);
		if (n <= 0)
			break;
		if (is_cancel_for(h->in.buf + off + 4, (size_t)n - 4, h->cur_id)) {
			h->cancelled = 1;
			memmove(h->in.buf + off, h->in.buf + off + n, h->in.len - off - (size_t)n);
			h->in.len -= (size_t)n;
			continue;
		}
		off += (size_t)n;
	}
	return h->cancelled || h->terminate;
}

void ctl_begin_response(struct helper *h, uint32_t id)
{
	pb_reset(&h->out);
	if (pb_reserve(&h->out, 4))
		h->out.len = 4;
	pb_varint(&h->out, F_Response_id, id);
}

static int write_all(struct helper *h, int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = { fd, POLLOUT, 0 };
			poll(&pfd, 1, -1);
			continue;
		}
		return gw_fail_errno(&h->err, "write", 0, "control socket");
	}
	return 0;
}

int ctl_send(struct helper *h)
{
	if (h->out.oom)
		return gw_fail(&h->err, ENOMEM, "realloc", 0, "response too large to encode");
	uint32_t n = (uint32_t)(h->out.len - 4);
	h->out.data[0] = (uint8_t)n;
	h->out.data[1] = (uint8_t)(n >> 8);
	h->out.data[2] = (uint8_t)(n >> 16);
	h->out.data[3] = (uint8_t)(n >> 24);
	return write_all(h, h->ctl_fd, h->out.data, h->out.len);
}
