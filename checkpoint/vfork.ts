/**
 * Threads waiting in vfork() (or clone with CLONE_VFORK, as posix_spawn, dash and Python's subprocess do) share
 * their memory with the child until that child execs or exits. Such a tree cannot be dumped as it is: restored as
 * two separate copies, the parent would run its vfork again. Worse, the wait is killable only: a parent in it does
 * not stop for PTRACE_INTERRUPT until the child has exec'd, and a child seized before its exec never does, so the
 * freeze would wait for its timeout. The wait lasts microseconds to a few ms, so preflight and every seize round
 * wait it out first (lastingVforks); one that outlasts that is refused by preflight, and one the freeze meets
 * (or a seize that timed out on one) has the tree let go and frozen again (checkpoint/freeze.ts).
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { sleepSync } from '../util/sleep';
import type { Tree } from './tree';

const SYS_CLONE = 56;
const SYS_VFORK = 58;
const SYS_CLONE3 = 435;
const CLONE_VFORK = 0x4000n;

/**
 * Whether thread `tid` of `pid` is blocked in vfork() now. clone3's flags sit in memory, not in the registers: a
 * thread blocked inside clone3 is taken to be such a wait (a plain clone3 returns at once). A running thread's
 * syscall file says "running": not in a vfork wait at this instant.
 */
export function inVfork(pid: number, tid: number): boolean {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'latin1');
  } catch {
    return false; // gone
  }
  const f = text.trim().split(' ');
  const nr = Number(f[0]);
  return nr === SYS_VFORK || nr === SYS_CLONE3 || (nr === SYS_CLONE && (BigInt(f[1] ?? '0') & CLONE_VFORK) !== 0n);
}

/**
 * How long a vfork wait is given to end before it counts (ms, polled every ms): it lasts from the fork to the
 * child's exec, microseconds to a few ms; one that lasts longer is not about to end.
 */
const VFORK_WAIT_MS = 100;

export const VFORK_REFUSAL =
  'waiting in vfork() for a child that shares its memory until it execs or exits (not supported: retry once the child has exec()ed)';

/** The threads of the tree (pid, tid) still blocked in vfork() once VFORK_WAIT_MS has passed (at once if none is). */
export function lastingVforks(tree: Tree): { pid: number; tid: number }[] {
  const threads = tree.processes.filter((p) => !p.zombie).flatMap((p) => p.threads.map((tid) => ({ pid: p.pid, tid })));
  let waiting = threads.filter((t) => inVfork(t.pid, t.tid));
  for (const end = Date.now() + VFORK_WAIT_MS; waiting.length && Date.now() < end; ) {
    sleepSync(1);
    waiting = waiting.filter((t) => inVfork(t.pid, t.tid));
  }
  return waiting;
}

/** The freeze found threads blocked in vfork(): freezeSettled lets the tree go and freezes it again. */
export class VforkInFlightError extends GodwitError {
  constructor(readonly tids: number[]) {
    super(`thread(s) ${tids.join(', ')} ${VFORK_REFUSAL}`, { code: 'EVFORK' });
  }
}
