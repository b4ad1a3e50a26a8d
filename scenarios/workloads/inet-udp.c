/*
 * inet-udp: UDP sockets and sockets that were never bound.
 *   - a UDP "server" bound to 127.0.0.1 (SO_REUSEADDR, SO_BROADCAST) and one bound to [::1] (IPV6_V6ONLY);
 *   - for each, a UDP client bound to the same loopback address and connected to its server;
 *   - a TCP socket and a UDP socket that were created but never bound, the TCP one with TCP_NODELAY and
 *     SO_KEEPALIVE plus TCP_KEEPIDLE 77.
 * With --lite 1 the servers and clients are UDP-Lite sockets (IPPROTO_UDPLITE, zdtm socket_udplite).
 * Verify: every socket has its port, peer, protocol and options as before; each client sends a numbered datagram its
 * server receives from the client's own address, and the server's reply reaches the client through its
 * connected socket; the never-bound sockets can still be bound and used (the TCP one listens and accepts).
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define KEEPIDLE 77
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif

static struct zt_opt opts[] = {
	{ "lite", 0, 0, 1, "1: the bound and connected pairs are UDP-Lite" },
};
static int proto;	/* of the pairs: 0 (UDP) or IPPROTO_UDPLITE */

struct pair {
	const char *what;
	int family;
	int server, client;
	struct sockaddr_storage server_addr, client_addr;
	socklen_t len;
};

static socklen_t loopback(int family, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof(*a);
}

static int udp_bound(struct zt *z, int family, struct sockaddr_storage *addr, const char *what)
{
	int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, proto);
	if (s < 0)
		zt_setup_failed(z, "socket", what);
	int one = 1;
	if (family == AF_INET6 && setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
		zt_setup_failed(z, "setsockopt(IPV6_V6ONLY)", what);
	socklen_t l = loopback(family, addr);
	if (bind(s, (struct sockaddr *)addr, l))
		zt_setup_failed(z, "bind", what);
	l = sizeof(*addr);
	if (getsockname(s, (struct sockaddr *)addr, &l))
		zt_setup_failed(z, "getsockname", what);
	return s;
}

static void make_pair(struct zt *z, struct pair *p, int family, const char *what)
{
	p->what = what;
	p->family = family;
	p->len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	p->server = udp_bound(z, family, &p->server_addr, what);
	int one = 1;
	if (family == AF_INET && (setsockopt(p->server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
				  setsockopt(p->server, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one))))
		zt_setup_failed(z, "setsockopt", what);
	p->client = udp_bound(z, family, &p->client_addr, what);
	if (connect(p->client, (struct sockaddr *)&p->server_addr, p->len))
		zt_setup_failed(z, "connect", what);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b, socklen_t len)
{
	return memcmp(a, b, len) == 0;
}

static int get_int(int s, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(s, level, opt, &v, &l);
	return v;
}

static void check_pair(struct zt *z, struct pair *p, uint64_t n)
{
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);
	int pr = -1;
	if (getsockopt(p->client, SOL_SOCKET, SO_PROTOCOL, &pr, &l) || pr != (proto ? proto : IPPROTO_UDP))
		zt_fail(z, "%s: client is of protocol %d", p->what, pr);
	l = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(p->server, (struct sockaddr *)&a, &l) || !same_addr(&a, &p->server_addr, p->len))
		zt_fail(z, "%s: server is not bound where it was", p->what);
	l = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(p->client, (struct sockaddr *)&a, &l) || !same_addr(&a, &p->client_addr, p->len))
		zt_fail(z, "%s: client is not bound where it was", p->what);
	l = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getpeername(p->client, (struct sockaddr *)&a, &l) || !same_addr(&a, &p->server_addr, p->len))
		zt_fail(z, "%s: client is not connected to its server", p->what);
	if (p->family == AF_INET && (get_int(p->server, SOL_SOCKET, SO_REUSEADDR) != 1 || get_int(p->server, SOL_SOCKET, SO_BROADCAST) != 1))
		zt_fail(z, "%s: server lost SO_REUSEADDR or SO_BROADCAST", p->what);
	if (p->family == AF_INET6 && get_int(p->server, IPPROTO_IPV6, IPV6_V6ONLY) != 1)
		zt_fail(z, "%s: server lost IPV6_V6ONLY", p->what);
	if (send(p->client, &n, sizeof(n), 0) != sizeof(n)) {
		zt_fail_sys(z, "send", p->what);
		return;
	}
	struct pollfd pf = { p->server, POLLIN, 0 };
	if (poll(&pf, 1, 5000) != 1) {
		zt_fail(z, "%s: the server received nothing", p->what);
		return;
	}
	uint64_t got = 0;
	l = sizeof(a);
	if (recvfrom(p->server, &got, sizeof(got), MSG_DONTWAIT, (struct sockaddr *)&a, &l) != sizeof(got) || got != n)
		zt_fail(z, "%s: the server received something else than datagram %llu", p->what, (unsigned long long)n);
	else if (!same_addr(&a, &p->client_addr, p->len))
		zt_fail(z, "%s: the datagram came from another address than the client's", p->what);
	got = n + 1;
	if (sendto(p->server, &got, sizeof(got), 0, (struct sockaddr *)&p->client_addr, p->len) != sizeof(got)) {
		zt_fail_sys(z, "sendto", p->what);
		return;
	}
	pf.fd = p->client;
	if (poll(&pf, 1, 5000) != 1 || recv(p->client, &got, sizeof(got), MSG_DONTWAIT) != sizeof(got) || got != n + 1)
		zt_fail(z, "%s: the client did not get the reply", p->what);
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	proto = opts[0].value ? IPPROTO_UDPLITE : 0;
	struct pair v4, v6;
	make_pair(&z, &v4, AF_INET, "udp 127.0.0.1");
	make_pair(&z, &v6, AF_INET6, "udp [::1]");
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int udp = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int one = 1, idle = KEEPIDLE;
	if (tcp < 0 || udp < 0 || setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    setsockopt(tcp, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ||
	    setsockopt(tcp, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)))
		zt_setup_failed(&z, "socket/setsockopt", "never-bound sockets");
	zt_info(&z, "udp4-server-fd", "%d", v4.server);
	zt_info(&z, "tcp-unbound-fd", "%d", tcp);
	pid_t self = getpid();
	zt_ready(&z, &self, 1);

	zt_wait_sleeping(&z);
	/* DIR/go may have ended the wait before the verify signal came: blocked, it cannot cut a poll short. */
	sigset_t verify;
	sigemptyset(&verify);
	sigaddset(&verify, SIGUSR2);
	sigprocmask(SIG_BLOCK, &verify, NULL);
	check_pair(&z, &v4, 1000);
	check_pair(&z, &v6, 2000);
	if (get_int(tcp, SOL_SOCKET, SO_TYPE) != SOCK_STREAM || get_int(tcp, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP ||
	    get_int(tcp, SOL_SOCKET, SO_DOMAIN) != AF_INET)
		zt_fail(&z, "never-bound tcp socket: not an IPv4 TCP socket any more");
	if (get_int(tcp, IPPROTO_TCP, TCP_NODELAY) != 1 || get_int(tcp, SOL_SOCKET, SO_KEEPALIVE) != 1 ||
	    get_int(tcp, IPPROTO_TCP, TCP_KEEPIDLE) != KEEPIDLE)
		zt_fail(&z, "never-bound tcp socket: lost TCP_NODELAY, SO_KEEPALIVE or TCP_KEEPIDLE");
	if (get_int(udp, SOL_SOCKET, SO_TYPE) != SOCK_DGRAM || get_int(udp, SOL_SOCKET, SO_DOMAIN) != AF_INET6)
		zt_fail(&z, "never-bound udp socket: not an IPv6 UDP socket any more");
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);
	struct sockaddr_in *in = (struct sockaddr_in *)&a;
	if (getsockname(tcp, (struct sockaddr *)&a, &l) || in->sin_port != 0)
		zt_fail(&z, "never-bound tcp socket: it is bound now");
	l = loopback(AF_INET, &a);
	if (bind(tcp, (struct sockaddr *)&a, l) || listen(tcp, 1))
		zt_fail_sys(&z, "bind/listen", "never-bound tcp socket");
	l = loopback(AF_INET6, &a);
	if (bind(udp, (struct sockaddr *)&a, l))
		zt_fail_sys(&z, "bind", "never-bound udp socket");
	return zt_finish(&z);
}
