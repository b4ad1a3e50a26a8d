/**
 * `godwit inspect DIR`: what someone debugging an image wants to see at a glance (what checkpointctl and
 * `crit x` show): the process tree with commands, threads, each process's memory map with resident and dumped
 * size per mapping, open files and sockets per fd, namespaces, cgroup, total sizes, and how the image was made.
 *
 * Works on godwit's images and on CRIU's own (CRIU 4 keeps VMAs in mm-N.img and every file in files.img; the
 * older per-kind images are read too). What cannot be read is listed under `problems` rather than hiding the rest.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { GodwitError, ImageError } from '../util/errors';
import { toSysError } from './atomic-file';
import { containerName, plainPagesName } from './container-format';
import { ContainerReader } from './container-reader';
import type { ImageEntry } from './entry';
import { readImageFile } from './io';
import { ImageProvenance, MANIFEST_NAME, ManifestMissing, readManifest } from './manifest';
import { VerifyProblem, problemOf } from './verify-problem';
import type { Msg } from './wire';

const PAGE_SIZE = 4096;
// pmap.flags
const PE_PARENT = 1;
const PE_PRESENT = 4;
// VMA status bits (CRIU's image ABI)
const VMA = {
  STACK: 1 << 1,
  VSYSCALL: 1 << 2,
  VDSO: 1 << 3,
  HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6,
  FILE_SHARED: 1 << 7,
  ANON_SHARED: 1 << 8,
  SYSVIPC: 1 << 10,
  SOCKET: 1 << 11,
  VVAR: 1 << 12,
  AIORING: 1 << 13,
  MEMFD: 1 << 14,
  SHSTK: 1 << 15,
  GUARD: 1 << 16,
  UPROBES: 1 << 17,
};
const MAP_GROWSDOWN = 0x100;
const FD_TYPES = [
  'UND', 'REG', 'PIPE', 'FIFO', 'INETSK', 'UNIXSK', 'EVENTFD', 'EVENTPOLL', 'INOTIFY', 'SIGNALFD', 'PACKETSK', 'TTY',
  'FANOTIFY', 'NETLINKSK', 'NS', 'TUNF', 'EXT', 'TIMERFD', 'MEMFD', 'BPFMAP', 'PIDFD', 'IO_URING',
];
const TASK_STATES: Record<number, string> = { 1: 'alive', 2: 'zombie', 3: 'stopped', 4: 'helper', 5: 'thread' };
const NS_KINDS = ['pid', 'net', 'ipc', 'uts', 'mnt', 'user', 'cgroup', 'time'] as const;

export interface MappingInfo {
  start: string;
  end: string;
  /** e.g. "r-xp" */
  prot: string;
  name: string;
  /** Bytes the pagemap lists for this mapping (populated when dumped: here, in a parent image or lazy). */
  resident: number;
  /** Bytes whose content is in this image's pages file. */
  dumped: number;
}

export interface FdInfo {
  fd: number;
  type: string;
  what: string;
}

export interface ProcessInfo {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  comm?: string;
  state?: string;
  exe?: string;
  cwd?: string;
  root?: string;
  threads: Array<{ tid: number; comm?: string }>;
  namespaces?: Record<string, number>;
  /** Namespace kinds this process does not share with the image's root task. */
  ownNamespaces?: string[];
  uts?: { nodename: string; domainname: string };
  cgroup?: { set: number; controllers: Array<{ name: string; path: string }> };
  fds?: FdInfo[];
  memory?: { mappings: MappingInfo[]; resident: number; dumped: number; pagesFile?: string };
}

export interface InspectReport {
  dir: string;
  made: {
    manifest?: ImageProvenance;
    inventory?: { imgVersion?: number; criuRunId?: string; lsm?: number };
    /** CRIU's stats-dump, when present (times in microseconds). */
    criuStats?: { frozenTimeUs: number; freezingTimeUs: number; memdumpTimeUs: number; memwriteTimeUs: number; pagesScanned: number; pagesWritten: number };
  };
  processes: ProcessInfo[];
  totals: {
    processes: number;
    threads: number;
    mappings: number;
    resident: number;
    dumped: number;
    /** Bytes of page data in the pages files, and what the files take on disk (compressed for godwit). */
    pagesBytes: number;
    pagesFileBytes: number;
    imageFiles: number;
    imageBytes: number;
  };
  problems: VerifyProblem[];
}

function hex(v: unknown): string {
  return BigInt(v as bigint).toString(16);
}

function num(v: unknown): number {
  return typeof v === 'bigint' ? Number(v) : (v as number);
}

class Loader {
  readonly problems: VerifyProblem[] = [];
  private readonly names: Set<string>;
  constructor(
    readonly dir: string,
    names: string[],
  ) {
    this.names = new Set(names);
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** Entries of `name`, or undefined (absent, or unreadable: then a problem is recorded). */
  async entries(name: string): Promise<ImageEntry[] | undefined> {
    if (!this.names.has(name)) return undefined;
    try {
      return (await readImageFile(path.join(this.dir, name))).entries;
    } catch (err) {
      this.problems.push(problemOf(err, name));
      return undefined;
    }
  }

  async first(name: string): Promise<Msg | undefined> {
    return (await this.entries(name))?.[0]?.msg;
  }
}

/** File table: id -> [type, description], from files.img and the older per-kind images. */
async function fileTable(l: Loader): Promise<Map<number, { type: string; what: string }>> {
  const t = new Map<number, { type: string; what: string }>();
  for (const e of (await l.entries('files.img')) ?? []) {
    const m = e.msg;
    const type = FD_TYPES[num(m.type)] ?? `type ${String(m.type)}`;
    t.set(num(m.id), { type, what: describeFile(type, m) });
  }
  const legacy: Array<[string, string, string]> = [
    ['reg-files.img', 'REG', 'reg'], ['pipes.img', 'PIPE', 'pipe'], ['fifo.img', 'FIFO', 'fifo'], ['unixsk.img', 'UNIXSK', 'usk'],
    ['inetsk.img', 'INETSK', 'isk'], ['eventfd.img', 'EVENTFD', 'efd'], ['eventpoll.img', 'EVENTPOLL', 'epfd'],
    ['signalfd.img', 'SIGNALFD', 'sgfd'], ['timerfd.img', 'TIMERFD', 'tfd'], ['inotify.img', 'INOTIFY', 'ify'],
  ];
  for (const [file, type, field] of legacy) {
    for (const e of (await l.entries(file)) ?? []) {
      const id = num(e.msg.id);
      if (!t.has(id)) t.set(id, { type, what: describeFile(type, { [field]: e.msg }) });
    }
  }
  return t;
}

const O_ACCMODE = ['O_RDONLY', 'O_WRONLY', 'O_RDWR', 'O_ACCMODE'];

function ipAddr(family: number, words: unknown): string {
  const w = (words as number[] | undefined) ?? [];
  const b = Buffer.alloc(w.length * 4);
  w.forEach((x, i) => b.writeUInt32LE(x >>> 0, i * 4));
  if (family === 2) return [...b.subarray(0, 4)].join('.');
  const parts: string[] = [];
  for (let i = 0; i + 1 < b.length; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  return `[${parts.join(':')}]`;
}

function describeFile(type: string, m: Msg): string {
  const sub = (k: string): Msg => (m[k] as Msg | undefined) ?? {};
  switch (type) {
    case 'REG': {
      const r = sub('reg');
      const flags = num(r.flags ?? 0);
      const pos = r.pos !== undefined ? num(r.pos) : 0;
      return `${String(r.name)} (${O_ACCMODE[flags & 3]}${pos ? `, pos ${pos}` : ''})`;
    }
    case 'PIPE':
      return `pipe:[${String(sub('pipe').pipe_id)}]`;
    case 'FIFO':
      return `fifo:[${String(sub('fifo').pipe_id)}]`;
    case 'UNIXSK': {
      const u = sub('usk');
      const name = Buffer.isBuffer(u.name) ? u.name : Buffer.alloc(0);
      const shown = name.length === 0 ? '' : name[0] === 0 ? ` @${name.subarray(1).toString('latin1')}` : ` ${name.toString('latin1')}`;
      const st: Record<number, string> = { 1: 'established', 7: 'closed', 10: 'listen' };
      const ty: Record<number, string> = { 1: 'stream', 2: 'dgram', 5: 'seqpacket' };
      return `unix ${ty[num(u.type)] ?? u.type} ${st[num(u.state)] ?? `state ${String(u.state)}`}${shown} ino ${String(u.ino)}${u.peer ? ` peer ${String(u.peer)}` : ''}${num(u.uflags ?? 0) & 1 ? ' (outside the tree)' : ''}`;
    }
    case 'INETSK': {
      const s = sub('isk');
      const fam = num(s.family);
      const proto: Record<number, string> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };
      const st: Record<number, string> = { 1: 'established', 7: 'closed', 10: 'listen' };
      const p = `${proto[num(s.proto)] ?? `proto ${String(s.proto)}`}${fam === 10 ? '6' : ''}`;
      return `${p} ${ipAddr(fam, s.src_addr)}:${String(s.src_port)} -> ${ipAddr(fam, s.dst_addr)}:${String(s.dst_port)} ${st[num(s.state)] ?? `state ${String(s.state)}`}`;
    }
    case 'EVENTFD':
      return `eventfd counter ${String(sub('efd').counter)}`;
    case 'EVENTPOLL':
      return `eventpoll, ${((sub('epfd').tfd as unknown[]) ?? []).length} targets`;
    case 'SIGNALFD':
      return `signalfd mask 0x${hex(sub('sgfd').sigmask ?? 0n)}`;
    case 'TIMERFD': {
      const t = sub('tfd');
      return `timerfd clock ${String(t.clockid)}`;
    }
    case 'INOTIFY':
      return `inotify, ${((sub('ify').wd as unknown[]) ?? []).length} watches`;
    case 'MEMFD':
      return `memfd ${String(sub('memfd').name ?? '')}`.trim();
    case 'TTY':
      return `tty index ${String(sub('tty').index ?? '?')}`;
    case 'NS':
      return `namespace file ns ${String(sub('nsf').ns_id ?? '?')}`;
    case 'PACKETSK':
      return 'packet socket';
    case 'NETLINKSK':
      return `netlink socket protocol ${String(sub('nlsk').protocol ?? '?')}`;
    case 'PIDFD':
      return `pidfd`;
    default:
      return type;
  }
}

function protString(prot: number, flags: number): string {
  return `${prot & 1 ? 'r' : '-'}${prot & 2 ? 'w' : '-'}${prot & 4 ? 'x' : '-'}${flags & 1 ? 's' : 'p'}`;
}

function mappingName(v: Msg, files: Map<number, { type: string; what: string }>): string {
  const status = num(v.status ?? 0);
  if (status & VMA.VDSO) return '[vdso]';
  if (status & VMA.VVAR) return '[vvar]';
  if (status & VMA.VSYSCALL) return '[vsyscall]';
  if (status & VMA.UPROBES) return '[uprobes]';
  if (status & VMA.GUARD) return '[guard]';
  if (status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.MEMFD)) {
    const f = files.get(num(v.shmid));
    const name = f ? f.what.replace(/ \(O_[A-Z]+(, pos \d+)?\)$/, '') : `file id ${String(v.shmid)}`;
    return status & VMA.MEMFD ? `memfd: ${name}` : name;
  }
  if (status & VMA.ANON_SHARED) return `[anon shared ${hex(v.shmid)}]`;
  if (status & VMA.SYSVIPC) return `[sysv shm ${String(v.shmid)}]`;
  if (status & VMA.SOCKET) return '[socket]';
  if (status & VMA.AIORING) return '[aio]';
  if (status & VMA.HEAP) return '[heap]';
  if (status & VMA.STACK || num(v.flags) & MAP_GROWSDOWN) return '[stack]';
  if (status & VMA.SHSTK) return '[shadow stack]';
  return '';
}

interface Run {
  start: bigint;
  end: bigint;
  present: boolean;
}

function pagemapRuns(entries: ImageEntry[]): { pagesId: number; runs: Run[] } {
  const runs: Run[] = [];
  for (let i = 1; i < entries.length; i++) {
    const m = entries[i]!.msg;
    const flags = m.flags !== undefined ? num(m.flags) : m.in_parent === true ? PE_PARENT : PE_PRESENT;
    const nr = m.nr_pages !== undefined ? BigInt(m.nr_pages as bigint) : BigInt(num(m.compat_nr_pages));
    const start = BigInt(m.vaddr as bigint);
    runs.push({ start, end: start + nr * BigInt(PAGE_SIZE), present: (flags & PE_PRESENT) !== 0 && (flags & PE_PARENT) === 0 });
  }
  return { pagesId: num(entries[0]?.msg.pages_id ?? 0), runs };
}

function overlap(aStart: bigint, aEnd: bigint, bStart: bigint, bEnd: bigint): number {
  const s = aStart > bStart ? aStart : bStart;
  const e = aEnd < bEnd ? aEnd : bEnd;
  return e > s ? Number(e - s) : 0;
}

async function memoryOf(l: Loader, pid: number, files: Map<number, { type: string; what: string }>, mm: Msg | undefined): Promise<ProcessInfo['memory']> {
  let vmas = (mm?.vmas as Msg[] | undefined) ?? [];
  if (vmas.length === 0 && l.has(`vmas-${pid}.img`)) vmas = ((await l.entries(`vmas-${pid}.img`)) ?? []).map((e) => e.msg);
  if (!mm && vmas.length === 0) return undefined;
  const pm = await l.entries(`pagemap-${pid}.img`);
  const { pagesId, runs } = pm ? pagemapRuns(pm) : { pagesId: undefined, runs: [] as Run[] };
  const mappings: MappingInfo[] = [];
  let resident = 0;
  let dumped = 0;
  for (const v of vmas) {
    const start = BigInt(v.start as bigint);
    const end = BigInt(v.end as bigint);
    let r = 0;
    let d = 0;
    for (const run of runs) {
      const o = overlap(start, end, run.start, run.end);
      r += o;
      if (run.present) d += o;
    }
    resident += r;
    dumped += d;
    mappings.push({ start: hex(start), end: hex(end), prot: protString(num(v.prot), num(v.flags)), name: mappingName(v, files), resident: r, dumped: d });
  }
  const pagesFile = pagesId === undefined ? undefined : [plainPagesName(pagesId), containerName(pagesId)].find((n) => l.has(n));
  return { mappings, resident, dumped, ...(pagesFile ? { pagesFile } : {}) };
}

async function sizesOfPages(dir: string, names: string[], problems: VerifyProblem[]): Promise<{ pagesBytes: number; pagesFileBytes: number }> {
  let pagesBytes = 0;
  let pagesFileBytes = 0;
  for (const n of names) {
    if (/^pages-\d+\.img$/.test(n)) {
      const s = (await fsp.stat(path.join(dir, n))).size;
      pagesBytes += s;
      pagesFileBytes += s;
    } else if (/^pages-\d+\.gwz$/.test(n)) {
      pagesFileBytes += (await fsp.stat(path.join(dir, n))).size;
      try {
        const r = await ContainerReader.open(path.join(dir, n));
        pagesBytes += r.size;
        await r.close();
      } catch (err) {
        problems.push(problemOf(err, n));
      }
    }
  }
  return { pagesBytes, pagesFileBytes };
}

export async function inspectImageDir(dir: string): Promise<InspectReport> {
  let names: string[];
  try {
    const st = await fsp.stat(dir);
    if (!st.isDirectory()) throw new GodwitError(`${dir} is not a directory`);
    names = (await fsp.readdir(dir)).filter((n) => fs.statSync(path.join(dir, n)).isFile()).sort();
  } catch (err) {
    throw err instanceof GodwitError ? err : toSysError(err, 'read image directory', dir);
  }
  if (!names.includes('pstree.img')) {
    throw new ImageError(path.join(dir, 'pstree.img'), 0, `no pstree.img in ${dir}: not an image directory (or the dump did not get that far)`);
  }
  const l = new Loader(dir, names);
  const report: InspectReport = {
    dir,
    made: {},
    processes: [],
    totals: { processes: 0, threads: 0, mappings: 0, resident: 0, dumped: 0, pagesBytes: 0, pagesFileBytes: 0, imageFiles: 0, imageBytes: 0 },
    problems: l.problems,
  };

  try {
    report.made.manifest = (await readManifest(dir)).made;
  } catch (err) {
    if (!(err instanceof ManifestMissing)) l.problems.push(problemOf(err, MANIFEST_NAME));
  }
  const inv = await l.first('inventory.img');
  if (inv) {
    report.made.inventory = {
      ...(inv.img_version !== undefined ? { imgVersion: num(inv.img_version) } : {}),
      ...(typeof inv.dump_criu_run_id === 'string' ? { criuRunId: inv.dump_criu_run_id } : {}),
      ...(inv.lsmtype !== undefined ? { lsm: num(inv.lsmtype) } : {}),
    };
  }
  const stats = (await l.first('stats-dump'))?.dump as Msg | undefined;
  if (stats) {
    report.made.criuStats = {
      frozenTimeUs: num(stats.frozen_time),
      freezingTimeUs: num(stats.freezing_time),
      memdumpTimeUs: num(stats.memdump_time),
      memwriteTimeUs: num(stats.memwrite_time),
      pagesScanned: num(stats.pages_scanned),
      pagesWritten: num(stats.pages_written),
    };
  }

  const files = await fileTable(l);
  const fileName = (id: unknown): string | undefined => (id === undefined ? undefined : files.get(num(id))?.what.replace(/ \(O_[A-Z]+(, pos \d+)?\)$/, ''));
  const cgroup = await l.first('cgroup.img');
  const cgSets = new Map<number, Array<{ name: string; path: string }>>();
  for (const s of (cgroup?.sets as Msg[] | undefined) ?? []) {
    cgSets.set(num(s.id), ((s.ctls as Msg[] | undefined) ?? []).map((c) => ({ name: String(c.name), path: String(c.path) })));
  }
  const rootIds = inv?.root_ids as Msg | undefined;
  const pstree = (await l.entries('pstree.img')) ?? [];
  for (const e of pstree) {
    const t = e.msg;
    const pid = num(t.pid);
    const p: ProcessInfo = {
      pid,
      ppid: num(t.ppid),
      pgid: num(t.pgid),
      sid: num(t.sid),
      threads: ((t.threads as unknown[] | undefined) ?? []).map((x) => ({ tid: num(x) })),
    };
    const core = await l.first(`core-${pid}.img`);
    const tc = core?.tc as Msg | undefined;
    if (tc) {
      p.comm = String(tc.comm);
      p.state = TASK_STATES[num(tc.task_state)] ?? `state ${String(tc.task_state)}`;
    }
    for (const th of p.threads) {
      const tcore = th.tid === pid ? core : await l.first(`core-${th.tid}.img`);
      const comm = (tcore?.thread_core as Msg | undefined)?.comm;
      if (typeof comm === 'string') th.comm = comm;
      else if (th.tid === pid && p.comm !== undefined) th.comm = p.comm;
    }
    const ids = await l.first(`ids-${pid}.img`);
    if (ids) {
      p.namespaces = {};
      p.ownNamespaces = [];
      for (const k of NS_KINDS) {
        const v = ids[`${k}_ns_id`];
        if (v === undefined) continue;
        p.namespaces[k] = num(v);
        if (rootIds && rootIds[`${k}_ns_id`] !== undefined && num(rootIds[`${k}_ns_id`]) !== num(v)) p.ownNamespaces.push(k);
      }
      const uts = ids.uts_ns_id !== undefined ? await l.first(`utsns-${num(ids.uts_ns_id)}.img`) : undefined;
      if (uts) p.uts = { nodename: String(uts.nodename), domainname: String(uts.domainname) };
      const fdinfo = await l.entries(`fdinfo-${num(ids.files_id)}.img`);
      if (fdinfo) {
        p.fds = fdinfo
          .map((f) => {
            const info = files.get(num(f.msg.id));
            return { fd: num(f.msg.fd), type: info?.type ?? FD_TYPES[num(f.msg.type)] ?? String(f.msg.type), what: info?.what ?? `file id ${String(f.msg.id)} (not in the file table)` };
          })
          .sort((a, b) => a.fd - b.fd);
      }
    }
    const cgSet = (core?.thread_core as Msg | undefined)?.cg_set ?? tc?.cg_set;
    if (cgSet !== undefined) p.cgroup = { set: num(cgSet), controllers: cgSets.get(num(cgSet)) ?? [] };
    const fsEntry = await l.first(`fs-${pid}.img`);
    const cwd = fileName(fsEntry?.cwd_id);
    const root = fileName(fsEntry?.root_id);
    if (cwd) p.cwd = cwd;
    if (root) p.root = root;
    const mm = await l.first(`mm-${pid}.img`);
    const exe = fileName(mm?.exe_file_id);
    if (exe) p.exe = exe;
    const memory = await memoryOf(l, pid, files, mm);
    if (memory) p.memory = memory;
    report.processes.push(p);
  }

  const tt = report.totals;
  tt.processes = report.processes.length;
  for (const p of report.processes) {
    tt.threads += p.threads.length;
    tt.mappings += p.memory?.mappings.length ?? 0;
    tt.resident += p.memory?.resident ?? 0;
    tt.dumped += p.memory?.dumped ?? 0;
  }
  Object.assign(tt, await sizesOfPages(dir, names, l.problems));
  tt.imageFiles = names.length;
  for (const n of names) tt.imageBytes += (await fsp.stat(path.join(dir, n))).size;
  return report;
}
