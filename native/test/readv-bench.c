/* The limit the helper's page path is measured against (bench/native-read.ts): process_vm_readv of a range of
 * another process into a reused 4 MiB buffer, discarding the bytes, in large iovec batches or one 4 KiB page
 * per call.
 *
 * usage: readv-bench PID START LEN batch|page
 * prints: <bytes> <nanoseconds> */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#define BUF (4u << 20)
#define PAGE 4096u
/* One remote iovec per 64 KiB, as the helper's callers pass ranges of a few pages to many MiB. */
#define IOV_SPAN (64u << 10)

static unsigned long long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: readv-bench PID START LEN batch|page\n");
		return 2;
	}
	int pid = atoi(argv[1]);
	unsigned long long start = strtoull(argv[2], NULL, 0), len = strtoull(argv[3], NULL, 0);
	int page = strcmp(argv[4], "page") == 0;
	char *buf = aligned_alloc(PAGE, BUF);
	if (!buf)
		return 1;
	memset(buf, 0, BUF); /* fault the buffer in before timing */
	static struct iovec remote[BUF / IOV_SPAN];
	unsigned long long t0 = now(), done = 0;
	while (done < len) {
		size_t chunk = len - done < BUF ? (size_t)(len - done) : BUF;
		struct iovec local = { buf, chunk };
		ssize_t n;
		if (page) {
			for (size_t off = 0; off < chunk; off += PAGE) {
				struct iovec l = { buf + off, PAGE }, r = { (void *)(start + done + off), PAGE };
				if (process_vm_readv(pid, &l, 1, &r, 1, 0) != PAGE) {
					perror("process_vm_readv");
					return 1;
				}
			}
			n = (ssize_t)chunk;
		} else {
			size_t k = 0;
			for (size_t off = 0; off < chunk; off += IOV_SPAN, k++) {
				remote[k].iov_base = (void *)(start + done + off);
				remote[k].iov_len = chunk - off < IOV_SPAN ? chunk - off : IOV_SPAN;
			}
			n = process_vm_readv(pid, &local, 1, remote, k, 0);
		}
		if (n != (ssize_t)chunk) {
			perror("process_vm_readv");
			return 1;
		}
		done += chunk;
	}
	printf("%llu %llu\n", done, now() - t0);
	return 0;
}
