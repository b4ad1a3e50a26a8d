/*
 * ghosts: things open in the process whose names are gone (zdtm ghost_holes00, unlink_fifo, rmdir_open).
 * - a sparse file, unlinked: data in blocks 0 and 2, a hole in block 1, a hole up to its size of 4 blocks; a
 *   second open of it, alike in flags and position (zdtm write_read10);
 * - a FIFO, unlinked, held read-write with bytes in it, plus a read-only open of it through /proc/self/fd;
 * - a directory, removed while open;
 * - --device 1: a device node of its own for /dev/zero (1:5), opened read-write and removed (zdtm deleted_dev).
 * Verify: the file's size, data and holes (SEEK_HOLE), and a byte written through the second open is read
 * through the first (one file, not two copies); the FIFO's mode, owner and bytes (read through the
 * read-only open); the directory is still a removed directory with its mode; the device node is still that
 * device, removed, with its mode, and reads zeros.
 */
#include "zdtm.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define BLOCK 4096
#define FIFO_BYTES 100

static void check_file(struct zt *z, int fd)
{
	struct stat st;
	unsigned char buf[BLOCK];
	if (fstat(fd, &st) < 0) {
		zt_fail_sys(z, "fstat", "sparse file");
		return;
	}
	if (st.st_size != 4 * BLOCK || st.st_nlink != 0)
		zt_fail(z, "sparse file: size %lld, links %lu, expected %d, 0", (long long)st.st_size, (unsigned long)st.st_nlink, 4 * BLOCK);
	for (int blk = 0; blk <= 2; blk += 2)
		if (pread(fd, buf, BLOCK, blk * BLOCK) != BLOCK || zt_check_random(buf, BLOCK, 7 + blk) != (size_t)-1)
			zt_fail(z, "sparse file: block %d does not hold its data", blk);
	off_t hole = lseek(fd, 0, SEEK_HOLE), tail = lseek(fd, 2 * BLOCK, SEEK_HOLE);
	if (hole != BLOCK || tail != 3 * BLOCK)
		zt_fail(z, "sparse file: holes at %lld and %lld, expected %d and %d", (long long)hole, (long long)tail, BLOCK, 3 * BLOCK);
}

static void check_fifo(struct zt *z, int rw, int ro)
{
	struct stat st;
	unsigned char buf[FIFO_BYTES + 1];
	if (fstat(rw, &st) < 0) {
		zt_fail_sys(z, "fstat", "unlinked FIFO");
		return;
	}
	if (st.st_mode != (S_IFIFO | 0640) || st.st_uid != 1 || st.st_gid != 2 || st.st_nlink != 0)
		zt_fail(z, "unlinked FIFO: mode 0%o owner %u:%u links %lu, expected 0%o 1:2 0", st.st_mode, st.st_uid, st.st_gid,
			(unsigned long)st.st_nlink, S_IFIFO | 0640);
	if (fcntl(ro, F_SETFL, O_NONBLOCK) < 0 || read(ro, buf, sizeof(buf)) != FIFO_BYTES ||
	    zt_check_random(buf, FIFO_BYTES, 11) != (size_t)-1)
		zt_fail(z, "unlinked FIFO: its %d bytes do not come back through the read-only open", FIFO_BYTES);
	if (write(rw, "z", 1) != 1 || read(ro, buf, 1) != 1 || buf[0] != 'z')
		zt_fail(z, "unlinked FIFO: the read-write and read-only opens are not one FIFO any more");
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = { { "device", 0, 0, 1, "1: a removed device node (/dev/zero's) held open" } };
	zt_setup(&z, argc, argv, opts, 1, SIGUSR2);
	char path[PATH_MAX];
	unsigned char buf[BLOCK];

	zt_path(&z, path, sizeof(path), "sparse");
	int file = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int file2 = open(path, O_RDWR | O_CLOEXEC);
	if (file < 0 || file2 < 0 || unlink(path) < 0)
		zt_setup_failed(&z, "open/unlink", path);
	for (int blk = 0; blk <= 2; blk += 2) {
		zt_fill_random(buf, BLOCK, 7 + blk);
		if (pwrite(file, buf, BLOCK, blk * BLOCK) != BLOCK)
			zt_setup_failed(&z, "pwrite", path);
	}
	if (ftruncate(file, 4 * BLOCK) < 0)
		zt_setup_failed(&z, "ftruncate", path);

	zt_path(&z, path, sizeof(path), "fifo");
	if (mkfifo(path, 0600) < 0)
		zt_setup_failed(&z, "mkfifo", path);
	int rw = open(path, O_RDWR | O_CLOEXEC);
	if (rw < 0 || fchown(rw, 1, 2) < 0 || fchmod(rw, 0640) < 0 || unlink(path) < 0)
		zt_setup_failed(&z, "open/fchown/fchmod/unlink", path);
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", rw);
	int ro = open(self, O_RDONLY | O_CLOEXEC);
	zt_fill_random(buf, FIFO_BYTES, 11);
	if (ro < 0 || write(rw, buf, FIFO_BYTES) != FIFO_BYTES)
		zt_setup_failed(&z, "open/write", "unlinked FIFO");

	zt_path(&z, path, sizeof(path), "dir");
	if (mkdir(path, 0750) < 0)
		zt_setup_failed(&z, "mkdir", path);
	int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0 || rmdir(path) < 0)
		zt_setup_failed(&z, "open/rmdir", path);

	int devfd = -1;
	if (opts[0].value) {
		zt_path(&z, path, sizeof(path), "zero");
		if (mknod(path, S_IFCHR | 0604, makedev(1, 5)) < 0)
			zt_setup_failed(&z, "mknod", path);
		devfd = open(path, O_RDWR | O_CLOEXEC);
		if (devfd < 0 || unlink(path) < 0)
			zt_setup_failed(&z, "open/unlink", path);
	}

	pid_t self_pid = getpid();
	zt_ready(&z, &self_pid, 1);
	zt_wait_sleeping(&z);

	check_file(&z, file);
	char q = 0;
	if (pwrite(file2, "q", 1, BLOCK) != 1 || pread(file, &q, 1, BLOCK) != 1 || q != 'q')
		zt_fail(&z, "sparse file: a byte written through its second open is not read through the first");
	check_fifo(&z, rw, ro);
	struct stat st;
	if (fstat(dir, &st) < 0)
		zt_fail_sys(&z, "fstat", "removed directory");
	else if (!S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0750 || st.st_nlink != 0)
		zt_fail(&z, "removed directory: mode 0%o links %lu, expected a directory 0750 with 0 links", st.st_mode,
			(unsigned long)st.st_nlink);
	if (devfd >= 0) {
		memset(buf, 1, sizeof(buf));
		if (fstat(devfd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 5) || (st.st_mode & 07777) != 0604 ||
		    st.st_nlink != 0)
			zt_fail(&z, "removed device node: mode 0%o rdev %u:%u links %lu, expected /dev/zero's 1:5, 0604, removed",
				st.st_mode, major(st.st_rdev), minor(st.st_rdev), (unsigned long)st.st_nlink);
		else if (read(devfd, buf, 16) != 16 || buf[0] || buf[15])
			zt_fail(&z, "removed device node: does not read zeros");
	}
	return zt_finish(&z);
}
