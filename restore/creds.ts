/** Resource limits (set from outside with prlimit) and credentials (last, per thread, so nothing needs root after). */
import * as fs from 'node:fs';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { Op, RestorerError } from './restorer';
import { Batch, ResultRef } from './syscalls';

export interface Warning {
  /** The task it concerns, when it concerns one. */
  pid?: number;
  message: string;
}

export const warningText = (w: Warning): string => (w.pid !== undefined ? `task ${w.pid}: ${w.message}` : w.message);

const RLIMIT_NAMES = ['CPU', 'FSIZE', 'DATA', 'STACK', 'CORE', 'RSS', 'NPROC', 'NOFILE', 'MEMLOCK', 'AS', 'LOCKS',
  'SIGPENDING', 'MSGQUEUE', 'NICE', 'RTPRIO', 'RTTIME'];

export async function restoreRlimits(ctx: RestoreContext, t: TaskImage, warnings: Warning[]): Promise<void> {
  const rl = (((t.cores.get(t.pid)!.tc as Msg | undefined)?.rlimits as Msg | undefined)?.rlimits as Msg[] | undefined) ?? [];
  for (let i = 0; i < rl.length && i < RLIMIT_NAMES.length; i++) {
    const b = Buffer.alloc(24);
    b.writeInt32LE(t.pid, 0);
    b.writeUInt32LE(i, 4);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt((rl[i].cur as bigint | undefined) ?? 0n)), 8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt((rl[i].max as bigint | undefined) ?? 0n)), 16);
    try {
      await ctx.restorer!.request(Op.PRLIMIT, b, `set RLIMIT_${RLIMIT_NAMES[i]} of ${t.pid}`);
    } catch (e) {
      // Without CAP_SYS_RESOURCE a hard limit cannot be raised above ours: keep ours and say so.
      if (e instanceof RestorerError && e.errno === 1)
        warnings.push({ pid: t.pid, message: `RLIMIT_${RLIMIT_NAMES[i]} kept at this host's value (raising it needs CAP_SYS_RESOURCE)` });
      else throw e;
    }
  }
}

/**
 * Credentials differ from the restorer's (root, full caps)? Then switch, per thread. `always`: switch even to
 * ids 0 — inside a container's own user namespace the restorer's uid (the host's root) has no mapping, and ids
 * 0 mean the namespace's root, a different host id.
 */
/**
 * The thread's scheduling policy, real-time priority and nice value (zdtm sched_policy00, sched_prio00): the stub
 * has the restorer's. Set from inside the thread (pid 0 is the calling thread for both calls) before its
 * credentials drop, which could take CAP_SYS_NICE away.
 */
export function addSchedCalls(t: TaskImage, tid: number, b: Batch): void {
  const tc = t.cores.get(tid)!.thread_core as Msg | undefined;
  if (!tc || tc.sched_policy === undefined) return;
  const policy = Number(tc.sched_policy);
  const param = Buffer.alloc(4);
  param.writeInt32LE(Number(tc.sched_prio ?? 0));
  b.call('sched_setscheduler', [0, policy, b.data(param)], `set scheduling policy ${policy} (priority ${tc.sched_prio ?? 0}) of thread ${tid}`);
  b.call('setpriority', [0 /* PRIO_PROCESS */, 0, Number(tc.sched_nice ?? 0)], `set nice ${tc.sched_nice ?? 0} of thread ${tid}`);
}

/** CPUs of this host (/sys/devices/system/cpu/online, "0-3,8"), as a set of numbers; null if unreadable. */
export function hostCpus(text?: string): Set<number> | null {
  let s = text;
  if (s === undefined) {
    try {
      s = fs.readFileSync('/sys/devices/system/cpu/online', 'latin1');
    } catch {
      return null;
    }
  }
  const out = new Set<number>();
  for (const part of s.trim().split(',').filter(Boolean)) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) out.add(c);
  }
  return out;
}

export interface AffinityCall {
  ref: ResultRef;
  tid: number;
}

/**
 * The thread's CPU affinity (zdtm cpu-affinity0), restricted to the CPUs this host has: the stub has the
 * restorer's. CRIU does this only with --with-cpu-affinity; here it is the default, since a restored task that
 * pinned itself expects to stay pinned. None of its CPUs here: it keeps the default, with a warning. Set inside
 * the thread (pid 0); a refusal (a cpuset without those CPUs: EINVAL) is a warning too, never a failure.
 */
export function addAffinityCall(ctx: RestoreContext, t: TaskImage, tid: number, b: Batch, cpus = hostCpus()): AffinityCall | undefined {
  const words = ((t.cores.get(tid)!.thread_core as Msg | undefined)?.allowed_cpus as bigint[] | undefined) ?? [];
  if (!words.length || !cpus) return undefined;
  const want: number[] = [];
  words.forEach((w, i) => {
    for (let bit = 0; bit < 64; bit++) if ((BigInt(w) >> BigInt(bit)) & 1n) want.push(64 * i + bit);
  });
  const here = want.filter((c) => cpus.has(c));
  if (!here.length) {
    ctx.warnings.push({ pid: t.pid, message: `thread ${tid}: none of its CPUs (${cpuList(want)}) exist on this host: left on all CPUs` });
    return undefined;
  }
  if (here.length < want.length)
    ctx.warnings.push({ pid: t.pid, message: `thread ${tid}: CPUs ${cpuList(want.filter((c) => !cpus.has(c)))} of its affinity do not exist on this host: restricted to ${cpuList(here)}` });
  const mask = Buffer.alloc(8 * Math.ceil((Math.max(...here) + 1) / 64));
  for (const c of here) mask[c >> 3] |= 1 << (c & 7);
  return { tid, ref: b.call('sched_setaffinity', [0, mask.length, b.data(mask)], `set the CPU affinity of thread ${tid}`, { allowFail: true }) };
}

export function checkAffinity(ctx: RestoreContext, t: TaskImage, call: AffinityCall | undefined, results: bigint[]): void {
  const r = call && results[call.ref.result];
  if (call && r !== undefined && r < 0n)
    ctx.warnings.push({ pid: t.pid, message: `thread ${call.tid}: CPU affinity kept at the restorer's (sched_setaffinity: error ${-r})` });
}

function cpuList(cpus: number[]): string {
  return cpus.length > 8 ? `${cpus.slice(0, 8).join(',')},...` : cpus.join(',');
}

export function addCredCalls(t: TaskImage, tid: number, b: Batch, o: { always?: boolean } = {}): void {
  const creds = ((t.cores.get(tid)!.thread_core as Msg | undefined)?.creds as Msg | undefined) ?? null;
  if (!creds) return;
  const ids = ['uid', 'gid', 'euid', 'egid', 'suid', 'sgid'].map((k) => Number(creds[k] ?? 0));
  const groups = ((creds.groups as number[] | undefined) ?? []).map(Number);
  const setGroups = () => {
    const g = Buffer.alloc(4 * Math.max(groups.length, 1));
    groups.forEach((x, i) => g.writeUInt32LE(x >>> 0, 4 * i));
    b.call('setgroups', [groups.length, b.data(g)], 'set supplementary groups');
  };
  // setres[ug]id set the filesystem id to the effective one; one that differs (zdtm pid00) is set after it. The
  // fsgid goes before the uid switch, which takes the CAP_SETGID it needs; setfsuid to one of the task's own
  // uids needs no capability. (Both calls return the old id, never an error.)
  const fsuid = Number(creds.fsuid ?? ids[2]);
  const fsgid = Number(creds.fsgid ?? ids[3]);
  if (ids.every((x) => x === 0) && !o.always) {
    // A root task keeps the restorer's ids, but not its supplementary groups (zdtm groups): those are the task's.
    if (groups.length || restorerHasGroups()) setGroups();
    addCapCalls(creds, b);
    if (fsgid !== 0) b.call('setfsgid', [fsgid], 'set the filesystem gid');
    if (fsuid !== 0) b.call('setfsuid', [fsuid], 'set the filesystem uid');
    return;
  }
  setGroups();
  b.call('setresgid', [ids[1], ids[3], ids[5]], 'set gids');
  if (fsgid !== ids[3]) b.call('setfsgid', [fsgid], 'set the filesystem gid');
  b.call('setresuid', [ids[0], ids[2], ids[4]], 'set uids');
  if (fsuid !== ids[2]) b.call('setfsuid', [fsuid], 'set the filesystem uid');
  if (o.always) {
    // Root of a user namespace keeps every capability through that switch: drop what the task had dropped.
    if (ids.every((x) => x === 0)) addCapCalls(creds, b);
    // The uid switch made the task non-dumpable, and its memory belongs to the host's user namespace (the
    // restorer's exec made it there): the restorer, capable only inside the container's user namespace now,
    // could not touch it any more. A task dumped as dumpable is made so again (restore/prctl.ts keeps a 0).
    if (Number(t.mm.dumpable ?? 1) !== 0) b.call('prctl', [PR_SET_DUMPABLE, 1, 0, 0, 0], 'be dumpable again after the uid switch');
  }
}

const PR_SET_DUMPABLE = 4;

/** The restorer runs with godwit's supplementary groups (it is our child). */
function restorerHasGroups(): boolean {
  return (process.getgroups?.() ?? []).length > 0;
}

const PR_CAPBSET_DROP = 24;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;
const CAP_VERSION_3 = 0x20080522;

function lastCap(): number {
  try {
    return Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
  } catch {
    return 40;
  }
}

/**
 * A root task with fewer capabilities than the restorer's (a container's init: runc drops most of them): the
 * bounding set, then effective/permitted/inheritable, then ambient, as dumped. Nothing for a task with every
 * capability (the usual root process), so plain restores pay no extra calls.
 */
function addCapCalls(creds: Msg, b: Batch): void {
  const words = (k: string): number[] => ((creds[k] as number[] | undefined) ?? []).map((x) => Number(x) >>> 0);
  const bnd = words('cap_bnd');
  const eff = words('cap_eff');
  const prm = words('cap_prm');
  const inh = words('cap_inh');
  const amb = words('cap_amb');
  if (bnd.length === 0) return;
  const last = lastCap();
  const has = (w: number[], c: number): boolean => ((w[c >> 5] ?? 0) >>> (c & 31)) & 1 ? true : false;
  const full = (w: number[]): boolean => Array.from({ length: last + 1 }, (_, c) => has(w, c)).every(Boolean);
  if (full(bnd) && full(eff) && full(prm) && !inh.some(Boolean) && !amb.some(Boolean)) return;
  for (let c = 0; c <= last; c++) if (!has(bnd, c)) b.call('prctl', [PR_CAPBSET_DROP, c, 0, 0, 0], `drop capability ${c} from the bounding set`);
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(CAP_VERSION_3, 0);
  const data = Buffer.alloc(24);
  for (let i = 0; i < 2; i++) {
    data.writeUInt32LE(eff[i] ?? 0, 12 * i);
    data.writeUInt32LE(prm[i] ?? 0, 12 * i + 4);
    data.writeUInt32LE(inh[i] ?? 0, 12 * i + 8);
  }
  b.call('capset', [b.data(hdr), b.data(data)], 'set capabilities');
  for (let c = 0; c <= last; c++) if (has(amb, c)) b.call('prctl', [PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0], `raise ambient capability ${c}`);
}
