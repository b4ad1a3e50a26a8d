/*
 * fs-places: where a task stands in the filesystem and files it reaches in unusual ways (zdtm chroot,
 * chroot-file, memfd02, proc-self, unlink_fstat03). Each option adds one piece:
 * --chroot 1|2  a child chroots into DIR/root (1: its cwd stays outside the root, DIR; 2: it enters DIR/root/sub)
 *               and holds a file opened before the chroot (outside the new root) and one opened inside it
 *               ("/inside"). The child verifies (it cannot reach DIR any more) and reports through a pipe: its cwd
 *               and root are the same inodes, "/inside" opens the held file, the file outside stays readable and
 *               out of reach through the root ("/../outside").
 * --proc 1      an fd on /proc/self/maps (its link reads /proc/PID/maps), partly read: it must read this
 *               process's maps again (the same text as a fresh open of /proc/self/maps).
 * --ns 1|2      fds on /proc/self/ns/net and ns/uts: the same namespaces as the task's own after restore
 *               (2: also an fd on a UTS namespace that no task is in, made by a child that exited: dump refuses).
 * --linked 1    a file opened, given a second name (DIR/linked.alias), its first name removed: after restore
 *               the fd is the same inode (st_dev, st_ino) at its position, with its content, and the alias still
 *               names it, with nlink 1 (no name of godwit's left behind).
 *               2: the same with the first name in a subdirectory removed too (zdtm unlink_regular00).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct zt_opt opts[] = {
	{ "chroot", 0, 0, 2, "0: none; 1: child chroots, cwd outside the root; 2: child chroots and enters a directory in it" },
	{ "proc", 0, 0, 1, "1: an fd on /proc/self/maps" },
	{ "ns", 0, 0, 2, "1: fds on /proc/self/ns/{net,uts}; 2: also a UTS namespace no task is in" },
	{ "linked", 0, 0, 2, "1: an open file whose name was removed while another link names it; 2: its directory removed too" },
};
enum { O_CHROOT, O_PROC, O_NS, O_LINKED };

#define MSG "inside-the-root"
#define OUT_MSG "outside-the-root"
#define LINKED_BYTES 1000

static int same(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static int check_content(int fd, const char *msg)
{
	char buf[64] = "";
	return pread(fd, buf, sizeof(buf) - 1, 0) == (ssize_t)strlen(msg) && !strcmp(buf, msg);
}

/* The chrooted child: sets itself up, reports "ok" or a setup error, waits for the go byte, checks and reports. */
static void chroot_child(struct zt *z, int mode, int rep, int go)
{
	char root[PATH_MAX], sub[PATH_MAX + 8], path[PATH_MAX], out[512] = "";
	size_t n = 0;
	struct stat want_cwd, want_root, st, st2;
	zt_path(z, root, sizeof(root), "root");
	snprintf(sub, sizeof(sub), "%s/sub", root);
	zt_path(z, path, sizeof(path), "outside");
	int outside = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (outside < 0 || chdir(z->dir) < 0 || write(outside, OUT_MSG, strlen(OUT_MSG)) != (ssize_t)strlen(OUT_MSG) || mkdir(root, 0755) < 0 ||
	    mkdir(sub, 0755) < 0 || stat(root, &want_root) < 0 || chroot(root) < 0 || (mode == 2 && chdir("/sub") < 0) ||
	    stat(".", &want_cwd) < 0) {
		dprintf(rep, "setup: %s", strerror(errno));
		_exit(1);
	}
	int inside = open("/inside", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (inside < 0 || write(inside, MSG, strlen(MSG)) != (ssize_t)strlen(MSG)) {
		dprintf(rep, "setup: /inside: %s", strerror(errno));
		_exit(1);
	}
	if (write(rep, "ok", 2) != 2)
		_exit(1);
	char c;
	while (read(go, &c, 1) < 0 && errno == EINTR)
		;
#define BAD(...) (n += (size_t)snprintf(out + n, n < sizeof(out) ? sizeof(out) - n : 0, __VA_ARGS__))
	if (stat(".", &st) < 0 || !same(&st, &want_cwd))
		BAD("cwd is not the directory it was (mode %d); ", mode);
	if (stat("/", &st) < 0 || !same(&st, &want_root))
		BAD("root is not the directory it was; ");
	if (!check_content(inside, MSG))
		BAD("the file opened inside the root lost its content; ");
	int again = open("/inside", O_RDONLY | O_CLOEXEC);
	if (again < 0 || fstat(again, &st) < 0 || fstat(inside, &st2) < 0 || !same(&st, &st2))
		BAD("/inside does not open the file held open (%s); ", again < 0 ? strerror(errno) : "another inode");
	if (!check_content(outside, OUT_MSG))
		BAD("the file opened outside the root lost its content; ");
	if (open("/../outside", O_RDONLY | O_CLOEXEC) >= 0 || errno != ENOENT)
		BAD("a file outside the root is reachable through it; ");
	if (mode == 1 && (stat("outside", &st) < 0 || fstat(outside, &st2) < 0 || !same(&st, &st2)))
		BAD("the cwd outside the root does not hold the file outside; ");
	if (n == 0)
		BAD("PASS");
	if (write(rep, out, strlen(out)) < 0)
		_exit(1);
	_exit(0);
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, opts, sizeof(opts) / sizeof(opts[0]), SIGUSR2);
	char path[PATH_MAX], buf[4096];
	pid_t pids[2] = { getpid(), 0 };
	size_t npids = 1;

	int rep[2] = { -1, -1 }, go[2] = { -1, -1 };
	if (opts[O_CHROOT].value) {
		if (pipe2(rep, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0)
			zt_setup_failed(&z, "pipe2", "child pipes");
		pid_t child = fork();
		if (child < 0)
			zt_setup_failed(&z, "fork", "chroot child");
		if (child == 0) {
			close(rep[0]), close(go[1]);
			chroot_child(&z, (int)opts[O_CHROOT].value, rep[1], go[0]);
		}
		close(rep[1]), close(go[0]);
		ssize_t got = read(rep[0], buf, sizeof(buf) - 1);
		buf[got > 0 ? got : 0] = 0;
		if (strcmp(buf, "ok")) {
			errno = EINVAL;
			zt_setup_failed(&z, buf, "chroot child");
		}
		pids[npids++] = child;
	}

	int maps = -1;
	if (opts[O_PROC].value) {
		maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
		if (maps < 0 || read(maps, buf, 100) != 100)
			zt_setup_failed(&z, "open/read", "/proc/self/maps");
	}

	int ns[3] = { -1, -1, -1 };
	struct stat ns_st[2];
	if (opts[O_NS].value) {
		ns[0] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
		ns[1] = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
		if (ns[0] < 0 || ns[1] < 0 || fstat(ns[0], &ns_st[0]) < 0 || fstat(ns[1], &ns_st[1]) < 0)
			zt_setup_failed(&z, "open", "/proc/self/ns/{net,uts}");
	}
	if (opts[O_NS].value == 2) {
		/* Two pipes: with one, the child could read back its own byte before the parent does. */
		int p[2], q[2];
		if (pipe2(p, O_CLOEXEC) < 0 || pipe2(q, O_CLOEXEC) < 0)
			zt_setup_failed(&z, "pipe2", "uts child");
		pid_t c = fork();
		if (c == 0) {
			char x = unshare(CLONE_NEWUTS) == 0 ? 'u' : 'e';
			if (write(p[1], &x, 1) != 1 || read(q[0], &x, 1) < 0)
				_exit(1);
			_exit(0);
		}
		char x = 0;
		if (c < 0 || read(p[0], &x, 1) != 1 || x != 'u')
			zt_setup_failed(&z, "unshare", "uts child");
		snprintf(path, sizeof(path), "/proc/%d/ns/uts", c);
		ns[2] = open(path, O_RDONLY | O_CLOEXEC);
		if (ns[2] < 0)
			zt_setup_failed(&z, "open", path);
		if (write(q[1], "x", 1) != 1 || waitpid(c, NULL, 0) != c)
			zt_setup_failed(&z, "waitpid", "uts child");
		close(p[0]), close(p[1]), close(q[0]), close(q[1]);
		zt_info(&z, "foreign-ns-fd", "%d", ns[2]);
	}

	int linked = -1;
	struct stat linked_st;
	char alias[PATH_MAX];
	if (opts[O_LINKED].value) {
		char sub[PATH_MAX];
		zt_path(&z, sub, sizeof(sub), "linkdir");
		zt_path(&z, path, sizeof(path), opts[O_LINKED].value == 2 ? "linkdir/linked" : "linked");
		zt_path(&z, alias, sizeof(alias), "linked.alias");
		zt_fill_random(buf, LINKED_BYTES, 21);
		if (opts[O_LINKED].value == 2 && mkdir(sub, 0750) < 0)
			zt_setup_failed(&z, "mkdir", sub);
		linked = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		if (linked < 0 || link(path, alias) < 0 || unlink(path) < 0 || write(linked, buf, LINKED_BYTES) != LINKED_BYTES ||
		    fstat(linked, &linked_st) < 0)
			zt_setup_failed(&z, "open/link/unlink/write", path);
		if (opts[O_LINKED].value == 2 && rmdir(sub) < 0)
			zt_setup_failed(&z, "rmdir", sub);
		zt_info(&z, "linked-fd", "%d", linked);
	}

	zt_ready(&z, pids, npids);
	zt_wait_sleeping(&z);

	if (opts[O_CHROOT].value) {
		char out[512];
		ssize_t got = -1;
		if (write(go[1], "g", 1) == 1)
			got = read(rep[0], out, sizeof(out) - 1);
		out[got > 0 ? got : 0] = 0;
		if (strcmp(out, "PASS"))
			zt_fail(&z, "chrooted child: %s", got > 0 ? out : "no answer");
		int status = 0;
		if (waitpid(pids[1], &status, 0) != pids[1] || !WIFEXITED(status) || WEXITSTATUS(status))
			zt_fail(&z, "chrooted child: exit status 0x%x", status);
	}

	if (maps >= 0) {
		static char a[1 << 16], b[1 << 16];
		int fresh = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
		ssize_t na = pread(maps, a, sizeof(a), 0), nb = fresh < 0 ? -1 : pread(fresh, b, sizeof(b), 0);
		if (na <= 0 || na != nb || memcmp(a, b, (size_t)na))
			zt_fail(&z, "/proc/self/maps fd: reads %zd bytes, not this process's %zd bytes of maps", na, nb);
	}

	if (opts[O_NS].value) {
		const char *names[2] = { "/proc/self/ns/net", "/proc/self/ns/uts" };
		for (int i = 0; i < 2; i++) {
			struct stat now, held;
			if (stat(names[i], &now) < 0 || fstat(ns[i], &held) < 0 || !same(&now, &held) || !same(&held, &ns_st[i]))
				zt_fail(&z, "%s fd: not the task's namespace (inode %lu, the task's %lu)", names[i], (unsigned long)held.st_ino,
					(unsigned long)now.st_ino);
		}
	}

	if (linked >= 0) {
		struct stat st, al;
		if (fstat(linked, &st) < 0 || !same(&st, &linked_st))
			zt_fail(&z, "linked file: fd is inode %lu, was %lu", (unsigned long)st.st_ino, (unsigned long)linked_st.st_ino);
		else if (st.st_size != LINKED_BYTES || pread(linked, buf, LINKED_BYTES, 0) != LINKED_BYTES ||
			 zt_check_random(buf, LINKED_BYTES, 21) != (size_t)-1)
			zt_fail(&z, "linked file: content lost (size %lld)", (long long)st.st_size);
		if (stat(alias, &al) < 0 || !same(&al, &linked_st))
			zt_fail(&z, "linked file: %s no longer names it", alias);
		if (st.st_nlink != 1)
			zt_fail(&z, "linked file: %lu links, expected 1 (a link remap left behind?)", (unsigned long)st.st_nlink);
		if (lseek(linked, 0, SEEK_CUR) != LINKED_BYTES)
			zt_fail(&z, "linked file: position %lld, expected %d", (long long)lseek(linked, 0, SEEK_CUR), LINKED_BYTES);
	}
	return zt_finish(&z);
}
