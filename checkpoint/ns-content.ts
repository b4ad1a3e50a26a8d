/**
 * What is inside a container's namespaces: which namespaces are its own, the uts names, SysV IPC objects with
 * their contents, user namespace id maps, time namespace offsets. uts and ipc are read from inside the
 * namespace by godwit-nsutil (native/nsutil), which setns()es into it: Node cannot switch namespaces.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type { ImageEntry } from '../images';
import { GodwitError } from '../util/errors';
import { NS_KINDS, NsKind, readNamespaces } from './proc/misc';

export function nsutilPath(): string {
  return process.env.GODWIT_NSUTIL ?? path.join(__dirname, '../../native/build/godwit-nsutil');
}

export interface NsOwnership {
  kind: NsKind;
  ino: number;
  /** Not shared with the reference process (godwit itself unless told otherwise). */
  own: boolean;
}

/** Which of PID's namespaces are its own and which it shares with `refPid` (default: godwit, i.e. the host). */
export function namespaceOwnership(pid: number, refPid = process.pid): Record<NsKind, NsOwnership> {
  const ns = readNamespaces(pid);
  const ref = readNamespaces(refPid);
  const out = {} as Record<NsKind, NsOwnership>;
  for (const k of NS_KINDS) out[k] = { kind: k, ino: ns[k], own: ns[k] !== 0 && ns[k] !== ref[k] };
  return out;
}

/** Runs godwit-nsutil; its stderr line (syscall, what, pid, error) becomes the error message. */
export function runNsutil(args: string[], input?: Buffer, opts: { maxBytes?: number } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(nsutilPath(), args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outLen = 0;
    let err = '';
    const max = opts.maxBytes ?? 1 << 30;
    child.stdout.on('data', (b: Buffer) => {
      outLen += b.length;
      if (outLen > max) child.kill('SIGKILL');
      else out.push(b);
    });
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', (e) => reject(new GodwitError(`cannot run ${nsutilPath()} (make -C native builds it): ${e.message}`, { cause: e })));
    child.on('close', (code, sig) => {
      if (outLen > max) reject(new GodwitError(`godwit-nsutil ${args.join(' ')}: more than ${max} bytes of output`));
      else if (code === 0) resolve(Buffer.concat(out));
      else reject(new GodwitError(`godwit-nsutil ${args.join(' ')} failed (${code ?? sig}): ${err.trim()}`));
    });
    child.stdin.on('error', () => undefined); // an early exit is reported through 'close'
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}

export interface UtsContent {
  nodename: string;
  domainname: string;
}

/** utsns_entry of PID's uts namespace. */
export async function dumpUts(pid: number): Promise<UtsContent> {
  const [nodename, domainname] = (await runNsutil(['uts-get', String(pid)])).toString().split('\n');
  return { nodename, domainname };
}

export interface IpcDesc {
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  mode: number;
  id: number;
}
export interface IpcShm {
  desc: IpcDesc;
  size: number;
  data: Buffer;
}
export interface IpcSem {
  desc: IpcDesc;
  values: number[];
}
export interface IpcQueuedMsg {
  /** The message type (positive; u64 in the image). */
  mtype: bigint;
  data: Buffer;
}
export interface IpcMsgQueue {
  desc: IpcDesc;
  /** The queue's byte limit (msg_qbytes). */
  qbytes: number;
  /** Every queued message, oldest first. */
  messages: IpcQueuedMsg[];
}
export interface IpcContent {
  shm: IpcShm[];
  sem: IpcSem[];
  msg: IpcMsgQueue[];
}

/** The SysV shm segments (with their bytes), semaphore sets and message queues (with every queued message, left in place) of PID's ipc namespace. */
export async function dumpIpc(pid: number): Promise<IpcContent> {
  return parseIpcStream(await runNsutil(['ipc-dump', String(pid)]));
}

export function parseIpcStream(buf: Buffer): IpcContent {
  const out: IpcContent = { shm: [], sem: [], msg: [] };
  let off = 0;
  const line = (): string => {
    const nl = buf.indexOf(10, off);
    if (nl < 0) throw new GodwitError(`godwit-nsutil ipc stream: truncated at byte ${off}`);
    const s = buf.subarray(off, nl).toString();
    off = nl + 1;
    return s;
  };
  for (;;) {
    const f = line().split(' ');
    if (f[0] === 'end') return out;
    const [key, id, mode, uid, gid, cuid, cgid] = f.slice(1, 8);
    const desc: IpcDesc = { key: Number(key) >>> 0, id: Number(id), mode: parseInt(mode, 8), uid: Number(uid), gid: Number(gid), cuid: Number(cuid), cgid: Number(cgid) };
    if (f[0] === 'shm') {
      const size = Number(f[8]);
      if (off + size > buf.length) throw new GodwitError(`godwit-nsutil ipc stream: shm ${desc.id} truncated`);
      out.shm.push({ desc, size, data: Buffer.from(buf.subarray(off, off + size)) });
      off += size;
    } else if (f[0] === 'sem') {
      out.sem.push({ desc, values: f.slice(9, 9 + Number(f[8])).map(Number) });
    } else if (f[0] === 'msg') {
      const q: IpcMsgQueue = { desc, qbytes: Number(f[8]), messages: [] };
      const qnum = Number(f[9]);
      if (!Number.isSafeInteger(qnum) || qnum < 0) throw new GodwitError(`godwit-nsutil ipc stream: msg ${desc.id} has a bad message count ${JSON.stringify(f[9])}`);
      for (let k = 0; k < qnum; k++) {
        const [mtype, size] = line().split(' ');
        const n = Number(size);
        if (!Number.isSafeInteger(n) || n < 0 || off + n > buf.length) throw new GodwitError(`godwit-nsutil ipc stream: msg ${desc.id} message ${k} truncated`);
        q.messages.push({ mtype: BigInt(mtype!), data: Buffer.from(buf.subarray(off, off + n)) });
        off += n;
      }
      out.msg.push(q);
    } else throw new GodwitError(`godwit-nsutil ipc stream: unknown record ${JSON.stringify(f[0])}`);
  }
}

/** Image entries (ImageEntry: msg + payload) for ipcns-shm-N.img, ipcns-sem-N.img and ipcns-msg-N.img. */
export function ipcImageEntries(c: IpcContent): { shm: ImageEntry[]; sem: ImageEntry[]; msg: ImageEntry[] } {
  return {
    shm: c.shm.map((s) => ({ type: 'ipc_shm_entry', msg: { desc: { ...s.desc }, size: BigInt(s.size) }, extra: s.data })),
    sem: c.sem.map((s) => ({ type: 'ipc_sem_entry', msg: { desc: { ...s.desc }, nsems: s.values.length }, extra: s.values })),
    // CRIU's layout: the queue header, then per message a length-prefixed ipc_msg and its bytes padded to 8.
    msg: c.msg.map((q) => ({
      type: 'ipc_msg_entry',
      msg: { desc: { ...q.desc }, qbytes: q.qbytes, qnum: q.messages.length },
      extra: q.messages.map((m) => ({ msg: { mtype: m.mtype, msize: m.data.length }, data: m.data })),
    })),
  };
}

/** The POSIX message queues of PID's ipc namespace (their names), mounted or not. */
export async function listPosixQueues(pid: number): Promise<string[]> {
  return (await runNsutil(['mq-list', String(pid)], undefined, { maxBytes: 1 << 20 })).toString().split('\n').filter(Boolean);
}

/** The ipc namespace's sysctls by /proc/sys path (kernel/msgmnb, fs/mqueue/msg_max, ...), values as text. */
export async function dumpIpcVars(pid: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const l of (await runNsutil(['ipc-vars-get', String(pid)], undefined, { maxBytes: 1 << 16 })).toString().split('\n')) {
    const [name, ...v] = l.trim().split(/\s+/);
    if (name) out[name] = v.join(' ');
  }
  return out;
}

/** ipc_var_entry's fields (CRIU's ipcns-var-N.img) and the /proc/sys files they hold, both ways; `u64`: a bigint
 *  field. kernel/sem (sem_ctls, four numbers in one file) is handled on its own. */
export const IPC_SYSCTLS: ReadonlyArray<readonly [field: string, sysctl: string, u64?: true]> = [
  ['msg_ctlmax', 'kernel/msgmax'],
  ['msg_ctlmnb', 'kernel/msgmnb'],
  ['msg_ctlmni', 'kernel/msgmni'],
  ['auto_msgmni', 'kernel/auto_msgmni'],
  ['shm_ctlmax', 'kernel/shmmax', true],
  ['shm_ctlall', 'kernel/shmall', true],
  ['shm_ctlmni', 'kernel/shmmni'],
  ['shm_rmid_forced', 'kernel/shm_rmid_forced'],
  ['mq_queues_max', 'fs/mqueue/queues_max'],
  ['mq_msg_max', 'fs/mqueue/msg_max'],
  ['mq_msgsize_max', 'fs/mqueue/msgsize_max'],
  ['mq_msg_default', 'fs/mqueue/msg_default'],
  ['mq_msgsize_default', 'fs/mqueue/msgsize_default'],
];

/** ipc_var_entry (CRIU's ipcns-var-N.img) of those sysctls. */
export function ipcVarEntry(v: Record<string, string>): Record<string, unknown> {
  const bad = (k: string) => new GodwitError(`ipc namespace sysctl ${k} = ${JSON.stringify(v[k])}: not a number godwit can carry`);
  const entry: Record<string, unknown> = { sem_ctls: (v['kernel/sem'] ?? '').split(' ').filter(Boolean).map(Number) };
  for (const [field, k, u64] of IPC_SYSCTLS) {
    if (u64) {
      if (!/^\d+$/.test(v[k] ?? '')) throw bad(k);
      entry[field] = BigInt(v[k]!);
    } else {
      const x = Number(v[k]);
      if (!Number.isSafeInteger(x) || x < 0) throw bad(k);
      entry[field] = x;
    }
  }
  return entry;
}

export interface IdExtent {
  first: number;
  lower_first: number;
  count: number;
}

/** userns_entry: PID's uid and gid maps. */
export function dumpUserns(pid: number): { uid_map: IdExtent[]; gid_map: IdExtent[] } {
  const parse = (f: string): IdExtent[] =>
    fs
      .readFileSync(`/proc/${pid}/${f}`, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        const [first, lower, count] = l.trim().split(/\s+/).map(Number);
        return { first, lower_first: lower, count };
      });
  return { uid_map: parse('uid_map'), gid_map: parse('gid_map') };
}

/** The kernel's overflowuid/overflowgid: what an id without a mapping reads as inside a user namespace. */
export const OVERFLOW_ID = 65534;

/** An id as seen from godwit (the parent namespace) -> the same id inside the namespace of `map`. */
export function idInside(id: number, map: IdExtent[]): number {
  for (const e of map) if (id >= e.lower_first && id - e.lower_first < e.count) return e.first + (id - e.lower_first);
  return OVERFLOW_ID;
}

/** An id inside the namespace of `map` -> the same id as godwit (the parent namespace) sees it. */
export function idOutside(id: number, map: IdExtent[]): number {
  for (const e of map) if (id >= e.first && id - e.first < e.count) return e.lower_first + (id - e.first);
  return OVERFLOW_ID;
}

/** timens_entry: PID's time namespace offsets (zero outside a time namespace). */
export function dumpTimens(pid: number): { monotonic: { tv_sec: bigint; tv_nsec: bigint }; boottime: { tv_sec: bigint; tv_nsec: bigint } } {
  const out = { monotonic: { tv_sec: 0n, tv_nsec: 0n }, boottime: { tv_sec: 0n, tv_nsec: 0n } };
  for (const l of fs.readFileSync(`/proc/${pid}/timens_offsets`, 'utf8').split('\n')) {
    const [clock, sec, nsec] = l.trim().split(/\s+/);
    // Offsets may be negative: stored as two's complement in the u64 fields, as CRIU does.
    const v = { tv_sec: BigInt.asUintN(64, BigInt(sec ?? 0)), tv_nsec: BigInt(nsec ?? 0) };
    if (clock === 'monotonic' || clock === '1') out.monotonic = v;
    else if (clock === 'boottime' || clock === '7') out.boottime = v;
  }
  return out;
}

/**
 * CLOCK_MONOTONIC and CLOCK_BOOTTIME (ns) as PID's time namespace shows them now: what CRIU's timens.img holds
 * (restore sets offsets so the clocks continue from these values; the time in between does not show inside).
 */
export async function dumpTimensClocks(pid: number): Promise<{ monotonic: bigint; boottime: bigint }> {
  const out = (await runNsutil(['time-get', String(pid)])).toString().trim().split(' ');
  if (out.length !== 2 || !out.every((v) => /^\d+$/.test(v))) throw new GodwitError(`godwit-nsutil time-get ${pid}: unexpected output ${JSON.stringify(out.join(' '))}`);
  return { monotonic: BigInt(out[0]!), boottime: BigInt(out[1]!) };
}

/** timespec message of a clock value in ns. */
export function timespecOf(ns: bigint): { tv_sec: bigint; tv_nsec: bigint } {
  return { tv_sec: ns / 1000000000n, tv_nsec: ns % 1000000000n };
}

/** Checks that the helper exists before a dump starts. */
export function nsutilAvailable(): boolean {
  try {
    fs.accessSync(nsutilPath(), fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
