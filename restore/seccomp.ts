/**
 * seccomp (checkpoint/seccomp.ts): per thread, no_new_privs, then strict mode or the thread's filter chain
 * from seccomp.img, oldest filter first, each with its flags. They are installed in the per-thread batch
 * before the credentials change (installing a filter without no_new_privs needs CAP_SYS_ADMIN, which the
 * stub still has then). Nothing restore injects afterwards is filtered: the restorer traces every thread with
 * PTRACE_O_SUSPEND_SECCOMP, so the filters only take effect once the tree is detached and runs.
 * Threads of a process that share filters (a whole-process filter, TSYNC) must share them again: the kernel's
 * TSYNC only syncs threads whose filter is an ancestor of the caller's, so copies installed thread by thread
 * would make a later TSYNC in the restored process fail. The links every thread has at the bottom of its chain
 * are installed once, by the first thread restored, with TSYNC; the others install only the rest of their chain.
 */
import { GodwitError } from '../util/errors';
import type { RestoreContext } from './context';
import { Msg, readEntries } from './image-files';
import type { TaskImage } from './load';
import { PAGE } from './memory';
import { Batch } from './syscalls';

const PR_SET_SECCOMP = 22;
const PR_SET_NO_NEW_PRIVS = 38;
const SECCOMP_MODE_STRICT = 1;
const SECCOMP_MODE_FILTER = 2;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_TSYNC = 1;
/** A failed TSYNC returns -ESRCH instead of the tid of the thread that could not be synced (Linux 5.7). */
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4;
const BPF_INSN_BYTES = 8;
/** The kernel's BPF_MAXINSNS: a longer filter is an image error. */
const BPF_MAXINSNS = 4096;
/** Filters per chain, bounding the walk of a damaged `prev` list (the kernel's path limit allows fewer). */
const MAX_CHAIN = 8192;

const filtersCache = new WeakMap<RestoreContext, Msg[]>();
/** Per process: how many links all its threads share, and whether they were installed (by its first thread). */
const sharedState = new WeakMap<TaskImage, { links: number; installed: boolean }>();

function filters(ctx: RestoreContext): Msg[] {
  let f = filtersCache.get(ctx);
  if (!f) {
    const e = readEntries(ctx.set!.dir, 'seccomp.img') ?? [];
    f = ((e[0]?.seccomp_filters as Msg[] | undefined) ?? []);
    filtersCache.set(ctx, f);
  }
  return f;
}

/** The thread's chain, oldest first. */
function chain(ctx: RestoreContext, tid: number, top: number): Msg[] {
  const all = filters(ctx);
  const out: Msg[] = [];
  for (let i: number | undefined = top; i !== undefined; ) {
    const f: Msg | undefined = all[i];
    if (!f) throw new GodwitError(`thread ${tid}: seccomp filter ${i} is missing from seccomp.img`);
    if (out.length >= MAX_CHAIN) throw new GodwitError(`thread ${tid}: seccomp.img has a filter chain longer than ${MAX_CHAIN} (a loop?)`);
    out.push(f);
    i = f.prev === undefined ? undefined : Number(f.prev);
  }
  return out.reverse();
}

/** The oldest links of the chain that every thread of the process has (none for a single thread). */
function sharedLinks(ctx: RestoreContext, t: TaskImage): Msg[] {
  if (t.threads.length < 2) return [];
  let shared: Msg[] | undefined;
  for (const tid of t.threads) {
    const tc = (t.cores.get(tid)!.thread_core as Msg | undefined) ?? {};
    if (Number(tc.seccomp_mode ?? 0) !== SECCOMP_MODE_FILTER) return [];
    const c = chain(ctx, tid, Number(tc.seccomp_filter ?? 0));
    let n = 0;
    while (n < c.length && (shared === undefined || (n < shared.length && shared[n] === c[n]))) n++;
    shared = c.slice(0, n);
  }
  return shared ?? [];
}

/** Problems for preflight: filters the kernel would refuse, chains that do not resolve. */
export function seccompProblems(ctx: RestoreContext, tasks: TaskImage[]): string[] {
  const problems: string[] = [];
  for (const t of tasks) {
    for (const [tid, core] of t.cores) {
      const tc = (core.thread_core as Msg | undefined) ?? {};
      if (Number(tc.seccomp_mode ?? 0) !== SECCOMP_MODE_FILTER) continue;
      try {
        for (const f of chain(ctx, tid, Number(tc.seccomp_filter ?? 0))) {
          const len = (f.filter as Buffer | undefined)?.length ?? 0;
          if (len === 0 || len % BPF_INSN_BYTES || len / BPF_INSN_BYTES > BPF_MAXINSNS)
            problems.push(`thread ${tid}: a seccomp filter of ${len} bytes is not a valid BPF program`);
        }
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
  }
  return problems;
}

/** Adds no_new_privs and the thread's seccomp state to its per-thread batch. */
export function addSeccompCalls(ctx: RestoreContext, t: TaskImage, tid: number, b: Batch): void {
  const tc = (t.cores.get(tid)!.thread_core as Msg | undefined) ?? {};
  const creds = (tc.creds as Msg | undefined) ?? {};
  if (Number(creds.no_new_privs ?? 0)) b.call('prctl', [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0], 'set no_new_privs');
  const mode = Number(tc.seccomp_mode ?? 0);
  if (mode === SECCOMP_MODE_STRICT) {
    b.call('prctl', [PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0], 'enter seccomp strict mode');
    return;
  }
  if (mode !== SECCOMP_MODE_FILTER) return;
  // Batch scratch data lands one page after the trampoline in the task (native/src/restore/inject.c).
  const scratchBase = ctx.trampolines.get(t.pid)! + PAGE;
  const links = chain(ctx, tid, Number(tc.seccomp_filter ?? 0));
  let st = sharedState.get(t);
  if (!st) sharedState.set(t, (st = { links: sharedLinks(ctx, t).length, installed: false }));
  const shared = st.links;
  const first = shared > 0 && !st.installed;
  st.installed = true;
  links.forEach((f, i) => {
    if (i < shared && !first) return; // installed by TSYNC from the first thread restored
    const prog = f.filter as Buffer;
    const insns = b.data(prog);
    const fprog = Buffer.alloc(16);
    fprog.writeUInt16LE(prog.length / BPF_INSN_BYTES, 0);
    fprog.writeBigUInt64LE(scratchBase + BigInt(insns.scratch), 8);
    const sync = first && i === shared - 1 ? SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH : 0;
    b.call('seccomp', [SECCOMP_SET_MODE_FILTER, Number(f.flags ?? 0) | sync, b.data(fprog)],
      `install seccomp filter ${i} of thread ${tid}${sync ? ' for all its threads (TSYNC)' : ''}`);
  });
}
