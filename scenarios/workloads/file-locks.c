/*
 * file-locks: locks that must still be held after a restore (CRIU's zdtm file_locks00-06):
 *   - an exclusive flock() on a file whose open file description the child shares (inherited fd);
 *   - a shared flock() on a second file;
 *   - POSIX record locks of main: a write lock on bytes [100, 200) and a read lock from 4096 to EOF;
 *   - an OFD write lock on bytes [0, 10) of a third file.
 * Verify: a fresh probe process (forked at verify time, so it owns none of them) finds every lock held, with the
 * right type, range and owner (F_GETLK names main); then main releases one and the probe can take it.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

static int open_file(struct zt *z, const char *name)
{
	char path[PATH_MAX];
	zt_path(z, path, sizeof(path), name);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 8192))
		zt_setup_failed(z, "open", name);
	return fd;
}

static int setlk(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	return fcntl(fd, cmd, &fl);
}

/* In a fresh process: 0 if everything is still held as set up, else the number of differences (written to log). */
static int probe(struct zt *z, pid_t owner)
{
	int bad = 0;
	char path[PATH_MAX];
	const char *names[] = { "flock-ex", "flock-sh", "posix", "ofd" };
	int fds[4];
	for (int i = 0; i < 4; i++) {
		zt_path(z, path, sizeof(path), names[i]);
		fds[i] = open(path, O_RDWR | O_CLOEXEC);
		if (fds[i] < 0)
			return 100;
	}
	if (flock(fds[0], LOCK_SH | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		bad++, fprintf(stderr, "probe: the exclusive flock is gone\n");
	if (flock(fds[1], LOCK_SH | LOCK_NB) != 0)
		bad++, fprintf(stderr, "probe: a shared flock was refused (it became exclusive?)\n");
	if (flock(fds[1], LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		bad++, fprintf(stderr, "probe: the shared flock is gone\n");
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(fds[2], F_GETLK, &fl) || fl.l_type != F_WRLCK || fl.l_start != 100 || fl.l_len != 100 || fl.l_pid != owner)
		bad++, fprintf(stderr, "probe: posix write lock is %d %lld+%lld by %d\n", fl.l_type, (long long)fl.l_start,
			       (long long)fl.l_len, fl.l_pid);
	struct flock rd = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5000, .l_len = 1 };
	if (fcntl(fds[2], F_GETLK, &rd) || rd.l_type != F_RDLCK || rd.l_start != 4096 || rd.l_len != 0)
		bad++, fprintf(stderr, "probe: posix read lock is %d %lld+%lld\n", rd.l_type, (long long)rd.l_start, (long long)rd.l_len);
	if (setlk(fds[2], F_SETLK, F_RDLCK, 5000, 1))
		bad++, fprintf(stderr, "probe: a read lock beside the read lock was refused\n");
	struct flock o = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(fds[3], F_OFD_GETLK, &o) || o.l_type != F_WRLCK || o.l_start != 0 || o.l_len != 10 || o.l_pid != -1)
		bad++, fprintf(stderr, "probe: OFD lock is %d %lld+%lld by %d\n", o.l_type, (long long)o.l_start, (long long)o.l_len, o.l_pid);
	return bad;
}

static void run_probe(struct zt *z, pid_t owner, int want_free_flock)
{
	pid_t p = fork();
	if (p == 0) {
		if (want_free_flock) {
			char path[PATH_MAX];
			zt_path(z, path, sizeof(path), "flock-ex");
			int fd = open(path, O_RDWR | O_CLOEXEC);
			_exit(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1);
		}
		_exit(probe(z, owner));
	}
	int st;
	if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st))
		zt_fail(z, "probe process failed to run");
	else if (WEXITSTATUS(st))
		zt_fail(z, want_free_flock ? "the exclusive flock could not be taken after its holders let go"
					   : "%d lock(s) differ (see the log)", WEXITSTATUS(st));
}

int main(int argc, char **argv)
{
	struct zt z;
	zt_setup(&z, argc, argv, NULL, 0, SIGUSR2);
	int ex = open_file(&z, "flock-ex"), sh = open_file(&z, "flock-sh");
	int px = open_file(&z, "posix"), ofd = open_file(&z, "ofd");
	if (flock(ex, LOCK_EX | LOCK_NB) || flock(sh, LOCK_SH | LOCK_NB))
		zt_setup_failed(&z, "flock", "flock-ex/flock-sh");
	if (setlk(px, F_SETLK, F_WRLCK, 100, 100) || setlk(px, F_SETLK, F_RDLCK, 4096, 0))
		zt_setup_failed(&z, "fcntl(F_SETLK)", "posix");
	if (setlk(ofd, F_OFD_SETLK, F_WRLCK, 0, 10))
		zt_setup_failed(&z, "fcntl(F_OFD_SETLK)", "ofd");

	/* The child shares the exclusive flock's open file description (fd inherited, not reopened). */
	int keep = fcntl(ex, F_DUPFD, 20);
	pid_t child = fork();
	if (child < 0 || keep < 0)
		zt_setup_failed(&z, "fork", "child");
	if (child == 0) {
		while (!zt_signalled())
			zt_sleep_ns(1000000);
		flock(keep, LOCK_UN); /* releases the description's lock for everyone */
		exit(zt_finish_part(&z, "child"));
	}
	close(keep);
	pid_t pids[] = { getpid(), child };
	zt_ready(&z, pids, 2);
	zt_wait_sleeping(&z);

	run_probe(&z, getpid(), 0);
	kill(child, SIGUSR2);
	zt_collect_part(&z, "child", child);
	run_probe(&z, getpid(), 1);
	return zt_finish(&z);
}
