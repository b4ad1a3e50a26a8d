#ifndef GODWIT_REGS_H
#define GODWIT_REGS_H

#include <sys/user.h>

#include "helper.h"

int regs_get(struct helper *h, int tid, struct user_regs_struct *regs);
int regs_set(struct helper *h, int tid, const struct user_regs_struct *regs);
/* Rewrites a thread stopped in an interrupted syscall the way CRIU does at dump time; returns E_RestartKind_*. */
int regs_normalise_restart(struct user_regs_struct *r);

#endif
