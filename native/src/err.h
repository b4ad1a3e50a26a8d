/* One error convention for the whole helper.
 *
 * A function that can fail returns -1 and records why in a struct gw_err it was given (errno, the syscall
 * that failed, the task it concerned and a short detail); it returns 0 (or a non-negative count) on success.
 * The first failure recorded wins: callers on the way up may add context with gw_note() but never overwrite
 * the cause. The control loop turns the record into a Response.error for TypeScript. */
#ifndef GODWIT_ERR_H
#define GODWIT_ERR_H

#include <errno.h>
#include <stddef.h>

struct gw_err {
	int errnum;          /* 0: no error recorded */
	const char *syscall; /* static string: "ptrace(PTRACE_SEIZE)", "process_vm_readv", ... */
	int pid;
	char detail[240];
};

/* Records errnum (if no error is recorded yet) and returns -1. */
int gw_fail(struct gw_err *e, int errnum, const char *syscall, int pid, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Same, with errnum taken from errno. */
#define gw_fail_errno(e, syscall, pid, ...) gw_fail((e), errno, (syscall), (pid), __VA_ARGS__)

/* Appends "; <context>" to the detail of a recorded error. */
void gw_note(struct gw_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void gw_clear(struct gw_err *e)
{
	e->errnum = 0;
	e->syscall = "";
	e->pid = 0;
	e->detail[0] = 0;
}

/* Cleanup attributes: a variable declared with one of these is released on every return path. */
void gw_closep(int *fd);
void gw_freep(void *p);
#define AUTO_CLOSE __attribute__((cleanup(gw_closep)))
#define AUTO_FREE __attribute__((cleanup(gw_freep)))

#endif
