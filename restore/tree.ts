/**
 * The process tree: stubs with the dumped PIDs and TIDs (clone3 set_tid, created by their own parents so
 * ppid is right, sessions set as they are forked), then process groups that name another task.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Op } from './restorer';
import { Batch, runBatch } from './syscalls';
import { readXstateInfo } from './threads';

interface TreeTask {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  zombie?: number;
}

/**
 * Process groups whose leader is not in the dump (it exited; zdtm zombie01): task pid -> the group it is forked
 * into by a helper that takes the group's pid (native/src/restore/tree.c fork_through_group_helper). One task per
 * group, a zombie first (it cannot join a group later); the others join it with setpgid once the tree exists.
 * A group that is also the session (its leader led the session too) is not made this way. `stranded`: zombies
 * of such a group that no helper can place (one helper per group).
 */
export function groupHelpers(tasks: TreeTask[]): { helpers: Map<number, number>; stranded: TreeTask[] } {
  const pids = new Set(tasks.map((t) => t.pid));
  const groups = new Map<number, TreeTask[]>();
  for (const t of tasks)
    if (t.pgid !== 0 && t.pgid !== t.pid && t.pgid !== t.sid && !pids.has(t.pgid)) groups.set(t.pgid, [...(groups.get(t.pgid) ?? []), t]);
  const helpers = new Map<number, number>();
  const stranded: TreeTask[] = [];
  for (const [g, members] of groups) {
    const zombies = members.filter((t) => t.zombie !== undefined);
    helpers.set((zombies[0] ?? members[0]).pid, g);
    stranded.push(...zombies.slice(1));
  }
  return { helpers, stranded };
}

/** `trailer`: optional extra records after the tasks (controlling terminals, restore/tty.ts). */
export async function createTree(ctx: RestoreContext, trailer?: Buffer): Promise<void> {
  const set = ctx.set!;
  const { helpers } = groupHelpers(set.tasks);
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeUInt32LE(set.tasks.length, 0);
  parts.push(head);
  for (const t of set.tasks) {
    const b = Buffer.alloc(28 + 4 * t.threads.length);
    [t.pid, t.ppid, t.pgid, t.sid, t.threads.length, t.zombie ?? -1, helpers.get(t.pid) ?? 0].forEach((v, i) => b.writeInt32LE(v, 4 * i));
    // The main thread first: it is the one the stub is.
    const tids = [t.pid, ...t.threads.filter((x) => x !== t.pid)];
    tids.forEach((tid, i) => b.writeInt32LE(tid, 28 + 4 * i));
    parts.push(b);
  }
  if (trailer) parts.push(trailer);
  await ctx.restorer!.request(Op.TREE, Buffer.concat(parts), 'create the process tree');
  ctx.xstateSize = (await readXstateInfo(ctx, set.tasks[0].pid)).size;
}

/** Process groups led by another task: joined once every task exists. */
export async function joinProcessGroups(ctx: RestoreContext): Promise<void> {
  const pids = new Set(ctx.set!.tasks.map((t) => t.pid));
  for (const t of ctx.set!.tasks) {
    // pgid 0: a group led from outside the tree (a container's tree in its creator's group, which its pid
    // namespace cannot name): the task stays in the group it was forked into, the restorer's. The same for the
    // group of a session led from outside the tree (the child of `setsid unshare --fork`): the restorer's session
    // stands for that session (util/sessions.ts), and its group for that group.
    const outsideSessionGroup = t.pgid === t.sid && !pids.has(t.pgid);
    if (t.pgid === t.pid || t.sid === t.pid || t.pgid === 0 || outsideSessionGroup || t.zombie !== undefined) continue;
    const b = new Batch();
    b.call('setpgid', [0, t.pgid], `join process group ${t.pgid}`);
    await runBatch(ctx.restorer!, t.pid, b);
  }
}

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

/** Host PIDs of the restored tasks (image pid -> pid in this host's PID namespace), from the restorer. */
export async function findHostPids(ctx: RestoreContext): Promise<Map<number, number>> {
  const out = await ctx.restorer!.request(Op.HOST_PIDS, Buffer.alloc(0), 'find the host pids of the restored tasks');
  const m = new Map<number, number>();
  ctx.set!.tasks.forEach((t, i) => m.set(t.pid, out.readInt32LE(4 * i)));
  return m;
}
