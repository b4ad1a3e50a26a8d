/*
 * inet-peer: a TCP client alone in the tree, talking to an echo server outside it (another process in the same
 * network namespace: the inet-tcp workload echoes whatever arrives on connections other than its own client's).
 *   - connects to 127.0.0.1:--port and sends message n (1..4096 bytes of the random stream of seed n), reads the
 *     echo back and compares it byte for byte, round after round, paced.
 * Verify: EXTRA more round trips (the connection to the peer still works after a restore), then the checks: every
 * echo equal, at least EXTRA round trips, no reset or EOF on the way.
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXTRA 5
#define MAX_MSG 4096
#define PACE_NS 2000000ull

static struct zt_opt opts[] = {
	{ "port", 0, 1, 65535, "TCP port of the echo server on 127.0.0.1 (required)" },
};

static size_t msg_len(uint64_t n)
{
	return 1 + (size_t)((n * 7919u) % MAX_MSG);
}

/* One round trip; 0 ok, -1 with a failure recorded. EINTR (the verify signal) does not cut a message short. */
static int round_trip(struct zt *z, int s, uint64_t n)
{
	static char out[MAX_MSG], in[MAX_MSG];
	size_t len = msg_len(n);
	zt_fill_random(out, len, n);
	for (size_t put = 0; put < len;) {
		ssize_t r = write(s, out + put, len - put);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return zt_fail_sys(z, "write", "message to the peer"), -1;
		put += (size_t)r;
	}
	for (size_t got = 0; got < len;) {
		ssize_t r = read(s, in + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0) {
			zt_fail(z, "the peer closed the connection during echo %llu", (unsigned long long)n);
			return -1;
		}
		if (r < 0)
			return zt_fail_sys(z, "read", "echo from the peer"), -1;
		got += (size_t)r;
	}
	size_t bad = zt_check_random(in, len, n);
	if (bad != (size_t)-1) {
		zt_fail(z, "byte %zu of echo %llu differs", bad, (unsigned long long)n);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), SIGUSR2);
	if (!opts[0].value) {
		fprintf(stderr, "inet-peer: --port is required\n");
		return ZT_EXIT_USAGE;
	}
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opts[0].value) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		zt_setup_failed(&z, "socket", "client");
	if (connect(s, (struct sockaddr *)&a, sizeof(a)))
		zt_setup_failed(&z, "connect", "the echo server");
	uint64_t n = 0;
	if (round_trip(&z, s, n++))
		zt_setup_failed(&z, "round trip", "first echo");
	pid_t self = getpid();
	zt_ready(&z, &self, 1);

	uint64_t stop_at = 0;
	for (;;) {
		if (!stop_at && zt_requested(&z))
			stop_at = n + EXTRA;
		if (stop_at && n >= stop_at)
			break;
		if (round_trip(&z, s, n))
			break;
		n++;
		if (!stop_at)
			zt_sleep_ns(PACE_NS);
	}
	if (n < EXTRA)
		zt_fail(&z, "only %llu round trips", (unsigned long long)n);
	close(s);
	return zt_finish(&z);
}
