/*
 * pipe-tree: a process tree joined by pipes that hold unread data.
 *
 *   main ──a (1000 B)──▶ c1 ──b (3000 B)──▶ g (grandchild) ──e (4097 B)──▶ main
 *   c2 (own session) ──f (full, pipe resized to 16 KiB)──▶ main
 *   main ──DIR/fifo (777 B)──▶ c3 (own process group)
 *   z: a child that exited with status 42 and is left a zombie (not in the ready pids: it is not alive)
 *
 * Verify: main forwards the request down the tree; every process checks its pid, pgid and sid (and its ppid, but
 * main's parent is outside the tree), and each
 * reader reads exactly the bytes it expects from its pipes (no more, no less, same content); main reaps the zombie
 * and finds its status. Children report in
 * DIR/part-NAME; main merges them with what it waited for (a child killed by a signal is named).
 */
#include "zdtm.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SMALL_PIPE 16384	/* f is shrunk to this so that a full pipe is cheap and its size is checked */

enum { A_LEN = 1000, B_LEN = 3000, E_LEN = 4097, FIFO_LEN = 777 };
enum { SEED_A = 0xa, SEED_B = 0xb, SEED_E = 0xe, SEED_F = 0xf, SEED_FIFO = 0xf1f0 };

struct ident {
	pid_t pid, ppid, pgid, sid;
};

struct note {	/* a child's "I am ready" record on the setup pipe: small, so written atomically */
	char tag[4];
	pid_t pid;
};

struct tree {
	int a[2], b[2], e[2], f[2], sp[2];
	int fifo;
	pid_t main, c1, g, c2, c3, zombie;
};

#define ZOMBIE_STATUS 42

/* A child that exits at once; waited for with WNOWAIT so that it stays a zombie. */
static pid_t make_zombie(struct zt *z)
{
	pid_t pid = fork();
	if (pid < 0)
		zt_setup_failed(z, "fork", "zombie");
	if (pid == 0)
		_exit(ZOMBIE_STATUS);
	siginfo_t si;
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0)
		zt_setup_failed(z, "waitid", "zombie");
	return pid;
}

static void check_zombie(struct zt *z, pid_t pid)
{
	siginfo_t si = { 0 };
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG) < 0)
		zt_fail(z, "zombie (pid %d): waitid: %s", pid, strerror(errno));
	else if (si.si_pid != pid || si.si_code != CLD_EXITED || si.si_status != ZOMBIE_STATUS)
		zt_fail(z, "zombie (pid %d): waitid gave pid %d code %d status %d, expected an exit with status %d", pid,
			si.si_pid, si.si_code, si.si_status, ZOMBIE_STATUS);
}

static void record(struct ident *id)
{
	*id = (struct ident){ getpid(), getppid(), getpgid(0), getsid(0) };
}

/*
 * The root's parent is outside the dumped tree (the harness, then whoever restored it), so, as in CRIU's ZDTM,
 * its ppid is not part of the state: check_ident() is told whether to compare it.
 */
static void check_ident(struct zt *z, const char *name, const struct ident *want, bool parent_in_tree)
{
	struct ident now;
	record(&now);
	if (now.pid != want->pid)
		zt_fail(z, "%s: pid is %d, expected %d", name, now.pid, want->pid);
	if (parent_in_tree && now.ppid != want->ppid)
		zt_fail(z, "%s (pid %d): ppid is %d, expected %d", name, now.pid, now.ppid, want->ppid);
	if (now.pgid != want->pgid)
		zt_fail(z, "%s (pid %d): pgid is %d, expected %d", name, now.pid, now.pgid, want->pgid);
	if (now.sid != want->sid)
		zt_fail(z, "%s (pid %d): sid is %d, expected %d", name, now.pid, now.sid, want->sid);
}

static void write_all(struct zt *z, int fd, size_t len, uint64_t seed, const char *what)
{
	char *buf = malloc(len);
	if (!buf)
		zt_setup_failed(z, "malloc", what);
	zt_fill_random(buf, len, seed);
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			zt_setup_failed(z, "write", what);
		off += (size_t)n;
	}
	free(buf);
}

/* Reads what is there without blocking (and without changing the fd's flags) and compares. */
static void check_pipe(struct zt *z, const char *what, int fd, size_t want, uint64_t seed)
{
	size_t cap = want + 4096, got = 0;
	char *buf = malloc(cap);
	if (!buf) {
		zt_fail(z, "%s: malloc failed", what);
		return;
	}
	while (got < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			zt_fail_sys(z, "poll", what);
			break;
		}
		if (r == 0 || !(p.revents & POLLIN))
			break;
		ssize_t n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			zt_fail_sys(z, "read", what);
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got != want)
		zt_fail(z, "%s (fd %d, pid %d): %zu bytes were waiting, expected %zu", what, fd, getpid(), got, want);
	else if ((got = zt_check_random(buf, want, seed)) != (size_t)-1)
		zt_fail(z, "%s (fd %d, pid %d): byte %zu differs", what, fd, getpid(), got);
	free(buf);
}

static void notify(struct zt *z, int sp, const char *tag)
{
	struct note n = { .pid = getpid() };
	memcpy(n.tag, tag, strnlen(tag, 3) + 1);
	if (write(sp, &n, sizeof(n)) != sizeof(n))
		zt_setup_failed(z, "write", "setup pipe");
	close(sp);
}

static void close_all(int *fds[], size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(*fds[i]);
}

static void forward_request(pid_t child)
{
	kill(child, SIGUSR2);
}

__attribute__((noreturn)) static void run_g(struct zt *z, struct tree *t)
{
	struct ident id;
	record(&id);
	write_all(z, t->e[1], E_LEN, SEED_E, "pipe e");
	notify(z, t->sp[1], "g");
	zt_wait_sleeping(z);
	check_ident(z, "g", &id, true);
	check_pipe(z, "pipe b (c1 -> g)", t->b[0], B_LEN, SEED_B);
	exit(zt_finish_part(z, "g"));
}

__attribute__((noreturn)) static void run_c1(struct zt *z, struct tree *t)
{
	int *unused[] = { &t->a[1], &t->e[0], &t->f[0], &t->f[1], &t->sp[0] };
	close_all(unused, 5);
	t->g = fork();
	if (t->g < 0)
		zt_setup_failed(z, "fork", "grandchild g");
	if (t->g == 0) {
		int *not_g[] = { &t->a[0], &t->b[1] };
		close_all(not_g, 2);
		run_g(z, t);
	}
	int *not_c1[] = { &t->b[0], &t->e[1] };
	close_all(not_c1, 2);
	struct ident id;
	record(&id);
	write_all(z, t->b[1], B_LEN, SEED_B, "pipe b");
	notify(z, t->sp[1], "c1");
	zt_wait_sleeping(z);
	forward_request(t->g);
	check_ident(z, "c1", &id, true);
	check_pipe(z, "pipe a (main -> c1)", t->a[0], A_LEN, SEED_A);
	zt_collect_part(z, "g", t->g);
	exit(zt_finish_part(z, "c1"));
}

__attribute__((noreturn)) static void run_c2(struct zt *z, struct tree *t)
{
	int *unused[] = { &t->a[0], &t->a[1], &t->b[0], &t->b[1], &t->e[0], &t->e[1], &t->f[0], &t->sp[0] };
	close_all(unused, 8);
	if (setsid() < 0)
		zt_setup_failed(z, "setsid", "c2");
	struct ident id;
	record(&id);
	/* Fill f to the brim: non-blocking writes until EAGAIN (the flag is set on the write end only). */
	int fl = fcntl(t->f[1], F_GETFL);
	if (fl < 0 || fcntl(t->f[1], F_SETFL, fl | O_NONBLOCK) < 0)
		zt_setup_failed(z, "fcntl", "pipe f");
	char buf[SMALL_PIPE];
	zt_fill_random(buf, sizeof(buf), SEED_F);
	size_t off = 0;
	for (;;) {
		ssize_t n = write(t->f[1], buf + off, sizeof(buf) - off);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			zt_setup_failed(z, "write", "pipe f");
		off += (size_t)n;
		if (off == sizeof(buf))
			break;
	}
	if (off != SMALL_PIPE) {
		errno = EMSGSIZE;
		zt_setup_failed(z, "write", "pipe f did not take exactly its size");
	}
	notify(z, t->sp[1], "c2");
	zt_wait_sleeping(z);
	check_ident(z, "c2", &id, true);
	int sz = fcntl(t->f[1], F_GETPIPE_SZ);
	if (sz != SMALL_PIPE)
		zt_fail(z, "c2: pipe f write end size is %d, expected %d", sz, SMALL_PIPE);
	exit(zt_finish_part(z, "c2"));
}

__attribute__((noreturn)) static void run_c3(struct zt *z, struct tree *t, const char *fifo)
{
	int *unused[] = { &t->a[0], &t->a[1], &t->b[0], &t->b[1], &t->e[0], &t->e[1], &t->f[0], &t->f[1], &t->sp[0] };
	close_all(unused, 9);
	if (setpgid(0, 0) < 0)
		zt_setup_failed(z, "setpgid", "c3");
	struct ident id;
	record(&id);
	int fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		zt_setup_failed(z, "open", fifo);
	notify(z, t->sp[1], "c3");
	zt_wait_sleeping(z);
	check_ident(z, "c3", &id, true);
	check_pipe(z, "fifo (main -> c3)", fd, FIFO_LEN, SEED_FIFO);
	exit(zt_finish_part(z, "c3"));
}

static pid_t spawn(struct zt *z, struct tree *t, const char *name, void (*run)(struct zt *, struct tree *))
{
	pid_t pid = fork();
	if (pid < 0)
		zt_setup_failed(z, "fork", name);
	if (pid == 0)
		run(z, t);
	return pid;
}

static void wait_notes(struct zt *z, struct tree *t, int count)
{
	for (int i = 0; i < count; i++) {
		struct note n;
		ssize_t r = read(t->sp[0], &n, sizeof(n));
		if (r != sizeof(n)) {
			errno = r < 0 ? errno : EPIPE;
			zt_setup_failed(z, "read", "setup pipe (a child died during setup)");
		}
		if (!strcmp(n.tag, "g"))
			t->g = n.pid;
	}
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	struct tree t = { .main = getpid() };
	char fifo[PATH_MAX];
	zt_path(&z, fifo, sizeof(fifo), "fifo");
	if (mkfifo(fifo, 0600) < 0)
		zt_setup_failed(&z, "mkfifo", fifo);
	if (pipe2(t.a, O_CLOEXEC) < 0 || pipe2(t.b, O_CLOEXEC) < 0 || pipe2(t.e, O_CLOEXEC) < 0 ||
	    pipe2(t.f, O_CLOEXEC) < 0 || pipe2(t.sp, O_CLOEXEC) < 0)
		zt_setup_failed(&z, "pipe2", "tree pipes");
	if (fcntl(t.f[0], F_SETPIPE_SZ, SMALL_PIPE) != SMALL_PIPE)
		zt_setup_failed(&z, "fcntl(F_SETPIPE_SZ)", "pipe f");

	t.c1 = spawn(&z, &t, "c1", run_c1);
	t.c2 = spawn(&z, &t, "c2", run_c2);
	wait_notes(&z, &t, 3);	/* c1, g, c2 */
	pid_t c3 = fork();
	if (c3 < 0)
		zt_setup_failed(&z, "fork", "c3");
	if (c3 == 0)
		run_c3(&z, &t, fifo);
	t.c3 = c3;
	wait_notes(&z, &t, 1);	/* c3 has the fifo open for reading: opening the write end will not block */
	close(t.sp[0]);
	close(t.sp[1]);
	int *unused[] = { &t.a[0], &t.b[0], &t.b[1], &t.e[1], &t.f[1] };
	close_all(unused, 5);
	t.fifo = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (t.fifo < 0)
		zt_setup_failed(&z, "open", fifo);
	write_all(&z, t.fifo, FIFO_LEN, SEED_FIFO, "fifo");
	write_all(&z, t.a[1], A_LEN, SEED_A, "pipe a");
	t.zombie = make_zombie(&z);
	struct ident id;
	record(&id);

	zt_info(&z, "proc-zombie", "%d", t.zombie);
	zt_info(&z, "proc-c1", "%d", t.c1);
	zt_info(&z, "proc-g", "%d", t.g);
	zt_info(&z, "proc-c2", "%d", t.c2);
	zt_info(&z, "proc-c3", "%d", t.c3);
	zt_info(&z, "pipe-a-reader", "%d %d", t.c1, t.a[0]);
	zt_info(&z, "pipe-f-reader", "%d %d", t.main, t.f[0]);
	pid_t pids[] = { t.main, t.c1, t.g, t.c2, t.c3 };
	zt_ready(&z, pids, 5);

	zt_wait_sleeping(&z);
	forward_request(t.c1);
	forward_request(t.c2);
	forward_request(t.c3);
	check_ident(&z, "main", &id, false);
	check_pipe(&z, "pipe e (g -> main)", t.e[0], E_LEN, SEED_E);
	check_pipe(&z, "pipe f (c2 -> main, full)", t.f[0], SMALL_PIPE, SEED_F);
	int sz = fcntl(t.f[0], F_GETPIPE_SZ);
	if (sz != SMALL_PIPE)
		zt_fail(&z, "main: pipe f read end size is %d, expected %d", sz, SMALL_PIPE);
	check_zombie(&z, t.zombie);
	zt_collect_part(&z, "c1", t.c1);
	zt_collect_part(&z, "c2", t.c2);
	zt_collect_part(&z, "c3", t.c3);
	return zt_finish(&z);
}
