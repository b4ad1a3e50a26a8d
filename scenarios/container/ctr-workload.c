/*
 * The container scenario's workload, built with gcc -static into the bundle's rootfs (busybox has no ipcmk).
 * It creates a SysV shm segment (key SHM_KEY) filled with a pattern derived from the seed, then counts:
 * every 20 ms it increments a counter, writes it to /tmp/count (a tmpfs in the container) and checks that
 * the segment still holds its pattern; a mismatch writes "FAIL ..." to /tmp/result and exits 1.
 * With MIB, it also holds MIB MiB of anonymous memory (a seeded pattern, half of it repeated so zstd has
 * something to compress) and checks a rotating slice of it on every tick.
 *   ctr-workload SHM_KEY SHM_BYTES SEED [MIB [FEATURES]]
 * FEATURES, comma-separated:
 *   shared     the MIB of memory is a MAP_SHARED anonymous mapping (a shmem object of its own, restored as one),
 *              and a memfd is both mapped and kept open: every tick writes the count through the mapping and
 *              reads it back through the fd (one object).
 *   msg        a SysV message queue (key SHM_KEY+1, mode 0620, byte limit MSG_QBYTES) holding MSG_COUNT messages of
 *              seeded types and sizes (one empty); every tick copies them (MSG_COPY) and checks them in order.
 *              Once /tmp/drain exists it receives them all (msgrcv, type 0: queue order), checks them, and writes
 *              "drained N" to /tmp/drained (a failure goes to /tmp/result as usual).
 *   mono=S     it runs in a time namespace: CLOCK_MONOTONIC must read at least S seconds and never go back;
 *   boot=S     CLOCK_BOOTTIME likewise. Every tick writes "MONO_NS BOOT_NS" to /tmp/clock.
 *   inotify    an inotify watch on /root/feed (the rootfs: watches on a tmpfs are not carried): every 10th tick
 *              appends to it, and 5 ticks later the event must be there to read (a lost one fails). An event
 *              waits unread half the time, so a freeze often finds one in flight.
 *   inotify-unread  the same watch with one event queued and never read (a dump must refuse it).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/inotify.h>
#include <sys/msg.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static unsigned char pattern(unsigned seed, size_t i)
{
	return (unsigned char)((i * 131u + seed * 7u + (i >> 12)) & 0xff);
}

/* Odd MiBs repeat one byte per 64, even ones are a hash: about half compressible. */
static unsigned char mem_pattern(unsigned seed, size_t i)
{
	if ((i >> 20) & 1)
		return (unsigned char)((i >> 6) + seed);
	unsigned x = (unsigned)(i * 2654435761u) ^ seed;
	x ^= x >> 13;
	x *= 0x5bd1e995u;
	return (unsigned char)(x ^ (x >> 15));
}

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif
#define MSG_COUNT 6
#define MSG_QBYTES 12000 /* under msgmnb (16 KiB): root without CAP_SYS_RESOURCE cannot raise it past that */

struct qmsg {
	long mtype;
	char text[1024];
};

/* Message k of the queue: type 1..3, size 0 for k == 2, else up to 1000 bytes, bytes from the seed. */
static void msg_expected(unsigned seed, int k, struct qmsg *m, size_t *len)
{
	m->mtype = 1 + (long)((k * 7 + seed) % 3);
	*len = k == 2 ? 0 : (size_t)((k * 331 + seed * 13) % 1000) + 1;
	for (size_t i = 0; i < *len; i++)
		m->text[i] = (char)pattern(seed + (unsigned)k, i);
}

/* Checks queue message k against what the workload sent; returns NULL or what differed. */
static const char *msg_check(unsigned seed, int k, const struct qmsg *got, ssize_t n)
{
	struct qmsg want;
	size_t len;
	msg_expected(seed, k, &want, &len);
	if (n < 0)
		return "missing";
	if (got->mtype != want.mtype)
		return "type differs";
	if ((size_t)n != len)
		return "size differs";
	if (memcmp(got->text, want.text, len))
		return "bytes differ";
	return NULL;
}

static void put(const char *path, const char *text)
{
	char tmp[64];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

static long long clock_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 6)
		return 2;
	size_t mem_bytes = argc >= 5 ? strtoul(argv[4], NULL, 0) << 20 : 0;
	int use_msg = 0, mem_share = MAP_PRIVATE, use_inotify = 0;
	long long mono_min = -1, boot_min = -1;
	if (argc == 6)
		for (char *f = strtok(argv[5], ","); f; f = strtok(NULL, ",")) {
			if (!strcmp(f, "msg"))
				use_msg = 1;
			else if (!strcmp(f, "inotify"))
				use_inotify = 1;
			else if (!strcmp(f, "inotify-unread"))
				use_inotify = 2;
			else if (!strcmp(f, "shared"))
				mem_share = MAP_SHARED;
			else if (!strncmp(f, "mono=", 5))
				mono_min = strtoll(f + 5, NULL, 0) * 1000000000ll;
			else if (!strncmp(f, "boot=", 5))
				boot_min = strtoll(f + 5, NULL, 0) * 1000000000ll;
			else
				return 2;
		}
	key_t key = (key_t)strtol(argv[1], NULL, 0);
	size_t bytes = strtoul(argv[2], NULL, 0);
	unsigned seed = (unsigned)strtoul(argv[3], NULL, 0);
	/* Only fds of its own: the runtime's stdio pipes lead outside the container (godwit would need their
	 * other ends); /dev/null is the container's. */
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		for (int fd = 0; fd < 3; fd++)
			if (fd != null)
				dup2(null, fd);
		if (null > 2)
			close(null);
	}
	int id = shmget(key, bytes, IPC_CREAT | 0640);
	if (id < 0) {
		put("/tmp/result", "FAIL: shmget\n");
		return 3;
	}
	unsigned char *p = shmat(id, NULL, 0);
	if (p == (void *)-1) {
		put("/tmp/result", "FAIL: shmat\n");
		return 3;
	}
	for (size_t i = 0; i < bytes; i++)
		p[i] = pattern(seed, i);
	unsigned char *mem = NULL;
	if (mem_bytes) {
		mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, mem_share | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			put("/tmp/result", "FAIL: mmap\n");
			return 3;
		}
		for (size_t i = 0; i < mem_bytes; i++)
			mem[i] = mem_pattern(seed, i);
	}
	int mfd = -1;
	volatile unsigned long *mcount = NULL;
	if (mem_share == MAP_SHARED) {
		mfd = memfd_create("ctr-shared", MFD_CLOEXEC);
		if (mfd < 0 || ftruncate(mfd, 4096) < 0) {
			put("/tmp/result", "FAIL: memfd\n");
			return 3;
		}
		mcount = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
		if (mcount == MAP_FAILED) {
			put("/tmp/result", "FAIL: mmap memfd\n");
			return 3;
		}
	}
	int qid = -1, drained = 0;
	if (use_msg) {
		qid = msgget(key + 1, IPC_CREAT | IPC_EXCL | 0620);
		struct msqid_ds ds;
		if (qid < 0 || msgctl(qid, IPC_STAT, &ds) < 0) {
			put("/tmp/result", "FAIL: msgget\n");
			return 3;
		}
		ds.msg_qbytes = MSG_QBYTES;
		if (msgctl(qid, IPC_SET, &ds) < 0) {
			put("/tmp/result", "FAIL: msgctl IPC_SET\n");
			return 3;
		}
		for (int k = 0; k < MSG_COUNT; k++) {
			struct qmsg m;
			size_t len;
			msg_expected(seed, k, &m, &len);
			if (msgsnd(qid, &m, len, IPC_NOWAIT) < 0) {
				put("/tmp/result", "FAIL: msgsnd\n");
				return 3;
			}
		}
	}
	int ify = -1, feed = -1;
	if (use_inotify) {
		feed = open("/root/feed", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		ify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (feed < 0 || ify < 0 || inotify_add_watch(ify, "/root/feed", IN_MODIFY) < 0) {
			put("/tmp/result", "FAIL: inotify on /root/feed\n");
			return 3;
		}
		if (use_inotify == 2 && write(feed, "x\n", 2) != 2) {
			put("/tmp/result", "FAIL: write /root/feed\n");
			return 3;
		}
	}
	long long last_mono = 0, last_boot = 0;
	size_t cursor = 0;
	char buf[160];
	snprintf(buf, sizeof(buf), "shm-id %d\nmsg-id %d\n", id, qid);
	put("/tmp/ready", buf);
	for (unsigned long n = 1;; n++) {
		snprintf(buf, sizeof(buf), "%lu\n", n);
		put("/tmp/count", buf);
		if (mcount) {
			unsigned long back = 0;
			if (*mcount != n - 1) {
				snprintf(buf, sizeof(buf), "FAIL: memfd holds %lu, not the last count %lu\n", *mcount, n - 1);
				put("/tmp/result", buf);
				return 1;
			}
			*mcount = n;
			if (pread(mfd, &back, sizeof(back), 0) != sizeof(back) || back != n) {
				snprintf(buf, sizeof(buf), "FAIL: memfd fd reads %lu, the mapping holds %lu\n", back, n);
				put("/tmp/result", buf);
				return 1;
			}
		}
		if (mono_min >= 0 || boot_min >= 0) {
			long long mono = clock_ns(CLOCK_MONOTONIC), boot = clock_ns(CLOCK_BOOTTIME);
			const char *bad = mono < last_mono ? "CLOCK_MONOTONIC went back" : boot < last_boot ? "CLOCK_BOOTTIME went back"
				: mono < mono_min ? "CLOCK_MONOTONIC is below the time namespace offset" : boot < boot_min ? "CLOCK_BOOTTIME is below the time namespace offset" : NULL;
			if (bad) {
				snprintf(buf, sizeof(buf), "FAIL: %s (%lld -> %lld, boottime %lld -> %lld)\n", bad, last_mono, mono, last_boot, boot);
				put("/tmp/result", buf);
				return 1;
			}
			last_mono = mono;
			last_boot = boot;
			snprintf(buf, sizeof(buf), "%lld %lld\n", mono, boot);
			put("/tmp/clock", buf);
		}
		if (qid >= 0 && !drained) {
			int drain = access("/tmp/drain", F_OK) == 0;
			for (int k = 0; k < MSG_COUNT; k++) {
				struct qmsg m;
				ssize_t got = drain ? msgrcv(qid, &m, sizeof(m.text), 0, IPC_NOWAIT) : msgrcv(qid, &m, sizeof(m.text), k, IPC_NOWAIT | MSG_COPY);
				const char *bad = msg_check(seed, k, &m, got);
				if (bad) {
					snprintf(buf, sizeof(buf), "FAIL: queued message %d %s (%s, errno %d)\n", k, bad, drain ? "receive" : "copy", got < 0 ? errno : 0);
					put("/tmp/result", buf);
					return 1;
				}
			}
			struct msqid_ds ds;
			if (msgctl(qid, IPC_STAT, &ds) < 0 || ds.msg_qnum != (drain ? 0 : MSG_COUNT) || ds.msg_qbytes != MSG_QBYTES) {
				put("/tmp/result", "FAIL: message queue count or byte limit changed\n");
				return 1;
			}
			if (drain) {
				drained = 1;
				snprintf(buf, sizeof(buf), "drained %d\n", MSG_COUNT);
				put("/tmp/drained", buf);
			}
		}
		if (use_inotify == 1 && n % 10 == 0 && write(feed, "x\n", 2) != 2) {
			put("/tmp/result", "FAIL: write /root/feed\n");
			return 1;
		}
		if (use_inotify == 1 && n % 10 == 5 && n > 10) {
			char ev[512];
			ssize_t got = read(ify, ev, sizeof(ev));
			if (got < (ssize_t)sizeof(struct inotify_event) || !(((struct inotify_event *)ev)->mask & IN_MODIFY)) {
				snprintf(buf, sizeof(buf), "FAIL: no IN_MODIFY 5 ticks after a write to /root/feed (tick %lu, read %zd, errno %d)\n", n, got, got < 0 ? errno : 0);
				put("/tmp/result", buf);
				return 1;
			}
		}
		for (size_t i = 0; i < bytes; i += 4096)
			if (p[i] != pattern(seed, i)) {
				snprintf(buf, sizeof(buf), "FAIL: shm byte %zu changed\n", i);
				put("/tmp/result", buf);
				return 1;
			}
		/* 64 pages of the anonymous memory per tick, wrapping around. */
		for (int k = 0; mem && k < 64; k++, cursor = (cursor + 4096) % mem_bytes)
			if (mem[cursor] != mem_pattern(seed, cursor) || mem[cursor + 4095] != mem_pattern(seed, cursor + 4095)) {
				snprintf(buf, sizeof(buf), "FAIL: memory byte %zu changed\n", cursor);
				put("/tmp/result", buf);
				return 1;
			}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}
