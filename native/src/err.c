#define _GNU_SOURCE
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gw_fail(struct gw_err *e, int errnum, const char *syscall, int pid, const char *fmt, ...)
{
	if (e->errnum)
		return -1;
	e->errnum = errnum ? errnum : EIO; /* never report "failed" with errno 0 */
	e->syscall = syscall;
	e->pid = pid;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
	return -1;
}

void gw_note(struct gw_err *e, const char *fmt, ...)
{
	if (!e->errnum)
		return;
	size_t used = strlen(e->detail);
	if (used + 3 >= sizeof(e->detail))
		return;
	if (used) {
		memcpy(e->detail + used, "; ", 2);
		used += 2;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->detail + used, sizeof(e->detail) - used, fmt, ap);
	va_end(ap);
}

void gw_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
		*fd = -1;
	}
}

void gw_freep(void *p)
{
	free(*(void **)p);
}
