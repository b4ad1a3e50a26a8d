/*
 * inotify-feed: a watcher (main) follows DIR/feed through an inotify watch, as `tail -F` does, while a writer (a
 * child) appends numbered records to it. Each record waits for the watcher's acknowledgement (a pipe) before the
 * next one is written, so an IN_MODIFY event lost on the way stalls the pair for good. The watcher reads its
 * events --lag-ms after poll() reports them (a debounce), and the writer waits --period-ms after each
 * acknowledgement: events are queued, not read yet, for lag / (lag + period) of the time, so a freeze often finds
 * one in flight, and a moment of running (longer than the lag, shorter than lag + period) always drains it.
 * Verify: the records read so far were 0, 1, 2, ... with no gap or repeat, and more keep arriving, each through
 * an event, within 5 s (the watch works and no event was lost).
 * --poll-forever 1: the watcher waits in poll() with no timeout until the verify request, and, as `tail -F` does,
 *   takes an EINTR without a signal for an error (a restore must enter an interrupted poll() again).
 * --never-read 1: the writer appends 3 records and the watcher never reads its inotify (a dump must refuse the
 *   events). Verify: all 3 events are still queued, IN_MODIFY on the watch, and the records are in the file.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define RECORD_LEN 11	/* "%010u\n" */
#define NEVER_READ_RECORDS 3
#define MS 1000000ull

static int append_record(int fd, unsigned n)
{
	char rec[RECORD_LEN + 1];
	snprintf(rec, sizeof(rec), "%010u\n", n);
	return write(fd, rec, RECORD_LEN) == RECORD_LEN ? 0 : -1;
}

/* The writer: a record, then the acknowledgement, then a pause; until the pipe closes (the watcher is gone). */
static void writer(int fd, int ack, long long period_ms, bool once)
{
	for (unsigned n = 0;; n++) {
		if (once && n == NEVER_READ_RECORDS)
			break;
		if (append_record(fd, n) < 0)
			_exit(3);
		if (once)
			continue;
		char c;
		ssize_t k;
		while ((k = read(ack, &c, 1)) < 0 && errno == EINTR)
			;
		if (k != 1)
			_exit(0);
		zt_sleep_ns((uint64_t)period_ms * MS);
	}
	for (;;)
		pause();
}

struct follower {
	int ify, wd, in, ack;
	unsigned next;		/* the record expected next */
	unsigned events;	/* IN_MODIFY events read */
	char carry[RECORD_LEN];
	size_t carried;
};

/* Reads what the events announced: every new byte of the feed, checked record by record. */
static int follow(struct zt *z, struct follower *f)
{
	char evbuf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(f->ify, evbuf, sizeof(evbuf));
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : zt_fail_sys(z, "read", "inotify");
	for (char *p = evbuf; p < evbuf + n;) {
		const struct inotify_event *e = (const void *)p;
		if (e->wd != f->wd || !(e->mask & IN_MODIFY))
			return zt_fail(z, "inotify: unexpected event wd %d mask 0x%x (watch %d)", e->wd, e->mask, f->wd), -1;
		f->events++;
		p += sizeof(*e) + e->len;
	}
	char buf[4096];
	ssize_t k;
	while ((k = read(f->in, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < k; i++) {
			f->carry[f->carried++] = buf[i];
			if (f->carried < RECORD_LEN)
				continue;
			char want[RECORD_LEN + 1];
			snprintf(want, sizeof(want), "%010u\n", f->next);
			if (memcmp(f->carry, want, RECORD_LEN))
				return zt_fail(z, "feed: record %.10s where %u was due", f->carry, f->next), -1;
			f->next++;
			f->carried = 0;
			if (write(f->ack, "a", 1) != 1 && errno != EPIPE)
				return zt_fail_sys(z, "write", "acknowledgement");
		}
	}
	return k < 0 ? zt_fail_sys(z, "read", "feed") : 0;
}

int main(int argc, char **argv)
{
	struct zt z;
	struct zt_opt opts[] = {
		{ "lag-ms", 150, 0, 10000, "the watcher reads its events this long after poll() reports them" },
		{ "period-ms", 100, 0, 10000, "the writer waits this long after each acknowledgement" },
		{ "never-read", 0, 0, 1, "1: the watcher never reads its events (3 stay queued)" },
		{ "poll-forever", 0, 0, 1, "1: poll() with no timeout; EINTR without a signal is a failure" },
	};
	zt_setup(&z, argc, argv, opts, 4, SIGUSR2);
	bool forever = opts[3].value;
	long long lag_ms = opts[0].value, period_ms = opts[1].value;
	bool never = opts[2].value;
	signal(SIGPIPE, SIG_IGN);

	char path[PATH_MAX];
	zt_path(&z, path, sizeof(path), "feed");
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	struct follower f = { .in = open(path, O_RDONLY | O_CLOEXEC) };
	if (out < 0 || f.in < 0)
		zt_setup_failed(&z, "open", path);
	f.ify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	f.wd = f.ify < 0 ? -1 : inotify_add_watch(f.ify, path, IN_MODIFY);
	if (f.wd < 0)
		zt_setup_failed(&z, "inotify_init1/inotify_add_watch", path);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		zt_setup_failed(&z, "pipe2", "acknowledgements");
	pid_t w = fork();
	if (w < 0)
		zt_setup_failed(&z, "fork", "writer");
	if (w == 0) {
		close(p[1]);
		close(f.ify);	/* the watch is the watcher's alone */
		close(f.in);
		writer(out, p[0], period_ms, never);
	}
	close(p[0]);
	close(out);
	f.ack = p[1];
	pid_t pids[] = { getpid(), w };
	zt_ready(&z, pids, 2);

	if (never) {
		zt_wait_sleeping(&z);
		int queued = 0;
		if (ioctl(f.ify, FIONREAD, &queued) < 0)
			zt_fail_sys(&z, "ioctl(FIONREAD)", "inotify");
		else if (queued <= 0)
			zt_fail(&z, "inotify: the events left unread are gone (%d bytes queued)", queued);
		else {
			struct pollfd pf = { .fd = f.ify, .events = POLLIN };
			if (poll(&pf, 1, 0) != 1)
				zt_fail(&z, "inotify: %d bytes queued but poll() says nothing to read", queued);
			follow(&z, &f);	/* the events are ours: every record is there */
			if (f.next != NEVER_READ_RECORDS || f.events == 0)
				zt_fail(&z, "feed: %u records through %u events, %d due", f.next, f.events, NEVER_READ_RECORDS);
		}
	} else {
		uint64_t deadline = 0;
		unsigned at_request = 0;
		while (!z.nfail) {
			if (zt_requested(&z) && !deadline) {
				deadline = zt_now_ns() + 5000 * MS;
				at_request = f.next;
			}
			if (deadline && f.next >= at_request + 3)
				break;
			if (deadline && zt_now_ns() > deadline) {
				zt_fail(&z, "feed: stalled at record %u (%u events): an event was lost, or the watch is gone", f.next,
					f.events);
				break;
			}
			struct pollfd pf = { .fd = f.ify, .events = POLLIN };
			int r = poll(&pf, 1, forever && !deadline ? -1 : 200);
			if (r < 0 && (errno != EINTR || (forever && !zt_signalled()))) {
				zt_fail_sys(&z, "poll", "inotify (no timeout, no signal)");
				break;
			}
			if (r <= 0)
				continue;
			if (lag_ms)
				zt_sleep_ns((uint64_t)lag_ms * MS);
			follow(&z, &f);
		}
	}
	kill(w, SIGKILL);
	waitpid(w, NULL, 0);
	return zt_finish(&z);
}
