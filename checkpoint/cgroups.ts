/**
 * A process's cgroups: where it is in each hierarchy, the limits set there, CRIU's cgroup.img built from them,
 * and the cgroup freezer. Hosts are either pure cgroup v2 (/sys/fs/cgroup) or hybrid (v1 controllers under
 * /sys/fs/cgroup/<ctrl> plus a controller-less v2 tree at /sys/fs/cgroup/unified, as this project's machines):
 * the hierarchies are found from mountinfo, never assumed.
 */
import * as fs from 'fs';
import * as path from 'path';
import { GodwitError } from '../util/errors';
import { readCgroup } from './proc/misc';

export interface CgroupHierarchy {
  version: 1 | 2;
  /** v1: the controllers bound to it (cpu, cpuacct / name=systemd); v2: ['unified']. */
  controllers: string[];
  mount: string;
}

export interface CgroupMember extends CgroupHierarchy {
  /** /proc/PID/cgroup's hierarchy number (0 for v2). */
  hierarchy: number;
  /** The path inside the hierarchy, e.g. /godwit-ctr/ID. */
  path: string;
  /** The directory on this host. */
  dir: string;
}

/** The v2 hierarchy's name in cgroup.img (CRIU's). */
export const V2_NAME = 'unified';

/** Every mounted cgroup hierarchy of this host (from godwit's own mount namespace). */
export function cgroupHierarchies(): CgroupHierarchy[] {
  const out: CgroupHierarchy[] = [];
  const seen = new Set<string>();
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [fstype, , superOpts] = line.slice(sep + 3).split(' ');
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const fields = line.slice(0, sep).split(' ');
    if (fields[3] !== '/') continue; // a bind mount of a sub-tree: the full mount says more
    const mount = unescapeMount(fields[4]);
    const controllers =
      fstype === 'cgroup2' ? [V2_NAME] : superOpts.split(',').filter((o) => !['rw', 'ro'].includes(o) && (!o.includes('=') || o.startsWith('name=')) && !o.startsWith('no') && o !== 'clone_children' && o !== 'xattr');
    const key = controllers.join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ version: fstype === 'cgroup2' ? 2 : 1, controllers, mount });
  }
  return out;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The directories of cgroup `root` and every cgroup below it, in every hierarchy, deepest first (the order
 *  rmdir needs). */
export function cgroupTreeDirs(root: string, hierarchies = cgroupHierarchies()): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let kids: fs.Dirent[];
    try {
      kids = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return; // not there in this hierarchy
    }
    for (const k of kids) if (k.isDirectory()) walk(path.join(d, k.name));
    out.push(d);
  };
  for (const h of hierarchies) walk(path.join(h.mount, root));
  return out;
}

/** Where PID is in every hierarchy that this host has mounted. */
export function cgroupMembership(pid: number, hierarchies = cgroupHierarchies()): CgroupMember[] {
  const out: CgroupMember[] = [];
  for (const line of readCgroup(pid)) {
    const ctrls = line.hierarchy === 0 && line.controllers === '' ? [V2_NAME] : line.controllers.split(',');
    const h = hierarchies.find((x) => x.controllers.join(',') === ctrls.join(','));
    if (!h) continue; // a hierarchy not mounted here: nothing godwit can read or recreate
    out.push({ ...h, hierarchy: line.hierarchy, path: line.path, dir: path.join(h.mount, line.path) });
  }
  return out;
}

/** The limits godwit carries across (absent: not available in this host's hierarchies). */
export interface CgroupLimits {
  /** Bytes; 'max' = unlimited. */
  memoryMax?: bigint | 'max';
  pidsMax?: number | 'max';
  /** Microseconds per period; 'max' = unlimited. */
  cpuQuota?: number | 'max';
  cpuPeriod?: number;
  /** v1 cpu.shares. */
  cpuShares?: number;
  /** v2 cpu.weight. */
  cpuWeight?: number;
  cpus?: string;
  mems?: string;
}

/** v1 reports "no limit" as the largest page-aligned signed 64-bit value. */
const V1_MEMORY_UNLIMITED = 9223372036854771712n;

/**
 * Limit files saved per controller, in the order they must be written back (cpuset.cpus/mems before tasks can
 * join; cfs_period before cfs_quota, as a quota larger than the old period may be refused otherwise).
 */
export const LIMIT_FILES: Record<string, string[]> = {
  memory: ['memory.limit_in_bytes', 'memory.soft_limit_in_bytes', 'memory.swappiness'],
  cpu: ['cpu.shares', 'cpu.cfs_period_us', 'cpu.cfs_quota_us'],
  cpuset: ['cpuset.cpus', 'cpuset.mems'],
  pids: ['pids.max'],
  [V2_NAME]: ['cpuset.cpus', 'cpuset.mems', 'memory.max', 'memory.high', 'memory.low', 'memory.min', 'pids.max', 'cpu.max', 'cpu.weight'],
};

function readProp(dir: string, file: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dir, file), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The limits in force for PID's own cgroups (v1 files where v1 has the controller, else v2's). */
export function readCgroupLimits(members: CgroupMember[]): CgroupLimits {
  const out: CgroupLimits = {};
  const v1 = (c: string): string | undefined => members.find((m) => m.version === 1 && m.controllers.includes(c))?.dir;
  const v2 = members.find((m) => m.version === 2)?.dir;
  const mem = v1('memory');
  if (mem) {
    const v = readProp(mem, 'memory.limit_in_bytes');
    if (v !== undefined) out.memoryMax = BigInt(v) >= V1_MEMORY_UNLIMITED ? 'max' : BigInt(v);
  } else if (v2 && readProp(v2, 'memory.max') !== undefined) {
    const v = readProp(v2, 'memory.max')!;
    out.memoryMax = v === 'max' ? 'max' : BigInt(v);
  }
  const pidsDir = v1('pids') ?? v2;
  const pids = pidsDir && readProp(pidsDir, 'pids.max');
  if (pids !== undefined && pids !== '') out.pidsMax = pids === 'max' ? 'max' : Number(pids);
  const cpu = v1('cpu');
  if (cpu) {
    const q = readProp(cpu, 'cpu.cfs_quota_us');
    if (q !== undefined) out.cpuQuota = Number(q) < 0 ? 'max' : Number(q);
    const p = readProp(cpu, 'cpu.cfs_period_us');
    if (p !== undefined) out.cpuPeriod = Number(p);
    const s = readProp(cpu, 'cpu.shares');
    if (s !== undefined) out.cpuShares = Number(s);
  } else if (v2) {
    const m = readProp(v2, 'cpu.max');
    if (m !== undefined) {
      const [q, p] = m.split(' ');
      out.cpuQuota = q === 'max' ? 'max' : Number(q);
      out.cpuPeriod = Number(p);
    }
    const w = readProp(v2, 'cpu.weight');
    if (w !== undefined) out.cpuWeight = Number(w);
  }
  const cs = v1('cpuset') ?? v2;
  if (cs) {
    const c = readProp(cs, 'cpuset.cpus');
    if (c) out.cpus = c;
    const m = readProp(cs, 'cpuset.mems');
    if (m) out.mems = m;
  }
  return out;
}

type Msg = Record<string, unknown>;

/**
 * cgroup_entry for a tree whose tasks all share PID's cgroups: one cg set (id 1) naming the path in every
 * hierarchy, and per hierarchy the directory chain from its root to that path (one cgroup_dir_entry per
 * component, nested, each with its permissions), the limit files (LIMIT_FILES) on the innermost one only:
 * the directories above it belong to the host.
 */
export function cgroupImage(members: CgroupMember[]): Msg {
  const ctls: Msg[] = [];
  const controllers: Msg[] = [];
  for (const m of members) {
    const name = m.controllers.join(',');
    ctls.push({ name, path: m.path });
    const parts = m.path.split('/').filter(Boolean);
    if (parts.length === 0) {
      controllers.push({ cnames: m.controllers, dirs: [] });
      continue;
    }
    let leaf: Msg | undefined;
    const chain = parts.map((p, i) => {
      const dir = path.join(m.mount, ...parts.slice(0, i + 1));
      const st = fs.statSync(dir);
      const entry: Msg = { dir_name: p, children: [], properties: [], dir_perms: { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid } };
      leaf = entry;
      return entry;
    });
    for (let i = 0; i + 1 < chain.length; i++) (chain[i].children as Msg[]).push(chain[i + 1]);
    const props: Msg[] = [];
    const keys = m.version === 2 ? LIMIT_FILES[V2_NAME] : m.controllers.flatMap((c) => LIMIT_FILES[c] ?? []);
    for (const f of keys) {
      const v = readProp(m.dir, f);
      if (v !== undefined) props.push({ name: f, value: v });
    }
    leaf!.properties = props;
    controllers.push({ cnames: m.controllers, dirs: [chain[0]] });
  }
  return { sets: [{ id: 1, ctls }], controllers };
}

// ---- the freezer ----

export interface FrozenCgroup {
  /** The freezer file that was written (freezer.state or cgroup.freeze). */
  file: string;
  version: 1 | 2;
  /** ms from the write until the kernel said frozen. */
  ms: number;
  /** Idempotent; never throws for an already removed cgroup (nothing left to thaw). */
  thaw(): void;
}

const frozen = new Set<FrozenCgroup>();
let exitHook = false;

/** Time allowed for all tasks to freeze (100 busy tasks took ~5 ms here; tasks in D state can take longer). */
const FREEZE_TIMEOUT_MS = 5000;

/**
 * Freezes the cgroup PID is in: v2 cgroup.freeze when PID's v2 directory has it (frozen tasks still report
 * ptrace stops there), else the v1 freezer. Waits until the kernel reports the cgroup frozen; on a timeout or
 * any error the cgroup is thawed before throwing. Thawed also if the process exits while it is frozen.
 */
export async function freezeCgroup(members: CgroupMember[], opts: { prefer?: 1 | 2; timeoutMs?: number } = {}): Promise<FrozenCgroup> {
  const v2 = members.find((m) => m.version === 2 && m.path !== '/' && fs.existsSync(path.join(m.dir, 'cgroup.freeze')));
  const v1 = members.find((m) => m.version === 1 && m.controllers.includes('freezer') && m.path !== '/');
  const use = opts.prefer === 1 ? (v1 ?? v2) : (v2 ?? v1);
  if (!use) throw new GodwitError(`no cgroup freezer for this task: it is in the root cgroup of every freezer hierarchy (${members.map((m) => `${m.controllers.join(',')}:${m.path}`).join(' ')})`);
  const version = use.version;
  const file = path.join(use.dir, version === 2 ? 'cgroup.freeze' : 'freezer.state');
  const t0 = process.hrtime.bigint();
  let thawed = false;
  const handle: FrozenCgroup = {
    file,
    version,
    ms: 0,
    thaw: () => {
      if (thawed) return;
      thawed = true;
      frozen.delete(handle);
      try {
        fs.writeFileSync(file, version === 2 ? '0' : 'THAWED');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new GodwitError(`cannot thaw ${file}: ${(e as Error).message}`, { cause: e });
      }
    },
  };
  frozen.add(handle);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => [...frozen].forEach((f) => { try { f.thaw(); } catch { /* exiting */ } }));
  }
  try {
    fs.writeFileSync(file, version === 2 ? '1' : 'FROZEN');
    const deadline = Date.now() + (opts.timeoutMs ?? FREEZE_TIMEOUT_MS);
    for (;;) {
      const done =
        version === 2 ? /^frozen 1$/m.test(fs.readFileSync(path.join(use.dir, 'cgroup.events'), 'utf8')) : fs.readFileSync(file, 'utf8').trim() === 'FROZEN';
      if (done) break;
      if (Date.now() > deadline) throw new GodwitError(`cgroup ${use.dir} did not freeze within ${opts.timeoutMs ?? FREEZE_TIMEOUT_MS} ms (a task in uninterruptible sleep?)`);
      await new Promise((r) => setTimeout(r, 1));
    }
    handle.ms = Number(process.hrtime.bigint() - t0) / 1e6;
    return handle;
  } catch (e) {
    handle.thaw();
    throw e instanceof GodwitError ? e : new GodwitError(`cannot freeze ${file}: ${(e as Error).message}`, { cause: e });
  }
}

/** Runs fn with the cgroup frozen; thawed afterwards whatever fn does. */
export async function withFrozenCgroup<T>(members: CgroupMember[], fn: (f: FrozenCgroup) => Promise<T>, opts?: { prefer?: 1 | 2 }): Promise<T> {
  const f = await freezeCgroup(members, opts);
  try {
    return await fn(f);
  } finally {
    f.thaw();
  }
}

/** The freezer state of PID's cgroup as the kernel reports it, for tests and preflight. */
export function freezerState(members: CgroupMember[]): { v1?: string; v2?: boolean } {
  const out: { v1?: string; v2?: boolean } = {};
  const v1 = members.find((m) => m.version === 1 && m.controllers.includes('freezer'));
  if (v1) out.v1 = readProp(v1.dir, 'freezer.state');
  const v2 = members.find((m) => m.version === 2);
  if (v2) {
    const ev = readProp(v2.dir, 'cgroup.events');
    if (ev !== undefined) out.v2 = /^frozen 1$/m.test(ev);
  }
  return out;
}
