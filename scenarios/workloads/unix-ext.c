/*
 * unix-ext: a unix socket connected to a socket outside the dumped tree, as a syslog client's to /dev/log.
 * Two roles, tied by --key N, which names the receiver's socket /tmp/godwit-unix-ext-N.sock (abstract:
 * @godwit-unix-ext-N; an autobind name is written to /tmp/godwit-unix-ext-N.name for the client):
 *   --receiver 1: the peer, run outside the tree by the test. It binds (--peer: 0 a path, 1 an abstract name,
 *     2 autobind, 3 a stream listener at the path) and counts what arrives. With --queued 1 it answers the
 *     first datagram with "hello" to the sender's address. Verify: a "verify" datagram arrived.
 *   otherwise the client (the dumped tree): connects a socket to the receiver and sends a datagram every 50 ms.
 *     With --queued 1 it binds to DIR/client.sock first and waits until the receiver's "hello" is queued, which
 *     it leaves unread. Verify: its peer is still the receiver's name, no send failed, the queued "hello" reads
 *     back, and a "verify" datagram goes through (the receiver, whichever holds the name now, checks it).
 * Without --key the client is its own receiver (a socket bound at DIR/recv.sock, in the tree): the workload
 * checks itself alone, as every workload can.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { PEER_PATH, PEER_ABSTRACT, PEER_AUTOBIND, PEER_STREAM };

static struct zt_opt opts[] = {
	{ "key", 0, 0, 1000000000, "names the receiver's socket (both roles; 0: the client is its own receiver)" },
	{ "receiver", 0, 0, 1, "1: be the receiver, outside the dumped tree" },
	{ "peer", PEER_PATH, PEER_PATH, PEER_STREAM, "receiver's socket: 0 path, 1 abstract, 2 autobind, 3 stream listener" },
	{ "queued", 0, 0, 1, "1: a datagram from the receiver waits in the client's queue" },
	{ "same-name", 1, 0, 1, "0: the receiver may be another socket bound elsewhere, mounted at the name (a migration's target)" },
};

static struct zt z;

static socklen_t addr_of(struct sockaddr_un *a, const char *name, size_t len, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (len + 2 > sizeof(a->sun_path))
		zt_setup_failed(&z, "addr_of", "socket name longer than sun_path");
	memcpy(a->sun_path + (abstract ? 1 : 0), name, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

/* The receiver's address as the client connects to it (an autobind name read from the file the receiver wrote). */
static socklen_t peer_addr(struct sockaddr_un *a, long long key, int peer)
{
	char name[128];
	snprintf(name, sizeof(name), peer == PEER_ABSTRACT ? "godwit-unix-ext-%lld" : "/tmp/godwit-unix-ext-%lld.sock", key);
	if (peer != PEER_AUTOBIND)
		return addr_of(a, name, strlen(name), peer == PEER_ABSTRACT);
	char file[128], got[16] = "";
	snprintf(file, sizeof(file), "/tmp/godwit-unix-ext-%lld.name", key);
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, got, sizeof(got) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		zt_setup_failed(&z, "read", file);
	return addr_of(a, got, (size_t)n, 1);
}

static int receiver(long long key, int peer, int queued)
{
	struct sockaddr_un a;
	socklen_t alen = peer_addr(&a, key, peer == PEER_AUTOBIND ? PEER_PATH : peer);
	if (peer == PEER_PATH || peer == PEER_STREAM)
		unlink(a.sun_path);
	int s = socket(AF_UNIX, (peer == PEER_STREAM ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
	if (s < 0)
		zt_setup_failed(&z, "socket", "receiver");
	if (peer == PEER_AUTOBIND) {
		/* bind() with no name: the kernel picks one */
		if (bind(s, (struct sockaddr *)&a, sizeof(sa_family_t)) < 0)
			zt_setup_failed(&z, "bind", "receiver (autobind)");
		struct sockaddr_un got;
		socklen_t glen = sizeof(got);
		char file[128];
		snprintf(file, sizeof(file), "/tmp/godwit-unix-ext-%lld.name", key);
		int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (getsockname(s, (struct sockaddr *)&got, &glen) < 0 || fd < 0 ||
		    write(fd, got.sun_path + 1, glen - offsetof(struct sockaddr_un, sun_path) - 1) < 0)
			zt_setup_failed(&z, "getsockname/write", file);
		close(fd);
	} else if (bind(s, (struct sockaddr *)&a, alen) < 0) {
		zt_setup_failed(&z, "bind", "receiver");
	}
	if (peer == PEER_STREAM && listen(s, 8) < 0)
		zt_setup_failed(&z, "listen", "receiver");
	pid_t self = getpid();
	zt_ready(&z, &self, 1);

	unsigned long count = 0;
	bool verified = false, answered = false;
	int conns[8], nconns = 0;
	uint64_t deadline = 0;
	while (!verified) {
		if (zt_requested(&z) && !deadline)
			deadline = zt_now_ns() + 3000000000ull; /* the client's "verify" may still be on its way */
		if (deadline && zt_now_ns() > deadline)
			break;
		struct pollfd p = { s, POLLIN, 0 };
		if (poll(&p, 1, 100) != 1)
			continue;
		if (peer == PEER_STREAM) {
			int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0 && nconns < 8)
				conns[nconns++] = c; /* kept open: the client's connection stays */
			continue;
		}
		char buf[64];
		struct sockaddr_un from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(s, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
		if (n < 0)
			continue;
		buf[n] = 0;
		count++;
		if (!strcmp(buf, "verify"))
			verified = true;
		if (queued && !answered && flen > offsetof(struct sockaddr_un, sun_path)) {
			answered = sendto(s, "hello", 5, MSG_DONTWAIT, (struct sockaddr *)&from, flen) == 5;
		}
	}
	(void)conns;
	if (!verified)
		zt_fail(&z, "receiver: %lu datagram(s) arrived, no \"verify\" among them", count);
	return zt_finish(&z);
}

int main(int argc, char **argv)
{
	zt_setup(&z, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), SIGUSR2);
	long long key = opts[0].value;
	int peer = (int)opts[2].value, queued = (int)opts[3].value;
	if (opts[1].value && !key) {
		fprintf(stderr, "unix-ext: a receiver needs --key\n");
		return ZT_EXIT_USAGE;
	}
	if (opts[1].value)
		return receiver(key, peer, queued);

	struct sockaddr_un a, me;
	socklen_t alen;
	int own = -1;
	if (key) {
		alen = peer_addr(&a, key, peer);
	} else {
		char path[PATH_MAX];
		zt_path(&z, path, sizeof(path), "recv.sock");
		alen = addr_of(&a, path, strlen(path), 0);
		own = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (own < 0 || bind(own, (struct sockaddr *)&a, alen) < 0)
			zt_setup_failed(&z, "socket/bind", "the client's own receiver");
		peer = PEER_PATH;
		queued = 0;
	}
	int s = socket(AF_UNIX, (peer == PEER_STREAM ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
	if (s < 0)
		zt_setup_failed(&z, "socket", "client");
	if (queued) {
		char path[PATH_MAX];
		zt_path(&z, path, sizeof(path), "client.sock");
		socklen_t mlen = addr_of(&me, path, strlen(path), 0);
		if (bind(s, (struct sockaddr *)&me, mlen) < 0)
			zt_setup_failed(&z, "bind", "client");
	}
	if (connect(s, (struct sockaddr *)&a, alen) < 0)
		zt_setup_failed(&z, "connect", "client to the receiver");
	if (queued) {
		/* the receiver answers the first datagram: wait until that answer is queued here */
		struct pollfd p = { s, POLLIN, 0 };
		if (send(s, "first", 5, 0) != 5 || poll(&p, 1, 5000) != 1)
			zt_setup_failed(&z, "send/poll", "client waiting for the receiver's answer");
	}
	pid_t self = getpid();
	zt_ready(&z, &self, 1);

	unsigned long sent = 0, failed = 0;
	int first_errno = 0;
	char msg[32];
	while (!zt_requested(&z)) {
		int n = snprintf(msg, sizeof(msg), "%lu", ++sent);
		if (send(s, msg, (size_t)n, MSG_DONTWAIT) != n && errno != EAGAIN && errno != EINTR) {
			failed++;
			if (!first_errno)
				first_errno = errno;
		}
		zt_sleep_ns(50000000);
		char drop[32];
		while (own >= 0 && recv(own, drop, sizeof(drop), MSG_DONTWAIT) > 0)
			; /* its own receiver keeps room for the "verify" datagram */
	}
	if (failed)
		zt_fail(&z, "%lu of %lu sends failed, the first with %s", failed, sent, strerror(first_errno));
	struct sockaddr_un got;
	socklen_t glen = sizeof(got);
	if (getpeername(s, (struct sockaddr *)&got, &glen) < 0)
		zt_fail_sys(&z, "getpeername", "client");
	else if (opts[4].value && (glen != alen || memcmp(&got, &a, alen)))
		zt_fail(&z, "client: connected to another name than the receiver's (length %u, expected %u)", glen, alen);
	if (queued) {
		char buf[16] = "";
		ssize_t n = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT);
		if (n != 5 || memcmp(buf, "hello", 5))
			zt_fail(&z, "client: the receiver's queued \"hello\" did not read back (got %zd bytes: '%.*s')", n, n < 0 ? 0 : (int)n, buf);
	}
	if (send(s, "verify", 6, 0) != 6)
		zt_fail_sys(&z, "send", "client's \"verify\" datagram");
	/* its own receiver: the "verify" datagram is the last of what it holds */
	for (bool seen = false; own >= 0 && !seen;) {
		char buf[32];
		ssize_t n = recv(own, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			zt_fail(&z, "its own receiver: no \"verify\" datagram");
			break;
		}
		seen = n == 6 && !memcmp(buf, "verify", 6);
	}
	return zt_finish(&z);
}
