/*
 * pty: a pseudo-terminal pair inside the tree (CRIU's zdtm pty00-04, tty03 cases): main holds the master, with
 * its own settings; child S starts a new session with the slave as its controlling terminal and a foreground
 * process group of its grandchild G; S talks over the terminal.
 *   - termios: raw-ish flags, special characters, speeds; window size 33x111 (and pixels); packet mode off;
 *   - S: session leader, controlling terminal /dev/pts/N, foreground group = G's group; fds 0-2 on the slave;
 *   - G: in its own process group in S's session, the foreground one, blocked reading the terminal.
 * Verify: main checks the pty index and name, termios and window size through its own slave fd, then sends
 * "ping" through the master; G answers "pong <in S's session> <terminal's session> <foreground> <ttyname>" and
 * exits, then S.
 * --ctty 1: G opens /dev/tty before the checkpoint and answers through it (CRIU's zdtm pty00).
 * --hung-up 1: main also holds the slave of a pair whose master it closed (CRIU's zdtm pty04). Verify: the slave
 *   is still hung up (reads end of file, ioctls fail with EIO).
 * --queued 1: main also holds a second pair with default (canonical, echoing) settings and bytes queued both ways
 * (CRIU's zdtm pty00/pty02): two lines written on the master for the slave, their echo and a line written on the
 * slave for the master. Verify: the slave reads the lines one by one, the master the echo and the line, nothing
 * else is left and the settings are as they were. --queued 2: the same with that master in packet mode (each read
 * starts with a status byte, TIOCPKT_DATA).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define ROWS 33
#define COLS 111
#define XPIX 640
#define YPIX 480

static void set_termios(struct zt *z, int fd)
{
	struct termios t;
	if (tcgetattr(fd, &t))
		zt_setup_failed(z, "tcgetattr", "slave");
	cfmakeraw(&t);		/* no echo, no line discipline processing: every byte is the peer's */
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	t.c_cc[VINTR] = 7;	/* unusual values the check can recognise */
	t.c_cc[VEOF] = 9;
	cfsetispeed(&t, B9600);
	cfsetospeed(&t, B9600);
	if (tcsetattr(fd, TCSANOW, &t))
		zt_setup_failed(z, "tcsetattr", "slave");
}

static void check_termios(struct zt *z, int fd)
{
	struct termios t;
	if (tcgetattr(fd, &t)) {
		zt_fail_sys(z, "tcgetattr", "slave");
		return;
	}
	if (t.c_lflag & (ECHO | ICANON))
		zt_fail(z, "termios: lflag 0%o has ECHO/ICANON again (raw mode lost)", t.c_lflag);
	if (t.c_cc[VINTR] != 7 || t.c_cc[VEOF] != 9 || t.c_cc[VMIN] != 1)
		zt_fail(z, "termios: special characters %d %d %d, expected 7 9 1", t.c_cc[VINTR], t.c_cc[VEOF], t.c_cc[VMIN]);
	if (cfgetispeed(&t) != B9600 || cfgetospeed(&t) != B9600)
		zt_fail(z, "termios: speeds %o/%o, expected B9600", cfgetispeed(&t), cfgetospeed(&t));
	struct winsize ws;
	if (ioctl(fd, TIOCGWINSZ, &ws) || ws.ws_row != ROWS || ws.ws_col != COLS || ws.ws_xpixel != XPIX || ws.ws_ypixel != YPIX)
		zt_fail(z, "window size %ux%u (%ux%u px), expected %ux%u (%ux%u)", ws.ws_row, ws.ws_col, ws.ws_xpixel,
			ws.ws_ypixel, ROWS, COLS, XPIX, YPIX);
}

/* Reads until '\n' or timeout; returns the length or -1. */
static ssize_t read_line(int fd, char *buf, size_t len, int ms)
{
	size_t n = 0;
	while (n + 1 < len) {
		struct pollfd p = { fd, POLLIN, 0 };
		int r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue; /* a poll() caught by a checkpoint returns EINTR (its restart data is not carried) */
		if (r != 1)
			return -1;
		ssize_t got = read(fd, buf + n, 1);
		if (got != 1)
			return -1;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = 0;
	return (ssize_t)n;
}

static int use_ctty;

__attribute__((noreturn)) static void session_child(const char *slave_name, int master)
{
	close(master);
	if (setsid() < 0)
		exit(3);
	int s = open(slave_name, O_RDWR); /* a session leader opening a terminal gets it as its controlling one */
	if (s < 0 || dup2(s, 0) < 0 || dup2(s, 1) < 0 || dup2(s, 2) < 0)
		exit(3);
	if (s > 2)
		close(s);
	pid_t g = fork();
	if (g < 0)
		exit(3);
	if (g == 0) {
		setpgid(0, 0);
		/* G, the foreground group, waits for "ping" from main's master (a blocking terminal read across the
		 * checkpoint) and answers with what it sees of its session and terminal. */
		char line[64];
		int out = use_ctty ? open("/dev/tty", O_RDWR) : 1;
		if (out < 0)
			exit(8);
		while (tcgetpgrp(0) != getpgrp())
			zt_sleep_ns(1000000);
		if (read_line(0, line, sizeof(line), -1) < 0 || strcmp(line, "ping\n"))
			exit(4);
		char reply[256];
		const char *tn = ttyname(0);
		int n = snprintf(reply, sizeof(reply), "pong %d %d %d %s\n", getsid(0) == getppid(), tcgetsid(0) == getsid(0),
				 tcgetpgrp(0) == getpgrp(), tn ? tn : "-");
		exit(write(out, reply, (size_t)n) == n ? 0 : 5);
	}
	setpgid(g, g);
	if (tcsetpgrp(0, g))
		exit(3);
	int st;
	if (waitpid(g, &st, 0) != g)
		exit(6);
	exit(WIFEXITED(st) ? WEXITSTATUS(st) : 7);
}

struct queued {
	int m, s;
};

static struct queued queue_bytes(struct zt *z, int packet)
{
	struct queued q;
	char name[64];
	q.m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (q.m < 0 || grantpt(q.m) || unlockpt(q.m) || ptsname_r(q.m, name, sizeof(name)))
		zt_setup_failed(z, "posix_openpt", "second master");
	q.s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (q.s < 0)
		zt_setup_failed(z, "open", name);
	if (packet && ioctl(q.m, TIOCPKT, &packet))
		zt_setup_failed(z, "ioctl(TIOCPKT)", "second master");
	if (write(q.m, "one\ntwo\n", 8) != 8)
		zt_setup_failed(z, "write", "queued bytes for the slave");
	/* The echo comes back to the master from a kernel work item: wait for it, so "back" comes after it. */
	int n = 0;
	for (int i = 0; i < 5000 && n < 10; i++) {
		struct pollfd p = { q.m, POLLIN, 0 };
		poll(&p, 1, 1);
		if (ioctl(q.m, FIONREAD, &n))
			zt_setup_failed(z, "ioctl(FIONREAD)", "second master");
	}
	if (write(q.s, "back\n", 5) != 5)
		zt_setup_failed(z, "write", "queued bytes for the master");
	return q;
}

static void expect_read(struct zt *z, int fd, const char *what, const char *want)
{
	char got[64];
	ssize_t n = read(fd, got, sizeof(got) - 1);
	got[n > 0 ? n : 0] = 0;
	if (n < 0 || strcmp(got, want))
		zt_fail(z, "%s read %zd bytes '%s', expected '%s'", what, n, got, want);
}

static void check_queued(struct zt *z, struct queued q, int packet)
{
	struct termios t;
	if (tcgetattr(q.s, &t) || !(t.c_lflag & ICANON) || !(t.c_lflag & ECHO) || !(t.c_iflag & ICRNL) || !(t.c_oflag & ONLCR))
		zt_fail(z, "second pair: termios lflag 0%o iflag 0%o oflag 0%o, expected the defaults back", t.c_lflag, t.c_iflag,
			t.c_oflag);
	fcntl(q.s, F_SETFL, O_NONBLOCK);
	fcntl(q.m, F_SETFL, O_NONBLOCK);
	/* Canonical mode: one line per read. */
	expect_read(z, q.s, "second slave", "one\n");
	expect_read(z, q.s, "second slave", "two\n");
	if (packet) {
		char got[64];
		ssize_t n = read(q.m, got, sizeof(got) - 1);
		if (n != 17 || got[0] != TIOCPKT_DATA || memcmp(got + 1, "one\r\ntwo\r\nback\r\n", 16))
			zt_fail(z, "second master (packet mode): read %zd bytes, expected a status byte and 16 bytes of data", n);
	} else
		expect_read(z, q.m, "second master", "one\r\ntwo\r\nback\r\n");
	char c;
	if (read(q.s, &c, 1) != -1 || read(q.m, &c, 1) != -1)
		zt_fail(z, "second pair: bytes left after the queued ones");
}

static int hung_up_slave(struct zt *z)
{
	char name[64];
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0 || grantpt(m) || unlockpt(m) || ptsname_r(m, name, sizeof(name)))
		zt_setup_failed(z, "posix_openpt", "third master");
	int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s < 0)
		zt_setup_failed(z, "open", name);
	close(m);
	return s;
}

static void check_hung_up(struct zt *z, int s)
{
	char c;
	struct termios t;
	ssize_t n = read(s, &c, 1);
	if (n != 0)
		zt_fail(z, "hung-up slave: read gave %zd, expected end of file", n);
	if (tcgetattr(s, &t) == 0 || errno != EIO)
		zt_fail(z, "hung-up slave: tcgetattr did not fail with EIO (errno %d)", errno);
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "queued", 0, 0, 2, "1: a second pair with bytes queued both ways; 2: its master in packet mode" },
				 { "ctty", 0, 0, 1, "1: the foreground child answers through /dev/tty" },
				 { "hung-up", 0, 0, 1, "1: the slave of a pair whose master was closed" } };
	zt_setup(&z, argc, argv, opts, 3, SIGUSR2);
	int hung = opts[2].value ? hung_up_slave(&z) : -1;
	use_ctty = (int)opts[1].value;
	struct queued q = { -1, -1 };
	if (opts[0].value)
		q = queue_bytes(&z, opts[0].value == 2);
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0 || grantpt(m) || unlockpt(m))
		zt_setup_failed(&z, "posix_openpt", "master");
	char name[64];
	if (ptsname_r(m, name, sizeof(name)))
		zt_setup_failed(&z, "ptsname_r", "master");
	int mine = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (mine < 0)
		zt_setup_failed(&z, "open", name);
	set_termios(&z, mine);
	struct winsize ws = { ROWS, COLS, XPIX, YPIX };
	if (ioctl(m, TIOCSWINSZ, &ws))
		zt_setup_failed(&z, "ioctl(TIOCSWINSZ)", "master");

	pid_t s = fork();
	if (s < 0)
		zt_setup_failed(&z, "fork", "session child");
	if (s == 0)
		session_child(name, m);
	/* Wait until S made G the foreground group (then S blocks in read). */
	uint64_t deadline = zt_now_ns() + 5000000000ull;
	pid_t g = 0;
	/* The master answers for its slave (tcgetpgrp on the slave needs it to be our controlling terminal). */
	while (ioctl(m, TIOCGPGRP, &g) || g <= 0 || g == s) {
		if (zt_now_ns() > deadline) {
			errno = ETIMEDOUT;
			zt_setup_failed(&z, "tcgetpgrp", "session child's foreground group");
		}
		zt_sleep_ns(1000000);
	}
	zt_info(&z, "pty", "%s %d %d", name, m, mine);
	pid_t pids[] = { getpid(), s, g };
	zt_ready(&z, pids, 3);
	zt_wait_sleeping(&z);

	char now[64];
	if (ptsname_r(m, now, sizeof(now)) || strcmp(now, name))
		zt_fail(&z, "the master's slave is now '%s', was '%s'", now, name);
	check_termios(&z, mine);
	if (opts[0].value)
		check_queued(&z, q, opts[0].value == 2);
	if (hung >= 0)
		check_hung_up(&z, hung);
	if (write(m, "ping\n", 5) != 5)
		zt_fail_sys(&z, "write", "ping to the master");
	char line[256], want[256];
	snprintf(want, sizeof(want), "pong 1 1 1 %s\n", name);
	if (read_line(m, line, sizeof(line), 5000) < 0)
		zt_fail(&z, "no answer from the session child through the terminal");
	else if (strcmp(line, want))
		zt_fail(&z, "session child answered '%.*s', expected '%.*s' (session, controlling terminal, foreground group, name)",
			(int)strcspn(line, "\n"), line, (int)strcspn(want, "\n"), want);
	int st;
	if (waitpid(s, &st, 0) != s || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		zt_fail(&z, "session child ended with status 0x%x", st);
	return zt_finish(&z);
}
