/*
 * eventfd-epoll: an eventfd holding a count, a semaphore eventfd, an epoll set watching them plus a pipe (edge
 * triggered), a socket, an empty pipe and a signalfd (one-shot and level entries too), a signalfd with pending
 * signals, and an inotify watch (its first event read at setup: queued inotify events are not part of a checkpoint,
 * the kernel has no way to queue them again, as in CRIU). --watch-dev 1: the watched directory is
 * /dev/godwit-watched instead of DIR/watched (in the ns flavor a tmpfs of the container's own).
 * Verify: epoll_wait reports exactly the same ready set with the same data twice in a row (edge-triggered and
 * one-shot entries only the first time), counts read back, the signalfd mask and its queued signals in order,
 * and the inotify watch reports a new event.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#define EFD_COUNT 7
#define SEM_COUNT 3
#define RT_VALUE 99

enum { D_EFD = 0x1111, D_PIPE = 0x2222, D_SOCK = 0x3333, D_EMPTY = 0x4444, D_SEM = 0x5555, D_SFD = 0x6666 };

struct want_event {
	uint64_t data;
	uint32_t events;
};

static void add(struct zt *z, int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		zt_setup_failed(z, "epoll_ctl", "add");
}

static void describe(char *buf, size_t len, const struct epoll_event *ev, int n)
{
	size_t used = 0;
	buf[0] = 0;
	for (int i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, " %llx:%x", (unsigned long long)ev[i].data.u64,
					 ev[i].events);
}

static void check_ready(struct zt *z, int ep, const char *round, const struct want_event *want, int nwant)
{
	struct epoll_event ev[16];
	int n = epoll_wait(ep, ev, 16, 0);
	if (n < 0) {
		zt_fail_sys(z, "epoll_wait", round);
		return;
	}
	int ok = n == nwant;
	for (int i = 0; ok && i < nwant; i++) {
		int found = 0;
		for (int k = 0; k < n; k++)
			found |= ev[k].data.u64 == want[i].data && ev[k].events == want[i].events;
		ok = found;
	}
	if (!ok) {
		char got[512], exp[512];
		struct epoll_event w[16];
		for (int i = 0; i < nwant; i++)
			w[i] = (struct epoll_event){ .events = want[i].events, .data.u64 = want[i].data };
		describe(got, sizeof(got), ev, n);
		describe(exp, sizeof(exp), w, nwant);
		zt_fail(z, "epoll %s: ready set (data:events) is%s, expected%s", round, got, exp);
	}
}

static void check_count(struct zt *z, const char *what, int fd, const uint64_t *want, int n)
{
	for (int i = 0; i <= n; i++) {
		uint64_t v;
		ssize_t r = read(fd, &v, sizeof(v));
		if (i == n) {
			if (r >= 0)
				zt_fail(z, "%s (fd %d): read %d gave %llu, expected EAGAIN", what, fd, i, (unsigned long long)v);
		} else if (r != sizeof(v)) {
			zt_fail(z, "%s (fd %d): read %d: %s, expected %llu", what, fd, i, r < 0 ? strerror(errno) : "short",
				(unsigned long long)want[i]);
			return;
		} else if (v != want[i]) {
			zt_fail(z, "%s (fd %d): read %d gave %llu, expected %llu", what, fd, i, (unsigned long long)v,
				(unsigned long long)want[i]);
		}
	}
}

/* The signalfd's mask as the kernel shows it in fdinfo. */
static unsigned long long signalfd_mask(int fd)
{
	char path[64], text[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return 0;
	ssize_t n = read(f, text, sizeof(text) - 1);
	close(f);
	text[n < 0 ? 0 : n] = 0;
	char *m = strstr(text, "sigmask:");
	return m ? strtoull(m + 8, NULL, 16) : 0;
}

static void check_inotify(struct zt *z, int in, const char *name)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(in, buf, sizeof(buf));
	if (n < (ssize_t)sizeof(struct inotify_event)) {
		zt_fail(z, "inotify (fd %d): no event for '%s' (%s)", in, name, n < 0 ? strerror(errno) : "short");
		return;
	}
	const struct inotify_event *e = (const void *)buf;
	if (!(e->mask & IN_CREATE) || e->len == 0 || strcmp(e->name, name))
		zt_fail(z, "inotify (fd %d): event mask 0x%x name '%s', expected IN_CREATE '%s'", in, e->mask,
			e->len ? e->name : "", name);
	if (n > (ssize_t)(sizeof(*e) + e->len))
		zt_fail(z, "inotify (fd %d): more than the one event for '%s' was queued", in, name);
}

static void touch(struct zt *z, const char *dir, const char *name)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		zt_setup_failed(z, "snprintf", dir);
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
	else
		zt_fail_sys(z, "open", path);
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "watch-dev", 0, 0, 1, "watch /dev/godwit-watched instead of DIR/watched" } };
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);

	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), sem = eventfd(SEM_COUNT, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	uint64_t add_count = EFD_COUNT;
	if (efd < 0 || sem < 0 || write(efd, &add_count, sizeof(add_count)) != sizeof(add_count))
		zt_setup_failed(&z, "eventfd", "eventfds");
	int p[2], q[2], sk[2];
	if (pipe2(p, O_CLOEXEC) < 0 || pipe2(q, O_CLOEXEC) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk) < 0)
		zt_setup_failed(&z, "pipe2/socketpair", "epoll targets");
	if (write(p[1], "0123456789", 10) != 10 || write(sk[0], "sock", 4) != 4)
		zt_setup_failed(&z, "write", "epoll targets");

	const int RT3 = SIGRTMIN + 3;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, RT3);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		zt_setup_failed(&z, "sigprocmask", "signalfd signals");
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		zt_setup_failed(&z, "signalfd", "signalfd");
	if (kill(getpid(), SIGUSR1) < 0 || sigqueue(getpid(), RT3, (union sigval){ .sival_int = RT_VALUE }) < 0)
		zt_setup_failed(&z, "kill/sigqueue", "signalfd signals");
	unsigned long long want_mask = (1ull << (SIGUSR1 - 1)) | (1ull << (RT3 - 1));

	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		zt_setup_failed(&z, "epoll_create1", "epoll");
	add(&z, ep, efd, EPOLLIN, D_EFD);
	add(&z, ep, p[0], EPOLLIN | EPOLLET, D_PIPE);
	add(&z, ep, sk[1], EPOLLIN | EPOLLOUT, D_SOCK);
	add(&z, ep, q[0], EPOLLIN, D_EMPTY);
	add(&z, ep, sem, EPOLLIN | EPOLLONESHOT, D_SEM);
	add(&z, ep, sfd, EPOLLIN, D_SFD);

	char watched[PATH_MAX];
	if (opts[0].value)
		snprintf(watched, sizeof(watched), "/dev/godwit-watched");
	else
		zt_path(&z, watched, sizeof(watched), "watched");
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0 || mkdir(watched, 0755) < 0 || inotify_add_watch(in, watched, IN_CREATE | IN_DELETE) < 0)
		zt_setup_failed(&z, "inotify", watched);
	touch(&z, watched, "first");
	check_inotify(&z, in, "first");

	zt_info(&z, "eventfd", "%d", efd);
	zt_info(&z, "epoll", "%d", ep);
	zt_info(&z, "signalfd", "%d", sfd);
	zt_info(&z, "rt3", "%d", RT3);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);
	zt_wait_sleeping(&z);

	const struct want_event first[] = { { D_EFD, EPOLLIN }, { D_PIPE, EPOLLIN }, { D_SOCK, EPOLLIN | EPOLLOUT },
					    { D_SEM, EPOLLIN }, { D_SFD, EPOLLIN } };
	const struct want_event again[] = { { D_EFD, EPOLLIN }, { D_SOCK, EPOLLIN | EPOLLOUT }, { D_SFD, EPOLLIN } };
	check_ready(&z, ep, "first wait", first, 5);
	check_ready(&z, ep, "second wait", again, 3);
	check_count(&z, "eventfd", efd, (const uint64_t[]){ EFD_COUNT }, 1);
	check_count(&z, "semaphore eventfd", sem, (const uint64_t[]){ 1, 1, 1 }, SEM_COUNT);
	char buf[16];
	if (read(p[0], buf, sizeof(buf)) != 10 || memcmp(buf, "0123456789", 10))
		zt_fail(&z, "pipe (fd %d): the 10 queued bytes are not there", p[0]);
	if (recv(sk[1], buf, sizeof(buf), MSG_DONTWAIT) != 4 || memcmp(buf, "sock", 4))
		zt_fail(&z, "socket (fd %d): the 4 queued bytes are not there", sk[1]);

	unsigned long long got_mask = signalfd_mask(sfd);
	if (got_mask != want_mask)
		zt_fail(&z, "signalfd (fd %d) mask is %llx, expected %llx", sfd, got_mask, want_mask);
	struct signalfd_siginfo si[3];
	ssize_t n = read(sfd, si, sizeof(si));
	int nsig = n < 0 ? 0 : (int)(n / (ssize_t)sizeof(si[0]));
	if (nsig != 2)
		zt_fail(&z, "signalfd (fd %d) gave %d signals, expected 2 (SIGUSR1, SIGRTMIN+3)", sfd, nsig);
	else if (si[0].ssi_signo != SIGUSR1 || (int)si[1].ssi_signo != RT3 || si[1].ssi_int != RT_VALUE ||
		 si[1].ssi_code != SI_QUEUE || (pid_t)si[1].ssi_pid != self)
		zt_fail(&z, "signalfd (fd %d) gave signal %u then %u value %d code %d pid %u, expected %d then %d value %d",
			sfd, si[0].ssi_signo, si[1].ssi_signo, si[1].ssi_int, si[1].ssi_code, si[1].ssi_pid, SIGUSR1, RT3,
			RT_VALUE);

	touch(&z, watched, "second");
	check_inotify(&z, in, "second");
	return zt_finish(&z);
}
