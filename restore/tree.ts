/**
 * The process tree: stubs with the dumped PIDs and TIDs (clone3 set_tid, created by their own parents so
 * ppid is right, sessions set as they are forked), then process groups that name another task.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Op } from './restorer';
import { Batch, runBatch } from './syscalls';
import { readXstateInfo } from './threads';

/** `trailer`: optional extra records after the tasks (controlling terminals, restore/tty.ts). */
export async function createTree(ctx: RestoreContext, trailer?: Buffer): Promise<void> {
  const set = ctx.set!;
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeUInt32LE(set.tasks.length, 0);
  parts.push(head);
  for (const t of set.tasks) {
    const b = Buffer.alloc(24 + 4 * t.threads.length);
    [t.pid, t.ppid, t.pgid, t.sid, t.threads.length, t.zombie ?? -1].forEach((v, i) => b.writeInt32LE(v, 4 * i));
    // The main thread first: it is the one the stub is.
    const tids = [t.pid, ...t.threads.filter((x) => x !== t.pid)];
    tids.forEach((tid, i) => b.writeInt32LE(tid, 24 + 4 * i));
    parts.push(b);
  }
  if (trailer) parts.push(trailer);
  await ctx.restorer!.request(Op.TREE, Buffer.concat(parts), 'create the process tree');
  ctx.xstateSize = (await readXstateInfo(ctx, set.tasks[0].pid)).size;
}

/** Process groups led by another task: joined once every task exists. */
export async function joinProcessGroups(ctx: RestoreContext): Promise<void> {
  for (const t of ctx.set!.tasks) {
    // pgid 0: a group led from outside the tree (a container's tree in its creator's group, which its pid
    // namespace cannot name): the task stays in the group it was forked into, the restorer's.
    if (t.pgid === t.pid || t.sid === t.pid || t.pgid === 0 || t.zombie !== undefined) continue;
    const b = new Batch();
    b.call('setpgid', [0, t.pgid], `join process group ${t.pgid}`);
    await runBatch(ctx.restorer!, t.pid, b);
  }
}

/** Host PIDs of the restored tasks (image pid -> pid in this host's PID namespace), from the restorer. */
/**
 * The host pid of restored task `pid` once the tree exists: the same without a new pid namespace, else asked of
 * the restorer (once; the resume step asks again).
 */
export async function hostPidOf(ctx: RestoreContext, pid: number): Promise<number> {
  if (!ctx.opts.newPidns) return pid;
  if (!ctx.hostPids.size) ctx.hostPids = await findHostPids(ctx);
  const host = ctx.hostPids.get(pid);
  if (!host || host < 0) throw new GodwitError(`the host pid of restored task ${pid} is unknown`);
  return host;
}

export async function findHostPids(ctx: RestoreContext): Promise<Map<number, number>> {
  const out = await ctx.restorer!.request(Op.HOST_PIDS, Buffer.alloc(0), 'find the host pids of the restored tasks');
  const m = new Map<number, number>();
  ctx.set!.tasks.forEach((t, i) => m.set(t.pid, out.readInt32LE(4 * i)));
  return m;
}
