/*
 * fd-sharing: which fds are one open file description and which are not, when /proc cannot tell them apart
 * (zdtm file_shared, sockets_dgram).
 * - DIR/data opened twice at the same flags and position (a, c) plus a dup of the first (b); a child inherits
 *   all three. Two opens that look alike must stay two descriptions, and the dup and the inherited fds one.
 * - unix datagram sockets: one bound to a name and connected to itself; one bound and connected to another
 *   bound socket that is not connected back (so not a pair); a stream socket whose peer was closed with bytes
 *   still queued for it (zdtm sockets02).
 * Verify: the parent moves a to 1000 and c to 500; it and the child see b at 1000 and c at 500. A datagram sent
 * on the self-connected socket comes back on it; one sent on the other reaches its peer, named by getpeername;
 * the half-closed stream socket reads its bytes, then end of file.
 * --share 1: one more child, clone()d with CLONE_FILES (--share 2: CLONE_FS), which dump must refuse.
 * --stale-epoll 1: an epoll holding an item added under fd 700, a dup of a pipe's read end closed since (the
 *   item lives on while the pipe does, zdtm epoll), and two items under fd 701: one added through a dup closed
 *   since, one through the other pipe that holds number 701 now (zdtm epoll01). Each pipe, written, must wake the
 *   epoll with its own item's data, and fd 700 stay closed.
 * --pidfd 1: the parent holds a pidfd of its child (zdtm fd_from_pidfd) and signals it through that pidfd, which
 *   must name the restored child.
 * --pidfd 2 also: two pidfds of a child that exited with code 7 and one of a child killed by SIGKILL, both reaped
 *   (zdtm pidfd_dead, pidfd_diffdead): the two must share an inode, the third have another, and each report its
 *   child's end (PIDFD_GET_INFO, where the kernel has it).
 */
#include "zdtm.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

struct fds {
	int a, b, c;
};

/* The first (64-byte) struct pidfd_info of PIDFD_GET_INFO (Linux 6.13): exit_code is its last field. */
struct pidfd_info64 {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define PIDFD_GET_INFO64 _IOWR(0xFF, 11, struct pidfd_info64)
#define PIDFD_INFO_EXIT64 (1ull << 3)

/* N pidfds (separate open file descriptions) of a child that then ends (exit code 7, or SIGKILL) and is reaped. */
static void dead_pidfds(struct zt *z, int kill_it, int *fds, int n)
{
	int go[2];
	if (pipe2(go, O_CLOEXEC))
		zt_setup_failed(z, "pipe2", "child about to end");
	pid_t c = fork();
	if (c == 0) {
		char x;
		close(go[1]);
		if (!kill_it && read(go[0], &x, 1) == 0)
			_exit(7); /* the parent closed its end */
		for (;;)
			pause();
	}
	close(go[0]);
	for (int i = 0; i < n; i++)
		if (c < 0 || (fds[i] = (int)syscall(SYS_pidfd_open, c, 0)) < 0)
			zt_setup_failed(z, "pidfd_open", "pidfd of a child about to end");
	if (kill_it)
		kill(c, SIGKILL);
	close(go[1]);
	int st;
	if (waitpid(c, &st, 0) != c)
		zt_setup_failed(z, "waitpid", "child about to end");
}

static ino_t ino_of(int fd)
{
	struct stat st;
	return fstat(fd, &st) ? 0 : st.st_ino;
}

/* The wait status PIDFD_GET_INFO reports, -1 without one, -2 where the kernel has no PIDFD_GET_INFO. */
static int pidfd_exit(int fd)
{
	struct pidfd_info64 info = { .mask = PIDFD_INFO_EXIT64 };
	if (ioctl(fd, PIDFD_GET_INFO64, &info))
		return -2;
	return info.mask & PIDFD_INFO_EXIT64 ? info.exit_code : -1;
}

static void check_dead_pidfds(struct zt *z, const int dead[3])
{
	if (ino_of(dead[0]) != ino_of(dead[1]))
		zt_fail(z, "two pidfds of one reaped child have different inodes");
	if (ino_of(dead[0]) == ino_of(dead[2]))
		zt_fail(z, "pidfds of two reaped children share an inode");
	int a = pidfd_exit(dead[0]), b = pidfd_exit(dead[2]);
	if (a == -2)
		return;
	if (a < 0 || !WIFEXITED(a) || WEXITSTATUS(a) != 7)
		zt_fail(z, "pidfd of the child that exited 7 reports status 0x%x", a);
	if (b < 0 || !WIFSIGNALED(b) || WTERMSIG(b) != SIGKILL)
		zt_fail(z, "pidfd of the child killed by SIGKILL reports status 0x%x", b);
}

static void check_offsets(struct zt *z, const char *who, const struct fds *f)
{
	off_t a = lseek(f->a, 0, SEEK_CUR), b = lseek(f->b, 0, SEEK_CUR), c = lseek(f->c, 0, SEEK_CUR);
	if (a != 1000 || b != 1000 || c != 500)
		zt_fail(z, "%s: offsets of the first open, its dup and the second open are %lld %lld %lld, expected 1000 1000 500",
			who, (long long)a, (long long)b, (long long)c);
}

/* An abstract name (no path length limit to meet), unique to this run. */
static socklen_t abstract_addr(struct sockaddr_un *a, const char *tag)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "godwit-fd-sharing-%d-%s", (int)getpid(), tag);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static void check_dgram(struct zt *z, int self_sk, int from, int to, const struct sockaddr_un *to_addr, socklen_t to_len)
{
	char buf[32] = "";
	if (send(self_sk, "self", 4, 0) != 4)
		zt_fail_sys(z, "send", "self-connected socket");
	else if (recv(self_sk, buf, sizeof(buf), MSG_DONTWAIT) != 4 || memcmp(buf, "self", 4))
		zt_fail(z, "a datagram sent on the self-connected socket did not come back on it");
	struct sockaddr_un peer;
	socklen_t plen = sizeof(peer);
	if (getpeername(from, (struct sockaddr *)&peer, &plen) < 0)
		zt_fail_sys(z, "getpeername", "bound socket connected to another");
	else if (plen != to_len || memcmp(&peer, to_addr, to_len))
		zt_fail(z, "the bound socket connected to another has another peer now");
	if (send(from, "other", 5, 0) != 5)
		zt_fail_sys(z, "send", "bound socket connected to another");
	else if (recv(to, buf, sizeof(buf), MSG_DONTWAIT) != 5 || memcmp(buf, "other", 5))
		zt_fail(z, "a datagram sent on the bound socket connected to another did not reach it");
}

/* A clone()d child sharing the fd table or fs with us: it only waits to be ended. */
static int sharer(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "share", 0, 0, 2, "1: a child clone()d with CLONE_FILES, 2: with CLONE_FS" },
				 { "stale-epoll", 0, 0, 1, "an epoll item under an fd number closed since" },
				 { "pidfd", 0, 0, 2, "a pidfd of the child, which verify signals through (2: also of reaped children)" } };
	zt_setup(&z, argc, argv, opts, 3, SIGUSR2);
	int ep = -1, ep_pipes[3][2];
	if (opts[1].value) {
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0)
			zt_setup_failed(&z, "epoll_create1", "stale epoll items");
		/* pipe 0 under 700 (closed), pipe 1 under 701 (closed), pipe 2 under 701 (kept: it holds 701) */
		const int num[3] = { 700, 701, 701 };
		for (int i = 0; i < 3; i++) {
			struct epoll_event ev = { .events = EPOLLIN, .data = { .u64 = 7 + i } };
			if (pipe2(ep_pipes[i], O_CLOEXEC) < 0 || dup2(ep_pipes[i][0], num[i]) != num[i] ||
			    epoll_ctl(ep, EPOLL_CTL_ADD, num[i], &ev) < 0 || (i < 2 && close(num[i]) < 0))
				zt_setup_failed(&z, "epoll/pipe/dup2", "stale epoll item");
		}
	}
	char path[PATH_MAX];
	zt_path(&z, path, sizeof(path), "data");
	struct fds f;
	f.a = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	f.c = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	f.b = dup(f.a);
	if (f.a < 0 || f.b < 0 || f.c < 0)
		zt_setup_failed(&z, "open/dup", path);

	struct sockaddr_un self_addr, from_addr, to_addr;
	socklen_t self_len = abstract_addr(&self_addr, "self"), from_len = abstract_addr(&from_addr, "from");
	socklen_t to_len = abstract_addr(&to_addr, "to");
	int self_sk = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int from = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), to = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (self_sk < 0 || from < 0 || to < 0)
		zt_setup_failed(&z, "socket", "datagram sockets");
	if (bind(self_sk, (struct sockaddr *)&self_addr, self_len) || connect(self_sk, (struct sockaddr *)&self_addr, self_len))
		zt_setup_failed(&z, "bind/connect", "self-connected socket");
	if (bind(to, (struct sockaddr *)&to_addr, to_len) || bind(from, (struct sockaddr *)&from_addr, from_len) ||
	    connect(from, (struct sockaddr *)&to_addr, to_len))
		zt_setup_failed(&z, "bind/connect", "bound socket connected to another");

	int half[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, half) < 0 || write(half[1], "left", 4) != 4 || close(half[1]) < 0)
		zt_setup_failed(&z, "socketpair/write/close", "half-closed stream socket");

	pid_t child = fork();
	if (child < 0)
		zt_setup_failed(&z, "fork", "child");
	if (child == 0) {
		while (!zt_signalled())
			zt_sleep_ns(1000000);
		check_offsets(&z, "child", &f);
		exit(zt_finish_part(&z, "child"));
	}
	static char stack[64 * 1024] __attribute__((aligned(16)));
	pid_t shared = 0;
	if (opts[0].value) {
		shared = clone(sharer, stack + sizeof(stack), (opts[0].value == 1 ? CLONE_FILES : CLONE_FS) | SIGCHLD, NULL);
		if (shared < 0)
			zt_setup_failed(&z, "clone", "sharing child");
		zt_info(&z, "sharer", "%d", (int)shared);
	}
	int dead[3] = { -1, -1, -1 };
	if (opts[2].value == 2) {
		dead_pidfds(&z, 0, dead, 2);
		dead_pidfds(&z, 1, dead + 2, 1);
	}
	int pidfd = -1;
	if (opts[2].value && (pidfd = (int)syscall(SYS_pidfd_open, child, 0)) < 0)
		zt_setup_failed(&z, "pidfd_open", "pidfd of the child");
	pid_t pids[] = { getpid(), child, shared };
	zt_ready(&z, pids, shared ? 3 : 2);
	zt_wait_sleeping(&z);

	if (lseek(f.a, 1000, SEEK_SET) != 1000 || lseek(f.c, 500, SEEK_SET) != 500)
		zt_fail_sys(&z, "lseek", path);
	check_offsets(&z, "parent", &f);
	if (pidfd < 0 || syscall(SYS_pidfd_send_signal, pidfd, SIGUSR2, NULL, 0) < 0) {
		if (pidfd >= 0)
			zt_fail_sys(&z, "pidfd_send_signal", "pidfd of the child");
		kill(child, SIGUSR2);
	}
	zt_collect_part(&z, "child", child);
	if (dead[0] >= 0)
		check_dead_pidfds(&z, dead);
	check_dgram(&z, self_sk, from, to, &to_addr, to_len);
	for (int i = 0; ep >= 0 && i < 3; i++) {
		struct epoll_event ev;
		char c;
		int n;
		if (write(ep_pipes[i][1], "x", 1) != 1 || (n = epoll_wait(ep, &ev, 1, 1000)) != 1 || ev.data.u64 != (uint64_t)(7 + i))
			zt_fail(&z, "stale epoll item %d: no event with data %d after a write to its pipe", i, 7 + i);
		if (read(ep_pipes[i][0], &c, 1) != 1)
			zt_fail_sys(&z, "read", "stale epoll item's pipe");
	}
	if (ep >= 0 && fcntl(700, F_GETFD) >= 0)
		zt_fail(&z, "fd 700, lent to an epoll item at restore, is still open");
	char left[8] = "";
	if (recv(half[0], left, sizeof(left), MSG_DONTWAIT) != 4 || memcmp(left, "left", 4) || recv(half[0], left, sizeof(left), MSG_DONTWAIT) != 0)
		zt_fail(&z, "half-closed stream socket: not its 4 queued bytes, then end of file");
	if (shared) {
		kill(shared, SIGKILL);
		waitpid(shared, NULL, 0);
	}
	return zt_finish(&z);
}
