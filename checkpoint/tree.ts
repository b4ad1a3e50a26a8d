/**
 * The target: a process and all its descendants, every thread. resolveTarget() checks what can be checked
 * before anything is touched (pid exists, not a kernel thread, not godwit or its ancestor, running as root);
 * scanTree() walks task/TID/children from the root and is repeated after seizing until nothing new appears.
 */
import { GodwitError, UsageError } from '../util/errors';
import { isNoEntry } from './proc/read';
import { PF_KTHREAD, ProcStat, readStat } from './proc/stat';
import { readChildren, readTasks } from './proc/misc';

export interface TreeProcess {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  /** Thread ids, leader first. */
  threads: number[];
  /** Children pids in the order the kernel lists them (per thread, threads in order). */
  children: number[];
  comm: string;
  state: string;
  zombie: boolean;
  stat: ProcStat;
}

export interface Tree {
  root: number;
  /** Parents before children (breadth first from the root). */
  processes: TreeProcess[];
  byPid: Map<number, TreeProcess>;
}

/** Validates the pid the user gave: everything here fails with a UsageError before any task is touched. */
export function resolveTarget(pid: number): ProcStat {
  if (!Number.isInteger(pid) || pid <= 0) throw new UsageError(`--pid must be a positive integer, got ${pid}`);
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new UsageError('godwit dump needs root (ptrace of other users\' tasks, /proc/PID/pagemap PFNs, map_files): run it as root');
  let st: ProcStat;
  try {
    st = readStat(pid);
  } catch (err) {
    if (isNoEntry(err)) throw new UsageError(`no such process: pid ${pid} (check the pid with ps)`);
    throw err;
  }
  if (st.flags & PF_KTHREAD || pid === 2 || st.ppid === 2)
    throw new UsageError(`pid ${pid} (${st.comm}) is a kernel thread: only user-space processes can be checkpointed`);
  const chain = ancestry(process.pid);
  if (chain.includes(pid)) {
    const who = pid === process.pid ? 'godwit itself' : `an ancestor of godwit (pid ${process.pid})`;
    throw new UsageError(
      `pid ${pid} (${st.comm}) is ${who}: dumping it would freeze the dumper; start the target from another shell`,
    );
  }
  if (st.state === 'Z') {
    refuseDeadLeader(pid, st.comm);
    throw new UsageError(`pid ${pid} (${st.comm}) is a zombie: there is nothing left to checkpoint`);
  }
  return st;
}

/**
 * A process whose main thread has exited (pthread_exit in main, zdtm pthread02) shows as a zombie while its
 * other threads run on: not a zombie to dump as one (its threads would be lost), and a thread group without
 * its leader cannot be made again. Refused by name.
 */
function refuseDeadLeader(pid: number, comm: string): void {
  let live: number[] = [];
  try {
    live = readTasks(pid).filter((t) => t !== pid);
  } catch {
    return; // gone meanwhile
  }
  if (live.length)
    throw new GodwitError(
      `pid ${pid} (${comm}): its main thread has exited while thread(s) ${live.slice(0, 8).join(', ')} still run: a thread group without its leader cannot be restored (not supported)`,
    );
}

/** pid, its parent, ... up to pid 1. */
export function ancestry(pid: number): number[] {
  const out: number[] = [];
  let p = pid;
  for (let i = 0; i < 4096 && p > 0; i++) {
    out.push(p);
    let st: ProcStat;
    try {
      st = readStat(p);
    } catch {
      break;
    }
    if (st.ppid === p) break;
    p = st.ppid;
  }
  return out;
}

/** Upper bound on the tree size: a fork bomb must not make the dumper loop or allocate without end. */
export const MAX_TREE_PROCESSES = 4096;

/**
 * Walks the tree from the root. Tasks that vanish while walking are left out (the caller repeats the scan once
 * everything is seized; a stable result is what gets dumped).
 */
export function scanTree(root: number): Tree {
  const processes: TreeProcess[] = [];
  const byPid = new Map<number, TreeProcess>();
  const queue: number[] = [root];
  while (queue.length) {
    const pid = queue.shift()!;
    if (byPid.has(pid)) continue;
    let stat: ProcStat;
    let threads: number[];
    try {
      stat = readStat(pid);
      threads = stat.state === 'Z' ? [pid] : readTasks(pid);
    } catch (err) {
      if (isNoEntry(err) && pid !== root) continue;
      throw new GodwitError(`cannot read process ${pid} of the tree rooted at ${root}`, { cause: err });
    }
    if (stat.state === 'Z') refuseDeadLeader(pid, stat.comm);
    if (threads.length === 0) threads = [pid];
    threads = [pid, ...threads.filter((t) => t !== pid)];
    const children: number[] = [];
    if (stat.state !== 'Z') for (const t of threads) for (const c of readChildren(pid, t)) children.push(c);
    const p: TreeProcess = {
      pid,
      ppid: pid === root ? stat.ppid : stat.ppid,
      pgid: stat.pgid,
      sid: stat.sid,
      threads,
      children,
      comm: stat.comm,
      state: stat.state,
      zombie: stat.state === 'Z',
      stat,
    };
    processes.push(p);
    byPid.set(pid, p);
    if (processes.length > MAX_TREE_PROCESSES)
      throw new GodwitError(`the tree rooted at ${root} has more than ${MAX_TREE_PROCESSES} processes: refusing to dump it`);
    queue.push(...children);
  }
  return { root, processes, byPid };
}

/** Every thread of every live (non-zombie) process of the tree. */
export function allThreads(tree: Tree): number[] {
  return tree.processes.filter((p) => !p.zombie).flatMap((p) => p.threads);
}

/** Same processes with the same threads? */
export function sameTree(a: Tree, b: Tree): boolean {
  if (a.processes.length !== b.processes.length) return false;
  for (const p of a.processes) {
    const q = b.byPid.get(p.pid);
    if (!q || q.zombie !== p.zombie || q.threads.length !== p.threads.length) return false;
    const s = new Set(q.threads);
    if (!p.threads.every((t) => s.has(t))) return false;
  }
  return true;
}
