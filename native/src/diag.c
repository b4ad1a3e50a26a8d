/* Unix sockets from NETLINK_SOCK_DIAG (what `ss -x` shows): inode, type, state, peer, bound name, pending
 * connections of a listener, queue lengths, shutdown state, and the inode of a bound path. One dump of the
 * whole namespace's unix sockets, filtered to the requested inodes here (the kernel's single-inode lookup needs
 * a cookie we do not have). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/rtnetlink.h>
#include <linux/unix_diag.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

/* Receive buffer for netlink dump batches (the kernel fills up to about 32 KiB per message batch). */
#define NL_BUF (64u << 10)
#define MAX_INODES 65536

static int wanted(const uint64_t *v, size_t n, uint64_t ino)
{
	if (!n)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (v[i] == ino)
			return 1;
	return 0;
}

static void put_sock(const struct unix_diag_msg *m, size_t len, struct pb_buf *out)
{
	size_t sm = pb_begin(out, F_UnixDiagResp_sockets);
	pb_varint(out, F_UnixSock_inode, m->udiag_ino);
	pb_varint(out, F_UnixSock_type, m->udiag_type);
	pb_varint(out, F_UnixSock_state, m->udiag_state);
	const struct rtattr *a = (const struct rtattr *)(m + 1);
	size_t left = len - NLMSG_ALIGN(sizeof(*m));
	for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		const void *d = RTA_DATA(a);
		size_t dl = RTA_PAYLOAD(a);
		switch (a->rta_type) {
		case UNIX_DIAG_NAME:
			pb_bytes(out, F_UnixSock_name, d, dl);
			break;
		case UNIX_DIAG_PEER:
			if (dl >= 4)
				pb_varint(out, F_UnixSock_peer_inode, *(const uint32_t *)d);
			break;
		case UNIX_DIAG_ICONS:
			for (size_t i = 0; i + 4 <= dl; i += 4)
				pb_varint(out, F_UnixSock_pending_connections, *(const uint32_t *)((const uint8_t *)d + i));
			break;
		case UNIX_DIAG_RQLEN:
			if (dl >= sizeof(struct unix_diag_rqlen)) {
				const struct unix_diag_rqlen *q = d;
				pb_varint(out, F_UnixSock_rqlen, q->udiag_rqueue);
				pb_varint(out, F_UnixSock_wqlen, q->udiag_wqueue);
			}
			break;
		case UNIX_DIAG_SHUTDOWN:
			if (dl >= 1)
				pb_varint(out, F_UnixSock_shutdown, *(const uint8_t *)d);
			break;
		case UNIX_DIAG_VFS:
			if (dl >= sizeof(struct unix_diag_vfs)) {
				const struct unix_diag_vfs *v = d;
				pb_varint(out, F_UnixSock_vfs_dev, v->udiag_vfs_dev);
				pb_varint(out, F_UnixSock_vfs_ino, v->udiag_vfs_ino);
			}
			break;
		}
	}
	pb_end(out, sm);
}

/* A NETLINK_SOCK_DIAG socket in the network namespace of pid (0: ours). */
static int diag_socket(struct helper *h, int pid)
{
	if (!pid) {
		int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
		return s < 0 ? gw_fail_errno(&h->err, "socket(NETLINK_SOCK_DIAG)", 0, "unix socket diag") : s;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	int target AUTO_CLOSE = open(path, O_RDONLY | O_CLOEXEC);
	if (target < 0)
		return gw_fail_errno(&h->err, "open", pid, "%s", path);
	int self AUTO_CLOSE = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return gw_fail_errno(&h->err, "open", 0, "/proc/self/ns/net");
	if (setns(target, CLONE_NEWNET))
		return gw_fail_errno(&h->err, "setns", pid, "network namespace of %d", pid);
	/* A socket keeps the namespace it was made in: make it there, then come back at once. */
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	int err = errno;
	if (setns(self, CLONE_NEWNET)) {
		/* Cannot happen short of a kernel bug; running on in a foreign namespace would be worse. */
		fprintf(stderr, "godwit-helper: cannot return to its own network namespace: %s\n", strerror(errno));
		abort();
	}
	if (s < 0)
		return gw_fail(&h->err, err, "socket(NETLINK_SOCK_DIAG)", pid, "in the network namespace of %d", pid);
	return s;
}

int op_unix_diag(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc, pid = 0;
	uint64_t *inodes AUTO_FREE = NULL;
	size_t n = 0, cap = 0;
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_UnixDiagReq_netns_pid) {
			pid = (int)f.v;
		} else if (f.num == F_UnixDiagReq_inodes) {
			struct pb_values it;
			uint64_t x;
			for (pb_values_init(&it, &f); (rc = pb_values_next(&it, &x)) > 0;) {
				if (n == MAX_INODES)
					return gw_fail(&h->err, E2BIG, "decode", 0, "UnixDiagReq: more than %d inodes", MAX_INODES);
				if (n == cap) {
					cap = cap ? cap * 2 : 64;
					uint64_t *v = realloc(inodes, cap * sizeof(*v));
					if (!v)
						return gw_fail(&h->err, ENOMEM, "realloc", 0, "inode list");
					inodes = v;
				}
				inodes[n++] = x;
			}
			if (rc < 0)
				break;
		}
	}
	if (rc < 0 || pid < 0)
		return gw_fail(&h->err, EBADMSG, "decode", pid, "malformed UnixDiagReq");

	int s AUTO_CLOSE = diag_socket(h, pid);
	if (s < 0)
		return -1;
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req r;
	} q = { 0 };
	q.nlh.nlmsg_len = sizeof(q);
	q.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	q.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	q.nlh.nlmsg_seq = 1;
	q.r.sdiag_family = AF_UNIX;
	q.r.udiag_states = ~0u;
	q.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (sendto(s, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) != sizeof(q))
		return gw_fail_errno(&h->err, "sendto", pid, "unix socket diag request");
	/* UDIAG_SHOW_SHUTDOWN is not a show flag: the kernel always adds UNIX_DIAG_SHUTDOWN. */

	uint8_t *buf AUTO_FREE = malloc(NL_BUF);
	if (!buf)
		return gw_fail(&h->err, ENOMEM, "malloc", 0, "netlink buffer");
	for (;;) {
		ssize_t got = recv(s, buf, NL_BUF, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return gw_fail_errno(&h->err, "recv", pid, "unix socket diag");
		}
		size_t left = (size_t)got;
		for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, left); nh = NLMSG_NEXT(nh, left)) {
			if (nh->nlmsg_type == NLMSG_DONE)
				return 0;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(nh);
				return gw_fail(&h->err, -e->error, "netlink(SOCK_DIAG_BY_FAMILY)", pid, "unix socket diag");
			}
			if (nh->nlmsg_type != SOCK_DIAG_BY_FAMILY || nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
				continue;
			const struct unix_diag_msg *m = NLMSG_DATA(nh);
			if (wanted(inodes, n, m->udiag_ino))
				put_sock(m, nh->nlmsg_len - NLMSG_HDRLEN, out);
		}
	}
}
