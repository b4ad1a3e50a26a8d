/**
 * Resolving a container target: `--container ID` through the runtime's state directory (runc:
 * /run/runc/ID/state.json, crun: /run/crun/ID/status), `--cgroup PATH` through the cgroup's task list.
 * Both give the init pid (the root of the tree to dump), every pid in the container's cgroup, and its cgroups.
 */
import * as fs from 'fs';
import * as path from 'path';
import { GodwitError, UsageError } from '../util/errors';
import { CgroupMember, cgroupHierarchies, cgroupMembership } from './cgroups';

export type Runtime = 'runc' | 'crun';

export const RUNTIME_ROOTS: Record<Runtime, string> = { runc: '/run/runc', crun: '/run/crun' };

export interface ContainerTarget {
  runtime: Runtime;
  id: string;
  /** The container's init, in godwit's pid namespace. */
  pid: number;
  /** Every process in the container's cgroup (init included), sorted. */
  pids: number[];
  bundle?: string;
  rootfs?: string;
  /** The runtime's file this came from. */
  statePath: string;
  cgroups: CgroupMember[];
}

/** A container id as runc and crun accept them. */
const ID_RE = /^[\w+\-.]{1,1024}$/;

function startTime(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return undefined;
  }
}

/**
 * Looks a container up by id in runc's or crun's state (both when `runtime` is not given; `root` overrides the
 * runtime's --root). Throws a clear error if it is unknown, stopped, or its init pid was reused.
 */
export function resolveContainer(id: string, opts: { runtime?: Runtime; root?: string } = {}): ContainerTarget {
  if (!ID_RE.test(id)) throw new UsageError(`--container ${JSON.stringify(id)}: not a container id (letters, digits, _ + - . only)`);
  const runtimes: Runtime[] = opts.runtime ? [opts.runtime] : ['runc', 'crun'];
  const tried: string[] = [];
  for (const rt of runtimes) {
    const root = opts.root ?? RUNTIME_ROOTS[rt];
    const file = rt === 'runc' ? path.join(root, id, 'state.json') : path.join(root, id, 'status');
    tried.push(file);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new GodwitError(`cannot read ${rt}'s state of container ${id} (${file}): ${(e as Error).message}`, { cause: e });
    }
    let st: Record<string, unknown>;
    try {
      st = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new GodwitError(`${file} is not valid JSON (${(e as Error).message}): is ${rt} writing it right now? try again`, { cause: e });
    }
    let pid: number;
    let started: number | undefined;
    let bundle: string | undefined;
    let rootfs: string | undefined;
    if (rt === 'runc') {
      pid = Number(st.init_process_pid);
      started = st.init_process_start === undefined ? undefined : Number(st.init_process_start);
      const cfg = (st.config ?? {}) as Record<string, unknown>;
      rootfs = typeof cfg.rootfs === 'string' ? cfg.rootfs : undefined;
      const label = ((cfg.labels ?? []) as string[]).find((l) => l.startsWith('bundle='));
      bundle = label?.slice('bundle='.length);
    } else {
      // crun's status file: {"pid": N, "process-start-time": T, "bundle": ..., "rootfs": ..., "cgroup-path": ...}.
      pid = Number(st.pid);
      started = st['process-start-time'] === undefined ? undefined : Number(st['process-start-time']);
      bundle = typeof st.bundle === 'string' ? st.bundle : undefined;
      rootfs = typeof st.rootfs === 'string' ? st.rootfs : undefined;
    }
    if (!Number.isInteger(pid) || pid <= 0) throw new GodwitError(`${file}: container ${id} has no init pid (${String(pid)}): is it created and running?`);
    const now = startTime(pid);
    if (now === undefined) throw new GodwitError(`container ${id} (${rt}) is not running: its init pid ${pid} is gone (${rt} delete ${id} cleans it up)`);
    if (started !== undefined && started !== 0 && now !== started)
      throw new GodwitError(`container ${id} (${rt}) is not running: pid ${pid} now belongs to another process (start time ${now}, the container's ${started})`);
    const cgroups = cgroupMembership(pid);
    return { runtime: rt, id, pid, pids: cgroupPids(cgroups), bundle, rootfs, statePath: file, cgroups };
  }
  throw new GodwitError(`no container ${JSON.stringify(id)}: not found in ${tried.join(' or ')} (see \`runc list\` / \`crun list\`)`, { code: 'ENOENT' });
}

/** Every pid in the cgroup directories given (v2 first: it lists the whole tree on pure v2 hosts too). */
export function cgroupPids(members: CgroupMember[]): number[] {
  const order = [...members].sort((a, b) => b.version - a.version);
  for (const m of order) {
    if (m.path === '/') continue;
    try {
      const pids = fs.readFileSync(path.join(m.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
      return pids.sort((a, b) => a - b);
    } catch {
      /* try the next hierarchy */
    }
  }
  return [];
}

export interface CgroupTarget {
  /** The tree's root: the one process in the cgroup whose parent is outside it. */
  pid: number;
  pids: number[];
  cgroups: CgroupMember[];
}

/**
 * `--cgroup PATH`: a directory under a cgroup mount (/sys/fs/cgroup/memory/x/y) or a path inside the
 * hierarchies (/x/y). The processes in it must form one tree.
 */
export function resolveCgroup(p: string): CgroupTarget {
  const hs = cgroupHierarchies();
  let dir: string | undefined;
  if (hs.some((h) => p === h.mount || p.startsWith(h.mount + '/'))) dir = p;
  else if (p.startsWith('/')) dir = hs.map((h) => path.join(h.mount, p)).find((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
  if (!dir || !fs.existsSync(path.join(dir, 'cgroup.procs')))
    throw new UsageError(`--cgroup ${p}: no such cgroup (give a directory under ${hs.map((h) => h.mount).join(', ')} or a path inside them)`);
  const pids = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number).sort((a, b) => a - b);
  if (pids.length === 0) throw new GodwitError(`--cgroup ${p}: the cgroup ${dir} has no processes`);
  const inside = new Set(pids);
  const roots = pids.filter((pid) => {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return !inside.has(ppid);
  });
  if (roots.length !== 1)
    throw new GodwitError(`--cgroup ${p}: its processes form ${roots.length} trees (roots ${roots.join(', ')}); godwit dumps one tree: put them under one parent`);
  return { pid: roots[0], pids, cgroups: cgroupMembership(roots[0], hs) };
}
