/* FdQuery: one read-only fcntl or ioctl on a task's fd (copied with pidfd_getfd) or on a /proc path the helper
 * opens itself (a memfd that is only mapped: /proc/PID/map_files/...). TypeScript picks the command; the
 * helper only runs it and returns the result and the bytes the call filled in. The one kind that writes:
 * FDQ_LINK gives the file of a task's fd a new name (a link remap of a deleted file that has other links). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fields.h"
#include "helper.h"

/* Largest output buffer an ioctl may fill (termios, winsize and friends are far smaller). */
#define FDQ_MAX_ARG 4096

enum { FDQ_FCNTL = 0, FDQ_IOCTL = 1, FDQ_FOWN = 2, FDQ_PEERNAME = 3, FDQ_SAME_FILE = 4, FDQ_SHARES = 5, FDQ_LINK = 6,
       FDQ_EPOLL_TFD = 7 };

#ifndef KCMP_FILE
#define KCMP_FILE 0
#endif

#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

/* The fd's owner for SIGIO/SIGURG (F_GETOWN_EX), its signal (F_GETSIG) and the credentials recorded when the
 * owner was set (F_GETOWNER_UIDS; EINVAL without CONFIG_CHECKPOINT_RESTORE: result 0 then, uids left 0), as five
 * int32: owner type, owner pid, signal, uid, euid. Three fcntls in one request: it runs for every fd, frozen. */
static long query_fown(int t, unsigned char *buf)
{
	struct f_owner_ex ex = { 0, 0 };
	int32_t v[5] = { 0, 0, 0, 0, 0 };
	uint32_t uids[2] = { 0, 0 };
	if (fcntl(t, F_GETOWN_EX, &ex) < 0)
		return -1;
	int sig = fcntl(t, F_GETSIG);
	if (sig < 0)
		return -1;
	long have_uids = fcntl(t, F_GETOWNER_UIDS, uids) == 0;
	v[0] = ex.type, v[1] = ex.pid, v[2] = sig, v[3] = (int32_t)uids[0], v[4] = (int32_t)uids[1];
	memcpy(buf, v, sizeof v);
	return have_uids;
}

static int open_target(struct helper *h, int pid, int fd, const char *path)
{
	if (path[0]) {
		int o = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (o < 0)
			return gw_fail_errno(&h->err, "open", pid, "%s", path);
		return o;
	}
	return grab_fd(h, pid, fd);
}

int op_fd_query(struct helper *h, const uint8_t *req, size_t len, struct pb_buf *out)
{
	struct pb_reader r = pb_reader(req, len);
	struct pb_field f;
	int rc, pid = 0, fd = -1, kind = FDQ_FCNTL;
	uint64_t cmd = 0, arg = 0;
	uint32_t arg_len = 0;
	char path[PATH_MAX] = "";
	while ((rc = pb_next(&r, &f)) > 0) {
		if (f.num == F_FdQueryReq_pid)
			pid = (int)f.v;
		else if (f.num == F_FdQueryReq_fd)
			fd = (int)f.v;
		else if (f.num == F_FdQueryReq_path && f.len < sizeof(path)) {
			memcpy(path, f.data, f.len);
			path[f.len] = 0;
		} else if (f.num == F_FdQueryReq_kind)
			kind = (int)f.v;
		else if (f.num == F_FdQueryReq_cmd)
			cmd = f.v;
		else if (f.num == F_FdQueryReq_arg)
			arg = f.v;
		else if (f.num == F_FdQueryReq_arg_len)
			arg_len = (uint32_t)f.v;
	}
	if (rc < 0 || pid <= 0 || (fd < 0 && !path[0]) || arg_len > FDQ_MAX_ARG || (kind < FDQ_FCNTL || kind > FDQ_EPOLL_TFD) ||
	    (kind == FDQ_LINK && (fd < 0 || !path[0])))
		return gw_fail(&h->err, EBADMSG, "decode", pid, "malformed FdQueryReq (pid %d, fd %d, arg_len %u)", pid, fd,
			       arg_len);
	if (kind == FDQ_SAME_FILE) {
		/* Is fd `fd` of `pid` the same open file description as fd `arg` of pid `cmd`? kcmp: 0 when it is
		 * (nothing to grab: it compares the two tasks' fd tables). */
		long k = syscall(SYS_kcmp, pid, (pid_t)cmd, KCMP_FILE, (unsigned long)fd, (unsigned long)arg);
		if (k < 0)
			return gw_fail_errno(&h->err, "kcmp", pid, "fd %d against fd %llu of pid %llu", fd,
					     (unsigned long long)arg, (unsigned long long)cmd);
		pb_int(out, F_FdQueryResp_result, k);
		return 0;
	}
	if (kind == FDQ_SHARES) {
		/* Whether `pid` and pid `cmd` share one memory (KCMP_VM), fd table (KCMP_FILES) or fs_struct (KCMP_FS),
		 * the type being `arg`: clone() without CLONE_THREAD can share them. Result 0: shared. */
		if (arg != KCMP_VM && arg != KCMP_FILES && arg != KCMP_FS)
			return gw_fail(&h->err, EINVAL, "decode", pid, "FdQueryReq kcmp type %llu is not VM, FILES or FS",
				       (unsigned long long)arg);
		long same = syscall(SYS_kcmp, pid, (pid_t)cmd, (int)arg, 0, 0);
		if (same < 0)
			return gw_fail_errno(&h->err, "kcmp", pid, "type %d against pid %d", (int)arg, (int)cmd);
		pb_int(out, F_FdQueryResp_result, same);
		return 0;
	}
	if (kind == FDQ_EPOLL_TFD) {
		/* Is fd `fd` of `pid` the file of the item its epoll fd `cmd` has under fd number (arg & 0xffffffff),
		 * the (arg >> 32)-th item with that number? kcmp: 0 when it is; ENOENT: no such item. An item stays
		 * under the number it was added with after that fd is closed. */
		struct kcmp_epoll_slot slot = { .efd = (uint32_t)cmd, .tfd = (uint32_t)arg, .toff = (uint32_t)(arg >> 32) };
		long k = syscall(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, (unsigned long)fd, (unsigned long)&slot);
		if (k < 0)
			return gw_fail_errno(&h->err, "kcmp", pid, "fd %d against epoll fd %u item fd %u (#%u)", fd, slot.efd,
					     slot.tfd, slot.toff);
		pb_int(out, F_FdQueryResp_result, k);
		return 0;
	}
	if (kind == FDQ_LINK) {
		/* A new name `path` for the file of fd `fd` of `pid`: linkat through our copy's /proc/self/fd link
		 * (AT_SYMLINK_FOLLOW links the file itself, deleted name or not, as long as it still has links). */
		int t AUTO_CLOSE = grab_fd(h, pid, fd);
		if (t < 0)
			return -1;
		char self[64];
		snprintf(self, sizeof(self), "/proc/self/fd/%d", t);
		if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0)
			return gw_fail_errno(&h->err, "linkat", pid, "fd %d to %s", fd, path);
		pb_int(out, F_FdQueryResp_result, 0);
		return 0;
	}
	int t AUTO_CLOSE = open_target(h, pid, fd, path);
	if (t < 0)
		return -1;
	unsigned char buf[FDQ_MAX_ARG];
	memset(buf, 0, sizeof(buf));
	long res;
	if (kind == FDQ_FOWN) {
		res = query_fown(t, buf);
		arg_len = 20;
	} else if (kind == FDQ_PEERNAME) {
		/* A socket's peer address (a unix socket connected to a connection its listener has not accepted: the
		 * peer has no inode for socket diag to name, only the listener's address). Result: its length. */
		socklen_t alen = sizeof(struct sockaddr_storage);
		res = getpeername(t, (struct sockaddr *)buf, &alen);
		if (res == 0)
			res = alen, arg_len = alen;
	} else if (kind == FDQ_FCNTL)
		res = fcntl(t, (int)cmd, (unsigned long)arg);
	else {
		/* With a buffer, arg is its first 8 bytes: an ioctl's input (PIDFD_GET_INFO's request mask). */
		if (arg_len >= 8)
			memcpy(buf, &arg, 8);
		res = ioctl(t, (unsigned long)cmd, arg_len ? (void *)buf : (void *)(uintptr_t)arg);
	}
	if (res < 0)
		return gw_fail_errno(&h->err, kind == FDQ_IOCTL ? "ioctl" : kind == FDQ_PEERNAME ? "getpeername" : "fcntl", pid, "fd %d%s%s command 0x%llx", fd,
				     path[0] ? " " : "", path, (unsigned long long)cmd);
	pb_int(out, F_FdQueryResp_result, res);
	if (arg_len)
		pb_bytes(out, F_FdQueryResp_data, buf, arg_len);
	return 0;
}
