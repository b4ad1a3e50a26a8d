/*
 * godwit-nsutil: reads and writes the content of a process's uts and ipc namespaces from inside them.
 * The namespace is entered with setns(2) by this single-threaded process (Node cannot setns safely), so
 * what the kernel shows through uname(2), shmctl/semctl and /proc/sys/kernel is the target's own view.
 *
 *   godwit-nsutil uts-get PID                 -> "nodename\ndomainname\n"
 *   godwit-nsutil uts-set PID NODE DOMAIN
 *   godwit-nsutil ipc-dump PID                -> stream (below) on stdout
 *   godwit-nsutil ipc-restore PID             <- stream on stdin, objects recreated with their ids
 *   godwit-nsutil mnt-build PID               <- mount script on stdin, run in PID's mount namespace
 *   godwit-nsutil time-get PID                -> "MONOTONIC_NS BOOTTIME_NS\n": the clocks as PID's time namespace shows them
 *   godwit-nsutil ipc-vars-get PID            -> "NAME VALUE...\n" per IPC sysctl of PID's ipc namespace
 *   godwit-nsutil ipc-vars-set PID            <- the same lines on stdin, written into PID's ipc namespace
 *   godwit-nsutil mq-list PID                 -> the names of the POSIX message queues of PID's ipc namespace
 *
 * Stream: one header line per object, then its data; "end\n" last.
 *   shm KEY ID MODE UID GID CUID CGID SIZE\n   followed by SIZE raw bytes (the segment)
 *   sem KEY ID MODE UID GID CUID CGID NSEMS V0 V1 ...\n
 *   msg KEY ID MODE UID GID CUID CGID QBYTES QNUM\n   then QNUM times "MTYPE SIZE\n" + SIZE raw bytes, in queue order
 * Errors: one line on stderr "godwit-nsutil: SYSCALL(WHAT): pid P: strerror", exit 1; bad usage exit 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* Largest segment or semaphore set this tool copies: bounds memory on a corrupt stream (1 GiB of shm is
 * far beyond what the container scenarios hold; a bigger one belongs in the page-image path). */
#define MAX_SHM_BYTES (1ull << 30)
#define MAX_NSEMS 32000 /* SEMMSL's kernel ceiling */
/* Largest single queued message copied: msgmax defaults to 8 KiB; a namespace that raised it past 16 MiB
 * is refused rather than given an unbounded buffer. */
#define MAX_MSG_BYTES (16u << 20)
/* Messages per queue: msgmnb (16 KiB by default) bounds a queue's bytes, and a message may be empty, so the
 * kernel's count is bounded only by msgmnb too; a corrupt stream must not make us loop for ever. */
#define MAX_QNUM (1u << 20)

#ifndef MSG_COPY
#define MSG_COPY 040000 /* linux/msg.h: read by index without removing (needs CONFIG_CHECKPOINT_RESTORE) */
#endif

/* The buffer msgsnd/msgrcv take: the type, then the bytes. */
struct msg_buf {
	long mtype;
	char mtext[];
};

struct ctx {
	int pid;
	int err;              /* errno of the first failure */
	const char *syscall;  /* which call failed */
	char what[160];       /* what it concerned */
};

static int fail(struct ctx *c, const char *sc, int e, const char *fmt, ...)
{
	if (!c->syscall) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->what, sizeof(c->what), fmt, ap);
		va_end(ap);
		c->syscall = sc;
		c->err = e;
	}
	return -1;
}

static int enter_ns(struct ctx *c, const char *kind, int nstype)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", c->pid, kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(c, "open", errno, "%s", path);
	int r = setns(fd, nstype);
	int e = errno;
	close(fd);
	if (r < 0)
		return fail(c, "setns", e, "%s", path);
	return 0;
}

/* A small /proc file's text, NUL-terminated in buf (an empty read is EIO: these files always hold a value). */
static int read_small(struct ctx *c, const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(c, "open", errno, "%s", path);
	ssize_t n = read(fd, buf, size - 1);
	int e = errno;
	close(fd);
	if (n <= 0)
		return fail(c, "read", n < 0 ? e : EIO, "%s", path);
	buf[n] = 0;
	return 0;
}

static int read_sysctl(struct ctx *c, const char *name, long *v)
{
	char path[96], buf[32];
	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	if (read_small(c, path, buf, sizeof(buf)) < 0)
		return -1;
	*v = strtol(buf, NULL, 10);
	return 0;
}

static int write_sysctl(struct ctx *c, const char *name, long v)
{
	char path[96], buf[32];
	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(c, "open", errno, "%s", path);
	int n = snprintf(buf, sizeof(buf), "%ld", v);
	ssize_t w = write(fd, buf, n);
	int e = errno;
	close(fd);
	if (w != n)
		return fail(c, "write", w < 0 ? e : EIO, "%s", path);
	return 0;
}

static int uts_get(struct ctx *c)
{
	struct utsname u;
	if (enter_ns(c, "uts", CLONE_NEWUTS) < 0)
		return -1;
	if (uname(&u) < 0)
		return fail(c, "uname", errno, "uts namespace");
	printf("%s\n%s\n", u.nodename, u.domainname);
	return 0;
}

static int uts_set(struct ctx *c, const char *node, const char *domain)
{
	if (enter_ns(c, "uts", CLONE_NEWUTS) < 0)
		return -1;
	if (sethostname(node, strlen(node)) < 0)
		return fail(c, "sethostname", errno, "%s", node);
	if (setdomainname(domain, strlen(domain)) < 0)
		return fail(c, "setdomainname", errno, "%s", domain);
	return 0;
}

static void put_perm(const struct ipc_perm *p, int id)
{
	printf(" %d %d %o %u %u %u %u", (int)p->__key, id, p->mode & 0777, p->uid, p->gid, p->cuid, p->cgid);
}

static int dump_shm(struct ctx *c)
{
	struct shm_info info;
	int max = shmctl(0, SHM_INFO, (struct shmid_ds *)&info);
	if (max < 0)
		return fail(c, "shmctl", errno, "SHM_INFO");
	for (int i = 0; i <= max; i++) {
		struct shmid_ds ds;
		int id = shmctl(i, SHM_STAT, &ds);
		if (id < 0) {
			if (errno == EINVAL || errno == EIDRM)
				continue; /* an unused slot */
			return fail(c, "shmctl", errno, "SHM_STAT index %d", i);
		}
		void *p = shmat(id, NULL, SHM_RDONLY);
		if (p == (void *)-1)
			return fail(c, "shmat", errno, "shm id %d", id);
		printf("shm");
		put_perm(&ds.shm_perm, id);
		printf(" %zu\n", (size_t)ds.shm_segsz);
		size_t n = fwrite(p, 1, ds.shm_segsz, stdout);
		shmdt(p);
		if (n != ds.shm_segsz)
			return fail(c, "write", EIO, "stdout");
	}
	return 0;
}

static int dump_sem(struct ctx *c)
{
	struct seminfo info;
	int max = semctl(0, 0, SEM_INFO, &info);
	if (max < 0)
		return fail(c, "semctl", errno, "SEM_INFO");
	for (int i = 0; i <= max; i++) {
		struct semid_ds ds;
		int id = semctl(i, 0, SEM_STAT, &ds);
		if (id < 0) {
			if (errno == EINVAL || errno == EIDRM)
				continue;
			return fail(c, "semctl", errno, "SEM_STAT index %d", i);
		}
		unsigned short *v = calloc(ds.sem_nsems ? ds.sem_nsems : 1, sizeof(*v));
		if (!v)
			return fail(c, "calloc", ENOMEM, "%lu semaphores", (unsigned long)ds.sem_nsems);
		if (semctl(id, 0, GETALL, v) < 0) {
			int e = errno;
			free(v);
			return fail(c, "semctl", e, "GETALL sem id %d", id);
		}
		printf("sem");
		put_perm(&ds.sem_perm, id);
		printf(" %lu", (unsigned long)ds.sem_nsems);
		for (unsigned long k = 0; k < ds.sem_nsems; k++)
			printf(" %u", v[k]);
		printf("\n");
		free(v);
	}
	return 0;
}

/* Every queued message of one queue, copied by index (MSG_COPY) so the queue is left as it was. */
static int dump_msg_queue(struct ctx *c, int id, unsigned long qnum, struct msg_buf *m, size_t max)
{
	for (unsigned long k = 0; k < qnum; k++) {
		ssize_t n = msgrcv(id, m, max, (long)k, IPC_NOWAIT | MSG_COPY);
		if (n < 0) {
			if (errno == ENOSYS)
				return fail(c, "msgrcv", errno, "MSG_COPY of msg id %d: the kernel lacks CONFIG_CHECKPOINT_RESTORE", id);
			return fail(c, "msgrcv", errno, "MSG_COPY of message %lu of msg id %d", k, id);
		}
		printf("%ld %zd\n", m->mtype, n);
		if (fwrite(m->mtext, 1, (size_t)n, stdout) != (size_t)n)
			return fail(c, "write", EIO, "stdout");
	}
	return 0;
}

static int dump_msg(struct ctx *c)
{
	struct msginfo info;
	int max = msgctl(0, MSG_INFO, (struct msqid_ds *)&info);
	if (max < 0)
		return fail(c, "msgctl", errno, "MSG_INFO");
	long msgmax;
	if (read_sysctl(c, "msgmax", &msgmax) < 0)
		return -1;
	if (msgmax < 0 || (unsigned long)msgmax > MAX_MSG_BYTES)
		return fail(c, "msgrcv", EFBIG, "kernel.msgmax is %ld, over the %u bytes this tool copies", msgmax, MAX_MSG_BYTES);
	struct msg_buf *m = malloc(sizeof(*m) + (size_t)msgmax + 1);
	if (!m)
		return fail(c, "malloc", ENOMEM, "%ld-byte message buffer", msgmax);
	int rc = 0;
	for (int i = 0; i <= max && rc == 0; i++) {
		struct msqid_ds ds;
		int id = msgctl(i, MSG_STAT, &ds);
		if (id < 0) {
			if (errno == EINVAL || errno == EIDRM)
				continue;
			rc = fail(c, "msgctl", errno, "MSG_STAT index %d", i);
			break;
		}
		printf("msg");
		put_perm(&ds.msg_perm, id);
		printf(" %lu %lu\n", (unsigned long)ds.msg_qbytes, (unsigned long)ds.msg_qnum);
		rc = dump_msg_queue(c, id, ds.msg_qnum, m, (size_t)msgmax + 1);
	}
	free(m);
	return rc;
}

static int ipc_dump(struct ctx *c)
{
	if (enter_ns(c, "ipc", CLONE_NEWIPC) < 0 || dump_shm(c) < 0 || dump_sem(c) < 0 || dump_msg(c) < 0)
		return -1;
	printf("end\n");
	if (fflush(stdout) != 0)
		return fail(c, "write", errno, "stdout");
	return 0;
}

struct desc {
	int key, id;
	unsigned mode, uid, gid, cuid, cgid;
};

static int set_perm(struct ctx *c, struct ipc_perm *p, const struct desc *d)
{
	(void)c;
	p->uid = d->uid;
	p->gid = d->gid;
	p->mode = d->mode;
	return 0;
}

/*
 * The kernel records the creator (cuid/cgid) from the caller's effective ids at *get() time, and IPC_SET cannot
 * change them: the object is made with the creator's ids as our effective ones, then we are root again (the
 * real and saved uid stay 0, so switching back is allowed).
 */
static int become_creator(struct ctx *c, const struct desc *d)
{
	if (setresgid(-1, d->cgid, -1) < 0)
		return fail(c, "setresgid", errno, "creator gid %u", d->cgid);
	if (setresuid(-1, d->cuid, -1) < 0)
		return fail(c, "setresuid", errno, "creator uid %u", d->cuid);
	return 0;
}

static int back_to_root(struct ctx *c)
{
	if (setresuid(-1, 0, -1) < 0)
		return fail(c, "setresuid", errno, "back to uid 0");
	if (setresgid(-1, 0, -1) < 0)
		return fail(c, "setresgid", errno, "back to gid 0");
	return 0;
}

static int restore_shm(struct ctx *c, const struct desc *d, size_t size)
{
	if (size > MAX_SHM_BYTES)
		return fail(c, "read", EFBIG, "shm id %d: %zu bytes is over the %llu limit", d->id, size, MAX_SHM_BYTES);
	if (write_sysctl(c, "shm_next_id", d->id) < 0)
		return -1;
	if (become_creator(c, d) < 0)
		return -1;
	int id = shmget(d->key, size, d->mode | IPC_CREAT | IPC_EXCL);
	int e = errno;
	if (back_to_root(c) < 0)
		return -1;
	if (id < 0)
		return fail(c, "shmget", e, "key %d id %d size %zu", d->key, d->id, size);
	if (id != d->id)
		return fail(c, "shmget", EEXIST, "wanted id %d, the kernel gave %d", d->id, id);
	char *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		return fail(c, "shmat", errno, "shm id %d", id);
	size_t got = fread(p, 1, size, stdin);
	shmdt(p);
	if (got != size)
		return fail(c, "read", EIO, "shm id %d: stream ended after %zu of %zu bytes", id, got, size);
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds) < 0)
		return fail(c, "shmctl", errno, "IPC_STAT id %d", id);
	set_perm(c, &ds.shm_perm, d);
	if (shmctl(id, IPC_SET, &ds) < 0)
		return fail(c, "shmctl", errno, "IPC_SET id %d", id);
	return 0;
}

static int restore_sem(struct ctx *c, const struct desc *d, unsigned long nsems)
{
	if (nsems == 0 || nsems > MAX_NSEMS)
		return fail(c, "read", EINVAL, "sem id %d: %lu semaphores", d->id, nsems);
	unsigned short *v = calloc(nsems, sizeof(*v));
	if (!v)
		return fail(c, "calloc", ENOMEM, "%lu semaphores", nsems);
	int rc = -1;
	for (unsigned long k = 0; k < nsems; k++) {
		unsigned x;
		if (scanf(" %u", &x) != 1 || x > 32767) {
			fail(c, "read", EINVAL, "sem id %d: value %lu missing or out of range", d->id, k);
			goto out;
		}
		v[k] = x;
	}
	if (write_sysctl(c, "sem_next_id", d->id) < 0)
		goto out;
	if (become_creator(c, d) < 0)
		goto out;
	int id = semget(d->key, nsems, d->mode | IPC_CREAT | IPC_EXCL);
	int e = errno;
	if (back_to_root(c) < 0)
		goto out;
	if (id < 0) {
		fail(c, "semget", e, "key %d id %d", d->key, d->id);
		goto out;
	}
	if (id != d->id) {
		fail(c, "semget", EEXIST, "wanted id %d, the kernel gave %d", d->id, id);
		goto out;
	}
	if (semctl(id, 0, SETALL, v) < 0) {
		fail(c, "semctl", errno, "SETALL id %d", id);
		goto out;
	}
	struct semid_ds ds;
	if (semctl(id, 0, IPC_STAT, &ds) < 0) {
		fail(c, "semctl", errno, "IPC_STAT id %d", id);
		goto out;
	}
	set_perm(c, &ds.sem_perm, d);
	if (semctl(id, 0, IPC_SET, &ds) < 0) {
		fail(c, "semctl", errno, "IPC_SET id %d", id);
		goto out;
	}
	rc = 0;
out:
	free(v);
	return rc;
}

/* One queue with its id, permissions, byte limit and messages in their order. */
static int restore_msg(struct ctx *c, const struct desc *d, unsigned long qbytes, unsigned long qnum)
{
	if (qnum > MAX_QNUM)
		return fail(c, "read", EINVAL, "msg id %d: %lu messages", d->id, qnum);
	if (write_sysctl(c, "msg_next_id", d->id) < 0)
		return -1;
	if (become_creator(c, d) < 0)
		return -1;
	int id = msgget(d->key, (int)d->mode | IPC_CREAT | IPC_EXCL);
	int e = errno;
	if (back_to_root(c) < 0)
		return -1;
	if (id < 0)
		return fail(c, "msgget", e, "key %d id %d", d->key, d->id);
	if (id != d->id)
		return fail(c, "msgget", EEXIST, "wanted id %d, the kernel gave %d", d->id, id);
	/* The byte limit first, or a queue that held more than msgmnb could not take its messages back. Raising
	 * it past msgmnb needs CAP_SYS_RESOURCE, which root here lacks: say so plainly. */
	struct msqid_ds ds;
	long mnb;
	if (read_sysctl(c, "msgmnb", &mnb) < 0)
		return -1;
	if (msgctl(id, IPC_STAT, &ds) < 0)
		return fail(c, "msgctl", errno, "IPC_STAT id %d", id);
	ds.msg_qbytes = qbytes;
	set_perm(c, &ds.msg_perm, d);
	if (msgctl(id, IPC_SET, &ds) < 0)
		return fail(c, "msgctl", errno, "IPC_SET id %d qbytes %lu (kernel.msgmnb here is %ld; a larger limit needs CAP_SYS_RESOURCE)", id, qbytes, mnb);
	struct msg_buf *m = NULL;
	size_t cap = 0;
	int rc = 0;
	for (unsigned long k = 0; k < qnum; k++) {
		long type;
		size_t size;
		if (scanf(" %ld %zu", &type, &size) != 2 || getchar() != '\n') {
			rc = fail(c, "read", EINVAL, "msg id %d: bad header of message %lu", d->id, k);
			break;
		}
		if (type <= 0 || size > MAX_MSG_BYTES) {
			rc = fail(c, "read", EINVAL, "msg id %d message %lu: type %ld size %zu", d->id, k, type, size);
			break;
		}
		if (size + 1 > cap) {
			struct msg_buf *n = realloc(m, sizeof(*m) + size + 1);
			if (!n) {
				rc = fail(c, "realloc", ENOMEM, "%zu-byte message", size);
				break;
			}
			m = n;
			cap = size + 1;
		}
		m->mtype = type;
		if (fread(m->mtext, 1, size, stdin) != size) {
			rc = fail(c, "read", EIO, "msg id %d message %lu: stream ended inside its %zu bytes", d->id, k, size);
			break;
		}
		/* IPC_NOWAIT: a queue that cannot take it (msgmax, qbytes) fails now instead of blocking for ever. */
		if (msgsnd(id, m, size, IPC_NOWAIT) < 0) {
			rc = fail(c, "msgsnd", errno, "msg id %d message %lu (type %ld, %zu bytes)", d->id, k, type, size);
			break;
		}
	}
	free(m);
	return rc;
}

static int ipc_restore(struct ctx *c)
{
	if (enter_ns(c, "ipc", CLONE_NEWIPC) < 0)
		return -1;
	for (;;) {
		char kind[8];
		struct desc d;
		if (scanf("%7s", kind) != 1)
			return fail(c, "read", EINVAL, "stream ended without \"end\"");
		if (!strcmp(kind, "end"))
			return 0;
		if (strcmp(kind, "shm") && strcmp(kind, "sem") && strcmp(kind, "msg"))
			return fail(c, "read", EINVAL, "unknown object kind \"%s\"", kind);
		if (scanf(" %d %d %o %u %u %u %u", &d.key, &d.id, &d.mode, &d.uid, &d.gid, &d.cuid, &d.cgid) != 7)
			return fail(c, "read", EINVAL, "bad %s header", kind);
		if (!strcmp(kind, "shm")) {
			size_t size;
			if (scanf(" %zu", &size) != 1 || getchar() != '\n')
				return fail(c, "read", EINVAL, "bad shm size for id %d", d.id);
			if (restore_shm(c, &d, size) < 0)
				return -1;
		} else if (!strcmp(kind, "msg")) {
			unsigned long qbytes, qnum;
			if (scanf(" %lu %lu", &qbytes, &qnum) != 2 || getchar() != '\n')
				return fail(c, "read", EINVAL, "bad msg qbytes/qnum for id %d", d.id);
			if (restore_msg(c, &d, qbytes, qnum) < 0)
				return -1;
		} else {
			unsigned long n;
			if (scanf(" %lu", &n) != 1)
				return fail(c, "read", EINVAL, "bad sem count for id %d", d.id);
			if (restore_sem(c, &d, n) < 0)
				return -1;
		}
	}
}

/* Bounds the mount script: a container's mount table is a few KiB. */
#define MAX_SCRIPT (1u << 20)

static int mkdir_p(struct ctx *c, const char *path, mode_t mode)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return fail(c, "mkdir", ENAMETOOLONG, "%s", path);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || !*p) {
			char saved = *p;
			*p = 0;
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return fail(c, "mkdir", errno, "%s", buf);
			*p = saved;
			if (!saved)
				return 0;
		}
	}
}

/*
 * The mount script: records of NUL-terminated fields.
 *   mount SOURCE TARGET FSTYPE FLAGS DATA   (empty SOURCE/FSTYPE/DATA = NULL; FLAGS decimal MS_*)
 *   mkdir PATH                              (mkdir -p, mode 0755)
 *   touch PATH                              (an empty file to bind a file onto)
 *   pivot NEWROOT                           (pivot_root(NEWROOT, NEWROOT) and detach the old root below it)
 * pivot_root changes the root of every process of the namespace that had the old one: the holder's too, so
 * whoever joins the namespace afterwards starts in NEWROOT.
 */
static int mnt_build(struct ctx *c)
{
	if (enter_ns(c, "mnt", CLONE_NEWNS) < 0)
		return -1;
	char *buf = malloc(MAX_SCRIPT + 1);
	if (!buf)
		return fail(c, "malloc", ENOMEM, "mount script");
	size_t len = 0;
	for (;;) {
		ssize_t r = read(0, buf + len, MAX_SCRIPT + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(c, "read", errno, "mount script");
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > MAX_SCRIPT)
			return fail(c, "read", EFBIG, "mount script over %u bytes", MAX_SCRIPT);
	}
	char *p = buf, *end = buf + len;
	const char *f[6];
	while (p < end) {
		int nf = 0;
		const char *op = p;
		int want = !strcmp(op, "mount") ? 6 : 2;
		for (; nf < want; nf++) {
			char *z = memchr(p, 0, (size_t)(end - p));
			if (!z)
				return fail(c, "parse", EINVAL, "mount script: truncated %s record", op);
			f[nf] = p;
			p = z + 1;
		}
		if (!strcmp(op, "mount")) {
			unsigned long flags = strtoul(f[4], NULL, 10);
			if (mount(f[1][0] ? f[1] : NULL, f[2], f[3][0] ? f[3] : NULL, flags, f[5][0] ? f[5] : NULL) < 0)
				return fail(c, "mount", errno, "%s on %s (%s, flags 0x%lx)", f[1], f[2], f[3], flags);
		} else if (!strcmp(op, "mkdir")) {
			if (mkdir_p(c, f[1], 0755) < 0)
				return -1;
		} else if (!strcmp(op, "touch")) {
			int fd = open(f[1], O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
			if (fd < 0)
				return fail(c, "open", errno, "%s", f[1]);
			close(fd);
		} else if (!strcmp(op, "pivot")) {
			if (chdir(f[1]) < 0)
				return fail(c, "chdir", errno, "%s", f[1]);
			if (syscall(SYS_pivot_root, ".", ".") < 0)
				return fail(c, "pivot_root", errno, "%s", f[1]);
			if (umount2(".", MNT_DETACH) < 0)
				return fail(c, "umount2", errno, "the old root under %s", f[1]);
			if (chdir("/") < 0)
				return fail(c, "chdir", errno, "/");
		} else
			return fail(c, "parse", EINVAL, "mount script: unknown op %.16s", op);
	}
	free(buf);
	return 0;
}

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* The clocks inside PID's time namespace (what CRIU's timens.img holds): setns applies to the caller at once. */
static int time_get(struct ctx *c)
{
	if (enter_ns(c, "time", CLONE_NEWTIME) < 0)
		return -1;
	struct timespec m, b;
	if (clock_gettime(CLOCK_MONOTONIC, &m) < 0 || clock_gettime(CLOCK_BOOTTIME, &b) < 0)
		return fail(c, "clock_gettime", errno, "time namespace");
	printf("%lld %lld\n", (long long)m.tv_sec * 1000000000ll + m.tv_nsec, (long long)b.tv_sec * 1000000000ll + b.tv_nsec);
	return 0;
}

/*
 * The ipc namespace's sysctls (CRIU's ipc_var_entry): /proc/sys shows the ones of the reader's ipc namespace, so
 * after setns the host's /proc/sys is the target's. Paths are relative to /proc/sys.
 */
static const char *const ipc_vars[] = {
	"kernel/sem", "kernel/msgmax", "kernel/msgmnb", "kernel/msgmni", "kernel/auto_msgmni", "kernel/shmmax",
	"kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced", "fs/mqueue/queues_max", "fs/mqueue/msg_max",
	"fs/mqueue/msgsize_max", "fs/mqueue/msg_default", "fs/mqueue/msgsize_default",
};
#define N_IPC_VARS (sizeof(ipc_vars) / sizeof(ipc_vars[0]))

static int ipc_vars_get(struct ctx *c)
{
	if (enter_ns(c, "ipc", CLONE_NEWIPC) < 0)
		return -1;
	for (size_t i = 0; i < N_IPC_VARS; i++) {
		char path[64], buf[128];
		snprintf(path, sizeof(path), "/proc/sys/%s", ipc_vars[i]);
		if (read_small(c, path, buf, sizeof(buf)) < 0)
			return -1;
		for (char *q = buf; *q; q++)
			if (*q == '\t' || *q == '\n')
				*q = ' ';
		printf("%s %s\n", ipc_vars[i], buf);
	}
	return 0;
}

/*
 * The ipc sysctls of a namespace owned by a user namespace are writable by that namespace's root only (the
 * kernel's ipc_permissions gives everyone else, the host's root included, the "other" bits): join the owning
 * user namespace and become its root first, then the ipc namespace.
 */
static int enter_ipc_as_owner(struct ctx *c)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/ipc", c->pid);
	int ipc = open(path, O_RDONLY | O_CLOEXEC);
	if (ipc < 0)
		return fail(c, "open", errno, "%s", path);
	int rc = 0;
	int user = ioctl(ipc, NS_GET_USERNS);
	struct stat theirs, ours;
	if (user < 0)
		rc = fail(c, "ioctl", errno, "NS_GET_USERNS of %s", path);
	else if (fstat(user, &theirs) < 0 || stat("/proc/self/ns/user", &ours) < 0)
		rc = fail(c, "stat", errno, "user namespaces");
	else if (theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev) {
		if (setns(user, CLONE_NEWUSER) < 0)
			rc = fail(c, "setns", errno, "the user namespace owning %s", path);
		else if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
			rc = fail(c, "setresuid", errno, "root of the user namespace owning %s (no mapping for 0?)", path);
	}
	if (user >= 0)
		close(user);
	if (rc == 0 && setns(ipc, CLONE_NEWIPC) < 0)
		rc = fail(c, "setns", errno, "%s", path);
	close(ipc);
	return rc;
}

/* Lines "NAME VALUE..." for names of ipc_vars only (nothing else can be written through this). */
static int ipc_vars_set(struct ctx *c)
{
	if (enter_ipc_as_owner(c) < 0)
		return -1;
	char line[256];
	while (fgets(line, sizeof(line), stdin)) {
		char *sp = strchr(line, ' ');
		if (!sp)
			return fail(c, "parse", EINVAL, "ipc vars: line without a value");
		*sp = 0;
		size_t i = 0;
		while (i < N_IPC_VARS && strcmp(ipc_vars[i], line))
			i++;
		if (i == N_IPC_VARS)
			return fail(c, "parse", EINVAL, "ipc vars: %.64s is not an ipc namespace sysctl", line);
		char path[64];
		snprintf(path, sizeof(path), "/proc/sys/%s", ipc_vars[i]);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return fail(c, "open", errno, "%s", path);
		size_t len = strlen(sp + 1);
		ssize_t w = write(fd, sp + 1, len);
		int e = errno;
		close(fd);
		if (w != (ssize_t)len) {
			sp[1 + strcspn(sp + 1, "\n")] = 0;
			return fail(c, "write", w < 0 ? e : EIO, "%s = %s", path, sp + 1);
		}
	}
	return 0;
}

/*
 * POSIX message queues live in the ipc namespace whether or not anything mounts an mqueue filesystem: mount a
 * fresh one (it shows the mounter's ipc namespace) in a private mount namespace of our own, and list it.
 */
static int mq_list(struct ctx *c)
{
	if (enter_ns(c, "ipc", CLONE_NEWIPC) < 0)
		return -1;
	if (unshare(CLONE_NEWNS) < 0)
		return fail(c, "unshare", errno, "CLONE_NEWNS");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return fail(c, "mount", errno, "/ private");
	/* Over /tmp, in our private mount namespace only: nothing is created, and the mount goes with us. */
	const char *dir = "/tmp";
	int rc = 0;
	if (mount("mqueue", dir, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		rc = fail(c, "mount", errno, "mqueue on %s", dir);
	DIR *d = rc ? NULL : opendir(dir);
	if (!rc && !d)
		rc = fail(c, "opendir", errno, "%s", dir);
	for (struct dirent *e; d && (e = readdir(d));)
		if (e->d_name[0] != '.')
			printf("%s\n", e->d_name);
	if (d)
		closedir(d);
	return rc;
}

static int usage(void)
{
	fprintf(stderr, "usage: godwit-nsutil uts-get PID | uts-set PID NODENAME DOMAINNAME | ipc-dump PID | ipc-restore PID | mnt-build PID | time-get PID | ipc-vars-get PID | ipc-vars-set PID | mq-list PID\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct ctx c = { 0 };
	if (argc < 3)
		return usage();
	char *end;
	long pid = strtol(argv[2], &end, 10);
	if (*end || pid <= 0 || pid > 4194304)
		return usage();
	c.pid = (int)pid;
	int r;
	if (!strcmp(argv[1], "uts-get") && argc == 3)
		r = uts_get(&c);
	else if (!strcmp(argv[1], "uts-set") && argc == 5)
		r = uts_set(&c, argv[3], argv[4]);
	else if (!strcmp(argv[1], "ipc-dump") && argc == 3)
		r = ipc_dump(&c);
	else if (!strcmp(argv[1], "ipc-restore") && argc == 3)
		r = ipc_restore(&c);
	else if (!strcmp(argv[1], "mq-list") && argc == 3)
		r = mq_list(&c);
	else if (!strcmp(argv[1], "ipc-vars-get") && argc == 3)
		r = ipc_vars_get(&c);
	else if (!strcmp(argv[1], "ipc-vars-set") && argc == 3)
		r = ipc_vars_set(&c);
	else if (!strcmp(argv[1], "time-get") && argc == 3)
		r = time_get(&c);
	else if (!strcmp(argv[1], "mnt-build") && argc == 3)
		r = mnt_build(&c);
	else
		return usage();
	if (r < 0) {
		fprintf(stderr, "godwit-nsutil: %s(%s): pid %d: %s\n", c.syscall, c.what, c.pid, strerror(c.err));
		return 1;
	}
	return 0;
}
