/*
 * A container's time namespace on restore: the restorer makes a new one, sets its offsets so that the clocks
 * inside continue from the values dumped (CRIU's timens.img meaning: CLOCK_MONOTONIC and CLOCK_BOOTTIME as the
 * container saw them at dump time), and enters it before it forks any task. The offsets are relative to the
 * host's clocks, so the restorer's own offsets (if it runs in a time namespace itself) are taken off first.
 * Offsets can be written only before the first task enters the namespace, hence here, before any fork.
 */
#include "rst.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

#define NSEC 1000000000LL

static long long ts_ns(const struct timespec *t) { return (long long)t->tv_sec * NSEC + t->tv_nsec; }

/* The offsets of our own time namespace, from /proc/self/timens_offsets ("monotonic S NS" or "1 S NS"). */
static int own_offsets(int host_root, long long *mono, long long *boot, char *why, size_t n) {
  int fd = openat(host_root, "proc/self/timens_offsets", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return snprintf(why, n, "open /proc/self/timens_offsets: %s", strerror(errno)), -1;
  char buf[256];
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r < 0) return snprintf(why, n, "read /proc/self/timens_offsets: %s", strerror(errno)), -1;
  buf[r] = 0;
  *mono = *boot = 0;
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
    char name[32];
    long long s;
    long ns;
    if (sscanf(line, "%31s %lld %ld", name, &s, &ns) != 3) continue;
    if (!strcmp(name, "monotonic") || !strcmp(name, "1")) *mono = s * NSEC + ns;
    if (!strcmp(name, "boottime") || !strcmp(name, "7")) *boot = s * NSEC + ns;
  }
  return 0;
}

static void split(long long v, long long *sec, long *nsec) {
  *sec = v / NSEC;
  long long r = v % NSEC;
  if (r < 0) r += NSEC, (*sec)--;
  *nsec = (long)r;
}

int rst_enter_timens(int host_root, long long mono_ns, long long boot_ns, char *why, size_t n) {
  long long own_mono, own_boot;
  if (own_offsets(host_root, &own_mono, &own_boot, why, n) < 0) return -1;
  if (unshare(CLONE_NEWTIME) < 0) return snprintf(why, n, "unshare(CLONE_NEWTIME): %s", strerror(errno)), -1;
  struct timespec m, b;
  clock_gettime(CLOCK_MONOTONIC, &m);
  clock_gettime(CLOCK_BOOTTIME, &b);
  long long ms, bs;
  long mn, bn;
  split(mono_ns - (ts_ns(&m) - own_mono), &ms, &mn);
  split(boot_ns - (ts_ns(&b) - own_boot), &bs, &bn);
  char text[96];
  int len = snprintf(text, sizeof text, "%d %lld %ld\n%d %lld %ld\n", CLOCK_MONOTONIC, ms, mn, CLOCK_BOOTTIME, bs, bn);
  int fd = openat(host_root, "proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return snprintf(why, n, "open /proc/self/timens_offsets for writing: %s", strerror(errno)), -1;
  ssize_t w = write(fd, text, (size_t)len);
  int e = errno;
  close(fd);
  if (w != len)
    return snprintf(why, n, "write timens_offsets (monotonic %lld.%09ld s, boottime %lld.%09ld s): %s", ms, mn, bs, bn, w < 0 ? strerror(e) : "short write"), -1;
  int ns = openat(host_root, "proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC);
  if (ns < 0) return snprintf(why, n, "open /proc/self/ns/time_for_children: %s", strerror(errno)), -1;
  int r = setns(ns, CLONE_NEWTIME);
  e = errno;
  close(ns);
  if (r < 0) return snprintf(why, n, "setns(time_for_children): %s", strerror(e)), -1;
  return 0;
}
