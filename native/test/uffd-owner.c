/* A process with its own userfaultfd: registers 1 MiB of its memory in write-protect mode (WP_ASYNC), says
 * "ready" on stdout and waits. test/checkpoint-precopy.test.ts checks that pre-copy leaves such a region to its
 * owner (UFFDIO_REGISTER from another userfaultfd gives EBUSY) and copies it while frozen instead. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct api { uint64_t api, features, ioctls; };
struct reg { uint64_t start, len, mode, ioctls; };
#define UFFDIO_API_ _IOWR(0xAA, 0x3F, struct api)
#define UFFDIO_REGISTER_ _IOWR(0xAA, 0x00, struct reg)

int main(void)
{
	size_t len = 1 << 20;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return perror("mmap"), 1;
	memset(p, 0x5a, len);
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
	if (fd < 0)
		return perror("userfaultfd"), 1;
	struct api a = { 0xAA, 1ull << 15 /* WP_ASYNC */, 0 };
	if (ioctl(fd, UFFDIO_API_, &a))
		return perror("UFFDIO_API"), 1;
	struct reg r = { (uint64_t)(uintptr_t)p, len, 1ull << 1 /* MODE_WP */, 0 };
	if (ioctl(fd, UFFDIO_REGISTER_, &r))
		return perror("UFFDIO_REGISTER"), 1;
	printf("ready %p\n", (void *)p);
	fflush(stdout);
	for (;;)
		pause();
}
