/**
 * The process tree: stubs with the dumped PIDs and TIDs (clone3 set_tid, created by their own parents so
 * ppid is right, sessions set as they are forked), then process groups that name another task.
 */
import * as fs from 'node:fs';
import { RestoreContext } from './context';
import { Op } from './restorer';
import { Batch, runBatch } from './syscalls';
import { readXstateInfo } from './threads';

export async function createTree(ctx: RestoreContext): Promise<void> {
  const set = ctx.set!;
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeUInt32LE(set.tasks.length, 0);
  parts.push(head);
  for (const t of set.tasks) {
    const b = Buffer.alloc(20 + 4 * t.threads.length);
    [t.pid, t.ppid, t.pgid, t.sid, t.threads.length].forEach((v, i) => b.writeInt32LE(v, 4 * i));
    // The main thread first: it is the one the stub is.
    const tids = [t.pid, ...t.threads.filter((x) => x !== t.pid)];
    tids.forEach((tid, i) => b.writeInt32LE(tid, 20 + 4 * i));
    parts.push(b);
  }
  await ctx.restorer!.request(Op.TREE, Buffer.concat(parts), 'create the process tree');
  ctx.xstateSize = (await readXstateInfo(ctx, set.tasks[0].pid)).size;
}

/** Process groups led by another task: joined once every task exists. */
export async function joinProcessGroups(ctx: RestoreContext): Promise<void> {
  for (const t of ctx.set!.tasks) {
    if (t.pgid === t.pid || t.sid === t.pid) continue;
    const b = new Batch();
    b.call('setpgid', [0, t.pgid], `join process group ${t.pgid}`);
    await runBatch(ctx.restorer!, t.pid, b);
  }
}

function readStatus(pid: string): Map<string, string> | null {
  try {
    const m = new Map<string, string>();
    for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
    }
    return m;
  } catch {
    return null;
  }
}

/**
 * Host PIDs of the restored tasks: descendants of the restorer, matched by their innermost NSpid (their PID
 * in the namespace they were restored into).
 */
export function findHostPids(ctx: RestoreContext): Map<number, number> {
  const want = new Set(ctx.set!.tasks.map((t) => t.pid));
  const parent = new Map<number, number>();
  const nspid = new Map<number, number>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = readStatus(d);
    if (!st) continue;
    parent.set(Number(d), Number(st.get('PPid') ?? 0));
    const ns = (st.get('NSpid') ?? d).split(/\s+/);
    nspid.set(Number(d), Number(ns[ns.length - 1]));
  }
  const root = ctx.restorer!.pid;
  const out = new Map<number, number>();
  for (const [pid] of parent) {
    let p = pid;
    for (let depth = 0; depth < 64 && p > 1; depth++) {
      p = parent.get(p) ?? 0;
      if (p === root) {
        const inner = nspid.get(pid)!;
        if (want.has(inner) && pid !== root) out.set(inner, pid);
        break;
      }
    }
  }
  return out;
}
