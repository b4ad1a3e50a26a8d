/*
 * files: regular files open at offsets with different flags (read-only + O_NONBLOCK, read-write with a dup
 * sharing its offset, O_APPEND, O_CLOEXEC opened relative to the cwd), a deleted file still open with contents,
 * a file mapped shared and one mapped private (both written through memory), cwd in a subdirectory, a umask.
 * The deleted file has an owner, mode and mtime of its own (zdtm unlink_fstat00 checks them after restore) and an
 * inotify watch made before it was deleted (zdtm inotify00): a chmod of it must still raise IN_ATTRIB there.
 * One file is opened twice with the same flags, both at offset 0 (zdtm file_shared): two descriptions whose
 * offsets must stay apart.
 * --watch-opens 1: a second inotify watches twice.dat (held open) for opens, reads and closes: the dump must not
 *   open the file itself (zdtm inotify_irmap); 2: and leaves one event of its own unread (a dump must refuse it).
 * --terminals 1: device nodes of its own for /dev/console (5:1) and virtual terminal 5 (4:5), held open without
 *   being the controlling terminal (zdtm console, vt). Verify: both fds are still those devices.
 *   2: also a child that starts a session and takes the virtual terminal as its controlling terminal (zdtm vt).
 *   Verify: the child, asked through a pipe, still has it as its controlling terminal (TIOCGSID, tty_nr).
 * Verify: per fd its flags (F_GETFL, F_GETFD), offset, path, link count and the file's bytes; the dup still shares
 * its offset, O_APPEND still appends; the shared mapping still writes through to the file and the private one does
 * not; cwd and umask.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define UMASK 027

struct ofile {
	const char *name;
	int fd, fl, fdfl;
	off_t off;
	unsigned char *want;	/* expected contents */
	size_t len;
	int deleted;
	struct stat attrs;	/* deleted file: owner, mode, mtime it must keep */
	char link[PATH_MAX];	/* readlink of /proc/self/fd/N at setup */
};

static unsigned char *pattern(struct zt *z, size_t len, uint64_t seed)
{
	unsigned char *p = malloc(len);
	if (!p)
		zt_setup_failed(z, "malloc", "file pattern");
	zt_fill_random(p, len, seed);
	return p;
}

static void write_full(struct zt *z, int fd, const void *buf, size_t len, const char *what)
{
	if (write(fd, buf, len) != (ssize_t)len)
		zt_setup_failed(z, "write", what);
}

static void fd_link(int fd, char *buf, size_t len)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(proc, buf, len - 1);
	buf[n < 0 ? 0 : n] = 0;
}

/* Opens (creating with contents) and positions one file, recording what verify expects. */
static void open_file(struct zt *z, struct ofile *f, const char *path, int flags, size_t len, uint64_t seed, off_t off)
{
	f->want = pattern(z, len, seed);
	f->len = len;
	f->fd = open(path, flags | O_CREAT | O_TRUNC, 0640);
	if (f->fd < 0)
		zt_setup_failed(z, "open", path);
	if ((flags & O_ACCMODE) == O_RDONLY) {
		int w = open(path, O_WRONLY | O_CLOEXEC);
		if (w < 0)
			zt_setup_failed(z, "open", path);
		write_full(z, w, f->want, len, path);
		close(w);
	} else {
		write_full(z, f->fd, f->want, len, path);
	}
	if (lseek(f->fd, off, SEEK_SET) < 0 && !(flags & O_APPEND))
		zt_setup_failed(z, "lseek", path);
	f->off = lseek(f->fd, 0, SEEK_CUR);
	f->fl = fcntl(f->fd, F_GETFL);
	f->fdfl = fcntl(f->fd, F_GETFD);
	fd_link(f->fd, f->link, sizeof(f->link));
}

static void check_file(struct zt *z, const struct ofile *f)
{
	int fl = fcntl(f->fd, F_GETFL), fdfl = fcntl(f->fd, F_GETFD);
	if (fl < 0) {
		zt_fail_sys(z, "fcntl(F_GETFL)", f->name);
		return;
	}
	if (fl != f->fl)
		zt_fail(z, "fd %d (%s) flags are 0%o, expected 0%o", f->fd, f->name, fl, f->fl);
	if (fdfl != f->fdfl)
		zt_fail(z, "fd %d (%s) fd flags are %d, expected %d", f->fd, f->name, fdfl, f->fdfl);
	off_t off = lseek(f->fd, 0, SEEK_CUR);
	if (off != f->off)
		zt_fail(z, "fd %d (%s) offset is %lld, expected %lld", f->fd, f->name, (long long)off, (long long)f->off);
	char link[PATH_MAX];
	fd_link(f->fd, link, sizeof(link));
	if (strcmp(link, f->link))
		zt_fail(z, "fd %d (%s) is %s, expected %s", f->fd, f->name, link, f->link);
	struct stat st;
	if (fstat(f->fd, &st) < 0) {
		zt_fail_sys(z, "fstat", f->name);
		return;
	}
	if (f->deleted != (st.st_nlink == 0))
		zt_fail(z, "fd %d (%s) has %lu links, expected %s", f->fd, f->name, (unsigned long)st.st_nlink,
			f->deleted ? "0 (deleted)" : "1");
	if (f->deleted && (st.st_uid != f->attrs.st_uid || st.st_gid != f->attrs.st_gid ||
			   (st.st_mode & 07777) != (f->attrs.st_mode & 07777) ||
			   st.st_mtim.tv_sec != f->attrs.st_mtim.tv_sec))
		zt_fail(z, "fd %d (%s) is %u:%u mode 0%o mtime %lld, expected %u:%u mode 0%o mtime %lld", f->fd, f->name,
			st.st_uid, st.st_gid, st.st_mode & 07777, (long long)st.st_mtim.tv_sec, f->attrs.st_uid,
			f->attrs.st_gid, f->attrs.st_mode & 07777, (long long)f->attrs.st_mtim.tv_sec);
	if ((size_t)st.st_size != f->len) {
		zt_fail(z, "fd %d (%s) file size is %lld, expected %zu", f->fd, f->name, (long long)st.st_size, f->len);
		return;
	}
	if ((f->fl & O_ACCMODE) == O_WRONLY)
		return;	/* contents of the write-only file are read through a fresh fd in main */
	unsigned char *buf = malloc(f->len);
	if (!buf || pread(f->fd, buf, f->len, 0) != (ssize_t)f->len) {
		zt_fail(z, "fd %d (%s): cannot read %zu bytes back", f->fd, f->name, f->len);
	} else {
		for (size_t i = 0; i < f->len; i++) {
			if (buf[i] != f->want[i]) {
				zt_fail(z, "fd %d (%s) byte %zu is 0x%02x, expected 0x%02x", f->fd, f->name, i, buf[i],
					f->want[i]);
				break;
			}
		}
	}
	free(buf);
}

static unsigned char *map_file(struct zt *z, const char *path, size_t len, uint64_t seed, int flags,
			       unsigned char **want)
{
	*want = pattern(z, len, seed);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		zt_setup_failed(z, "open", path);
	write_full(z, fd, *want, len, path);
	unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (m == MAP_FAILED)
		zt_setup_failed(z, "mmap", path);
	close(fd);	/* the mapping alone keeps the file */
	return m;
}

static void compare(struct zt *z, const char *what, const unsigned char *got, const unsigned char *want, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (got[i] != want[i]) {
			zt_fail(z, "%s byte %zu is 0x%02x, expected 0x%02x", what, i, got[i], want[i]);
			return;
		}
	}
}

static void check_file_bytes(struct zt *z, const char *what, const char *path, const unsigned char *want, size_t len)
{
	unsigned char *buf = malloc(len + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 || !buf ? -1 : pread(fd, buf, len + 1, 0);
	if (n != (ssize_t)len)
		zt_fail(z, "%s: read %zd bytes from %s, expected %zu", what, n, path, len);
	else
		compare(z, what, buf, want, len);
	if (fd >= 0)
		close(fd);
	free(buf);
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "watch-opens", 0, 0, 2, "1: an inotify watching a held file for opens; 2: one event left unread" },
				 { "terminals", 0, 0, 2, "1: a console and a virtual terminal held open by their own nodes; 2: and a session on the VT" } };
	zt_setup(&z, argc, argv, opts, 2, SIGUSR2);
	int term_fds[2] = { -1, -1 };
	const dev_t term_devs[2] = { makedev(5, 1), makedev(4, 5) };
	for (int i = 0; opts[1].value && i < 2; i++) {
		char node[PATH_MAX];
		zt_path(&z, node, sizeof(node), i ? "vt5" : "console");
		if (mknod(node, S_IFCHR | 0600, term_devs[i]) < 0)
			zt_setup_failed(&z, "mknod", node);
		term_fds[i] = open(node, O_RDONLY | O_NOCTTY | O_CLOEXEC);
		if (term_fds[i] < 0)
			zt_setup_failed(&z, "open", node);
	}
	char dir[PATH_MAX], sub[PATH_MAX], p_ro[PATH_MAX], p_rw[PATH_MAX], p_app[PATH_MAX], p_del[PATH_MAX],
		p_shared[PATH_MAX], p_private[PATH_MAX];
	zt_path(&z, dir, sizeof(dir), "files");
	zt_path(&z, sub, sizeof(sub), "files/sub");
	zt_path(&z, p_ro, sizeof(p_ro), "files/ro.dat");
	zt_path(&z, p_rw, sizeof(p_rw), "files/rw.dat");
	zt_path(&z, p_app, sizeof(p_app), "files/append.log");
	zt_path(&z, p_del, sizeof(p_del), "files/deleted.dat");
	zt_path(&z, p_shared, sizeof(p_shared), "files/shared.dat");
	zt_path(&z, p_private, sizeof(p_private), "files/private.dat");
	if (mkdir(dir, 0755) < 0 || mkdir(sub, 0755) < 0)
		zt_setup_failed(&z, "mkdir", sub);
	if (chdir(sub) < 0)
		zt_setup_failed(&z, "chdir", sub);
	umask(UMASK);

	struct ofile f[6] = { { .name = "ro.dat" }, { .name = "rw.dat" }, { .name = "append.log" },
			      { .name = "deleted.dat" }, { .name = "sub/here.txt" }, { .name = "rw.dat (dup)" } };
	/* Some fds without O_CLOEXEC on purpose: F_GETFD must come back different per fd, as it was. */
	open_file(&z, &f[0], p_ro, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 10000, 1, 1234);
	open_file(&z, &f[1], p_rw, O_RDWR, 5000, 2, 777);
	open_file(&z, &f[2], p_app, O_WRONLY | O_APPEND, 300, 3, 0);
	open_file(&z, &f[3], p_del, O_RDWR | O_CLOEXEC, 8292, 4, 4000);
	open_file(&z, &f[4], "here.txt", O_RDWR | O_CLOEXEC, 64, 7, 3);	/* relative: lands in the cwd */
	/* Attributes a restore must carry: not root's, not what umask gives, an old mtime. */
	struct timespec old_times[2] = { { 1000000000, 0 }, { 1100000000, 0 } };
	if (fchown(f[3].fd, 4242, 4343) < 0 || fchmod(f[3].fd, 0604) < 0 || futimens(f[3].fd, old_times) < 0 ||
	    fstat(f[3].fd, &f[3].attrs) < 0)
		zt_setup_failed(&z, "fchown/fchmod/futimens", p_del);
	char p_twice[PATH_MAX];
	zt_path(&z, p_twice, sizeof(p_twice), "files/twice.dat");
	int tw = open(p_twice, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (tw < 0 || write(tw, "0123456789", 10) != 10 || close(tw) < 0)
		zt_setup_failed(&z, "open/write", p_twice);
	int twice[2] = { open(p_twice, O_RDONLY | O_CLOEXEC), open(p_twice, O_RDONLY | O_CLOEXEC) };
	if (twice[0] < 0 || twice[1] < 0)
		zt_setup_failed(&z, "open", p_twice);
	int opens = -1;
	if (opts[0].value) {
		opens = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (opens < 0 || inotify_add_watch(opens, p_twice, IN_OPEN | IN_ACCESS | IN_CLOSE_NOWRITE) < 0)
			zt_setup_failed(&z, "inotify_init1/inotify_add_watch", p_twice);
		if (opts[0].value == 2) {
			int o = open(p_twice, O_RDONLY | O_CLOEXEC);	/* IN_OPEN, IN_CLOSE_NOWRITE: left unread */
			if (o < 0 || close(o) < 0)
				zt_setup_failed(&z, "open", p_twice);
		}
	}
	int ify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	int wd = ify < 0 ? -1 : inotify_add_watch(ify, p_del, IN_ATTRIB);
	if (wd < 0)
		zt_setup_failed(&z, "inotify_init1/inotify_add_watch", p_del);
	if (unlink(p_del) < 0)
		zt_setup_failed(&z, "unlink", p_del);
	char evbuf[4096] __attribute__((aligned(8)));
	while (read(ify, evbuf, sizeof(evbuf)) > 0)
		;	/* the unlink's own IN_ATTRIB */
	f[3].deleted = 1;
	fd_link(f[3].fd, f[3].link, sizeof(f[3].link));
	f[5] = f[1];
	f[5].name = "rw.dat (dup)";
	f[5].fd = dup(f[1].fd);
	if (f[5].fd < 0)
		zt_setup_failed(&z, "dup", "rw.dat");
	f[5].fdfl = fcntl(f[5].fd, F_GETFD);

	unsigned char *want_shared, *want_private;
	unsigned char *shared = map_file(&z, p_shared, 3 * PAGE, 5, MAP_SHARED, &want_shared);
	unsigned char *private = map_file(&z, p_private, 2 * PAGE, 6, MAP_PRIVATE, &want_private);
	memset(shared + PAGE, 0x5a, 100);	/* reaches the file */
	memset(want_shared + PAGE, 0x5a, 100);
	memset(private, 0xa5, 50);	/* stays in this process */
	unsigned char *private_file = malloc(2 * PAGE);
	if (!private_file)
		zt_setup_failed(&z, "malloc", "private copy");
	memcpy(private_file, want_private, 2 * PAGE);
	memset(want_private, 0xa5, 50);

	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		zt_setup_failed(&z, "getcwd", "cwd");
	for (int i = 0; i < 6; i++) {
		char key[32];
		snprintf(key, sizeof(key), "fd-%d", i);
		zt_info(&z, key, "%d %s", f[i].fd, f[i].name);
	}
	zt_info(&z, "shared-map", "%p", (void *)shared);
	zt_info(&z, "private-map", "%p", (void *)private);
	int ask[2] = { -1, -1 }, answer[2] = { -1, -1 };
	pid_t pids[2] = { getpid(), 0 };
	if (opts[1].value == 2) {
		char node[PATH_MAX];
		zt_path(&z, node, sizeof(node), "vt5");
		if (pipe2(ask, O_CLOEXEC) || pipe2(answer, O_CLOEXEC))
			zt_setup_failed(&z, "pipe2", "vt session");
		pids[1] = fork();
		if (pids[1] < 0)
			zt_setup_failed(&z, "fork", "vt session");
		if (pids[1] == 0) {
			/* A session leader opening a terminal without O_NOCTTY takes it as its controlling terminal. */
			int t = setsid() < 0 ? -1 : open(node, O_RDWR | O_CLOEXEC);
			char c = t < 0 ? 'E' : 'R';
			if (write(answer[1], &c, 1) != 1 || read(ask[0], &c, 1) != 1)
				_exit(2);
			pid_t sid = 0;
			int nr = 0;
			FILE *f = fopen("/proc/self/stat", "r");
			if (!f || fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %d", &nr) != 1)
				nr = 0;
			c = ioctl(t, TIOCGSID, &sid) == 0 && sid == getpid() && (dev_t)nr == makedev(4, 5) ? 'Y' : 'N';
			_exit(write(answer[1], &c, 1) == 1 ? 0 : 3);
		}
		char c;
		if (read(answer[0], &c, 1) != 1 || c != 'R')
			zt_setup_failed(&z, "setsid/open", "vt session child");
	}
	zt_ready(&z, pids, pids[1] ? 2 : 1);
	zt_wait_sleeping(&z);

	for (int i = 0; i < 6; i++)
		check_file(&z, &f[i]);
	check_file_bytes(&z, "append.log", p_app, f[2].want, f[2].len);
	compare(&z, "shared mapping", shared, want_shared, 3 * PAGE);
	check_file_bytes(&z, "shared.dat", p_shared, want_shared, 3 * PAGE);
	compare(&z, "private mapping", private, want_private, 2 * PAGE);
	check_file_bytes(&z, "private.dat", p_private, private_file, 2 * PAGE);
	char now[PATH_MAX];
	if (!getcwd(now, sizeof(now)))
		zt_fail_sys(&z, "getcwd", "cwd");
	else if (strcmp(now, cwd))
		zt_fail(&z, "cwd is %s, expected %s", now, cwd);
	mode_t um = umask(UMASK);
	if (um != UMASK)
		zt_fail(&z, "umask is 0%o, expected 0%o", (unsigned)um, UMASK);

	/* Behaviour, not only state: shared offset, append, write-through. */
	if (lseek(f[1].fd, 100, SEEK_SET) != 100 || lseek(f[5].fd, 0, SEEK_CUR) != 100)
		zt_fail(&z, "fd %d no longer shares its offset with fd %d", f[5].fd, f[1].fd);
	if (lseek(f[2].fd, 0, SEEK_SET) < 0 || write(f[2].fd, "appended", 8) != 8 ||
	    lseek(f[2].fd, 0, SEEK_CUR) != (off_t)f[2].len + 8)
		zt_fail(&z, "fd %d (append.log) no longer appends", f[2].fd);
	shared[2 * PAGE + 7] ^= 0xff;
	want_shared[2 * PAGE + 7] ^= 0xff;
	check_file_bytes(&z, "shared.dat after a write to the mapping", p_shared, want_shared, 3 * PAGE);
	private[PAGE + 7] ^= 0xff;
	check_file_bytes(&z, "private.dat after a write to the private mapping", p_private, private_file, 2 * PAGE);
	/* Two opens, two offsets. */
	if (lseek(twice[0], 0, SEEK_CUR) != 0 || lseek(twice[1], 0, SEEK_CUR) != 0 || lseek(twice[0], 7, SEEK_SET) != 7 ||
	    lseek(twice[1], 0, SEEK_CUR) != 0)
		zt_fail(&z, "twice.dat: its two opens share an offset now (fds %d and %d)", twice[0], twice[1]);
	for (int i = 0; i < 2; i++) {
		struct stat st;
		if (term_fds[i] >= 0 && (fstat(term_fds[i], &st) || !S_ISCHR(st.st_mode) || st.st_rdev != term_devs[i]))
			zt_fail(&z, "terminal fd %d is not device %u:%u any more", term_fds[i], major(term_devs[i]), minor(term_devs[i]));
	}
	if (pids[1]) {
		char c = '?';
		if (write(ask[1], "?", 1) != 1 || read(answer[0], &c, 1) != 1 || c != 'Y')
			zt_fail(&z, "vt session child: virtual terminal 5 is not its controlling terminal any more (answer '%c')", c);
		waitpid(pids[1], NULL, 0);
	}
	if (opens >= 0) {
		ssize_t k = read(opens, evbuf, sizeof(evbuf));
		const struct inotify_event *e = (const void *)evbuf;
		if (k >= 0)
			zt_fail(&z, "inotify on twice.dat: an event nobody in the tree caused (mask 0x%x, %zd bytes)", k > 0 ? e->mask : 0, k);
	}
	/* The watch on the deleted file still sees it. */
	while (read(ify, evbuf, sizeof(evbuf)) > 0)
		;
	if (fchmod(f[3].fd, f[3].attrs.st_mode & 07777) < 0)
		zt_fail_sys(&z, "fchmod", "deleted.dat");
	ssize_t n = read(ify, evbuf, sizeof(evbuf));
	const struct inotify_event *ev = (const void *)evbuf;
	if (n < (ssize_t)sizeof(*ev) || ev->wd != wd || !(ev->mask & IN_ATTRIB))
		zt_fail(&z, "inotify watch %d on deleted.dat: no IN_ATTRIB after a chmod (read %zd)", wd, n);
	return zt_finish(&z);
}
