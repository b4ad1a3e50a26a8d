/** Small /proc files: threads, children, POSIX timers, namespaces, cgroups, mounts, personality, auxv, limits. */
import { isNoEntry, listProcNumbers, readProcBytes, readProcLink, readProcText } from './read';

/** Thread ids of a process (task/), ascending; the leader's tid equals the pid. */
export function readTasks(pid: number): number[] {
  return listProcNumbers(pid, 'task');
}

/** Children of one thread (task/TID/children); needs CONFIG_PROC_CHILDREN, present on supported kernels. */
export function readChildren(pid: number, tid: number): number[] {
  try {
    return readProcText(pid, `task/${tid}/children`)
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch (err) {
    if (isNoEntry(err)) return []; // the thread exited meanwhile
    throw err;
  }
}

export interface ProcPosixTimer {
  id: number;
  /** SIGEV_SIGNAL / SIGEV_NONE / SIGEV_THREAD_ID(|SIGEV_SIGNAL) as a number */
  notify: number;
  notifyTid: number;
  signo: number;
  sigval: bigint;
  clockId: number;
}

const SIGEV: Record<string, number> = { signal: 0, none: 1, thread: 2 };

/** /proc/PID/timers: "ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.123\nClockID: 1" blocks. */
export function parseTimers(text: string): ProcPosixTimer[] {
  const out: ProcPosixTimer[] = [];
  let cur: ProcPosixTimer | undefined;
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const key = line.slice(0, i);
    const val = line.slice(i + 1).trim();
    if (key === 'ID') {
      cur = { id: Number(val), notify: 0, notifyTid: 0, signo: 0, sigval: 0n, clockId: 0 };
      out.push(cur);
    } else if (!cur) continue;
    else if (key === 'signal') {
      const [sig, value] = val.split('/');
      cur.signo = Number(sig);
      cur.sigval = BigInt('0x' + (value || '0'));
    } else if (key === 'notify') {
      // "signal/pid.123" or "thread/tid.124" or "none/pid.123"
      const [how, who] = val.split('/');
      const base = SIGEV[how ?? 'signal'] ?? 0;
      const [kind, id] = (who ?? '').split('.');
      cur.notify = kind === 'tid' ? 4 | base : base; // SIGEV_THREAD_ID = 4
      cur.notifyTid = Number(id ?? 0);
    } else if (key === 'ClockID') cur.clockId = Number(val);
  }
  return out;
}

export function readTimers(pid: number): ProcPosixTimer[] {
  return parseTimers(readProcText(pid, 'timers'));
}

export const NS_KINDS = ['pid', 'net', 'ipc', 'uts', 'mnt', 'user', 'cgroup', 'time'] as const;
export type NsKind = (typeof NS_KINDS)[number];

/** The namespace inode numbers of a process, e.g. { net: 4026531833, ... }. */
export function readNamespaces(pid: number): Record<NsKind, number> {
  const out = {} as Record<NsKind, number>;
  for (const k of NS_KINDS) {
    const link = readProcLink(pid, `ns/${k}`);
    const m = /\[(\d+)\]/.exec(link);
    out[k] = m ? Number(m[1]) : 0;
  }
  return out;
}

export interface CgroupLine {
  hierarchy: number;
  controllers: string;
  path: string;
}

export function parseCgroup(text: string): CgroupLine[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const a = l.indexOf(':');
      const b = l.indexOf(':', a + 1);
      return { hierarchy: Number(l.slice(0, a)), controllers: l.slice(a + 1, b), path: l.slice(b + 1) };
    });
}

export function readCgroup(pid: number): CgroupLine[] {
  return parseCgroup(readProcText(pid, 'cgroup'));
}

export interface MountInfo {
  mntId: number;
  parentId: number;
  devMajor: number;
  devMinor: number;
  root: string;
  mountPoint: string;
  options: string;
  optional: string[];
  fsType: string;
  source: string;
  superOptions: string;
}

/** Octal escapes (\040 for space) as the kernel writes them in mountinfo. */
export function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const parts = line.split(' ');
    const sep = parts.indexOf('-');
    const [maj, min] = (parts[2] ?? '0:0').split(':').map(Number);
    out.push({
      mntId: Number(parts[0]),
      parentId: Number(parts[1]),
      devMajor: maj ?? 0,
      devMinor: min ?? 0,
      root: unescapeMount(parts[3] ?? ''),
      mountPoint: unescapeMount(parts[4] ?? ''),
      options: parts[5] ?? '',
      optional: parts.slice(6, sep),
      fsType: parts[sep + 1] ?? '',
      source: unescapeMount(parts[sep + 2] ?? ''),
      superOptions: parts[sep + 3] ?? '',
    });
  }
  return out;
}

export function readMountInfo(pid: number): MountInfo[] {
  return parseMountInfo(readProcText(pid, 'mountinfo'));
}

export function readPersonality(pid: number): number {
  return parseInt(readProcText(pid, 'personality').trim(), 16);
}

/** auxv as 64-bit words (type, value pairs), without the closing AT_NULL pair, as CRIU stores it. */
export function readAuxv(pid: number): bigint[] {
  const b = readProcBytes(pid, 'auxv');
  const words: bigint[] = [];
  for (let off = 0; off + 16 <= b.length; off += 16) {
    const type = b.readBigUInt64LE(off);
    if (type === 0n) break;
    words.push(type, b.readBigUInt64LE(off + 8));
  }
  return words;
}

export const RLIM_INFINITY = 0xffffffffffffffffn;

/** /proc/PID/limits in RLIMIT_* order (the kernel prints them in that order). */
export function parseLimits(text: string): { cur: bigint; max: bigint }[] {
  const out: { cur: bigint; max: bigint }[] = [];
  for (const line of text.split('\n').slice(1)) {
    if (!line.trim()) continue;
    // Columns are fixed width: name 26, soft 21, hard 21.
    const soft = line.slice(26, 47).trim();
    const hard = line.slice(47, 68).trim();
    const val = (s: string) => (s === 'unlimited' ? RLIM_INFINITY : BigInt(s));
    out.push({ cur: val(soft), max: val(hard) });
  }
  return out;
}

export function readLimits(pid: number): { cur: bigint; max: bigint }[] {
  return parseLimits(readProcText(pid, 'limits'));
}

export function readNumberFile(pid: number, name: string): number {
  return Number(readProcText(pid, name).trim());
}

export function readComm(pid: number, tid?: number): string {
  return readProcText(pid, tid === undefined ? 'comm' : `task/${tid}/comm`).replace(/\n$/, '');
}
