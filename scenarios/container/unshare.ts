/**
 * The container scenario without a runtime: the same rootfs and workload as the runc bundle, started directly
 * with unshare(1) in new pid, mnt, uts, ipc and net namespaces (private mount propagation), with its own
 * hostname, loopback up, tmpfs /tmp and /dev (with a null node), proc, pivot_root into the rootfs, and a cgroup
 * of its own (/godwit-ctr/ID in every hierarchy this host has: v1 memory/pids limits, v2 memory.max/pids.max
 * where those controllers are there) — for hosts without runc. With `timens` it also gets a time namespace with
 * those offsets (the workload checks its clocks never read below them), with `msgQueue` a SysV message queue
 * with messages in flight (ctr-workload's msg feature). `destroy()` (idempotent, also on process exit)
 * kills the container's init (its pid namespace goes with it), removes the cgroups and the bundle.
 */
import { spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { cgroupHierarchies, cgroupTreeDirs } from '../../checkpoint/cgroups';
import { GodwitError } from '../../util/errors';
import { Bundle, BundleOptions, buildBundle, CGROUP_PARENT } from './bundle';

export interface UnshareContainer {
  bundle: Bundle;
  /** The container's init (pid 1 inside), in godwit's pid namespace. */
  pid: number;
  /** The cgroup directories made for it. */
  cgroupDirs: string[];
  count(): number;
  failure(): string | undefined;
  destroy(): Promise<void>;
}

function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Makes /godwit-ctr/ID in every hierarchy with memory and pids limits; returns the leaves. */
export function makeCgroups(id: string, limits: { memoryLimit: number; pidsLimit: number }): string[] {
  const dirs: string[] = [];
  for (const h of cgroupHierarchies()) {
    if (h.version === 1 && !h.controllers.some((c) => ['memory', 'pids', 'freezer', 'cpu', 'cpuset'].includes(c))) continue;
    const parent = path.join(h.mount, CGROUP_PARENT);
    const leaf = path.join(parent, id);
    fs.mkdirSync(leaf, { recursive: true });
    dirs.push(leaf);
    const write = (f: string, v: string): void => {
      if (fs.existsSync(path.join(leaf, f))) fs.writeFileSync(path.join(leaf, f), v);
    };
    if (h.controllers.includes('cpuset')) {
      // A new v1 cpuset starts empty: it takes the parent's cpus and mems (tasks cannot join an empty one).
      for (const f of ['cpuset.cpus', 'cpuset.mems']) if (!readOr(path.join(parent, f))) fs.writeFileSync(path.join(parent, f), readOr(path.join(h.mount, f)) ?? '');
      for (const f of ['cpuset.cpus', 'cpuset.mems']) write(f, readOr(path.join(parent, f)) ?? '');
    }
    if (h.controllers.includes('memory')) write('memory.limit_in_bytes', String(limits.memoryLimit));
    if (h.controllers.includes('pids')) write('pids.max', String(limits.pidsLimit));
    if (h.version === 2) {
      write('memory.max', String(limits.memoryLimit));
      write('pids.max', String(limits.pidsLimit));
    }
  }
  return dirs;
}

/** Removes cgroup `root` and everything below it in every hierarchy; true while some directory is still busy
 *  (a task not yet gone): call again after a moment. */
export function removeCgroupTree(root: string): boolean {
  let busy = false;
  for (const d of cgroupTreeDirs(root)) {
    try {
      fs.rmdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') busy = true;
    }
  }
  return busy;
}

export function removeCgroups(dirs: string[]): void {
  for (const d of dirs)
    for (const x of [d, path.dirname(d)]) {
      try {
        fs.rmdirSync(x);
      } catch {
        /* gone, or still used by another scenario container */
      }
    }
}

interface UsernsHolder {
  pid: number;
  kill(): void;
}

/** A user namespace held by `sleep`, with uid and gid maps 0 -> outside for count ids written from here. */
async function makeUserns(un: { outside: number; count: number }): Promise<UsernsHolder> {
  const h = spawn('setpriv', ['--pdeathsig', 'KILL', 'unshare', '--user', 'sleep', 'infinity'], { stdio: 'ignore' });
  let gone = false;
  h.once('exit', () => (gone = true));
  const kill = (): void => {
    if (!gone) h.kill('SIGKILL');
  };
  try {
    const ours = fs.readlinkSync('/proc/self/ns/user');
    const deadline = Date.now() + 5000;
    for (;;) {
      if (gone || h.pid === undefined) throw new GodwitError('the user namespace holder (unshare --user) exited at once');
      let ready = false;
      try {
        ready = readOr(`/proc/${h.pid}/comm`) === 'sleep' && fs.readlinkSync(`/proc/${h.pid}/ns/user`) !== ours;
      } catch {
        /* between execs */
      }
      if (ready) break;
      if (Date.now() > deadline) throw new GodwitError('the user namespace holder was not ready after 5 s');
      await new Promise((res) => setTimeout(res, 5));
    }
    fs.writeFileSync(`/proc/${h.pid}/uid_map`, `0 ${un.outside} ${un.count}\n`);
    fs.writeFileSync(`/proc/${h.pid}/gid_map`, `0 ${un.outside} ${un.count}\n`);
    return { pid: h.pid, kill };
  } catch (e) {
    kill();
    throw e;
  }
}

const live = new Set<() => void>();
let hooked = false;

export interface UnshareOptions extends BundleOptions {
  readyTimeoutMs?: number;
  /** A time namespace of its own with these CLOCK_MONOTONIC / CLOCK_BOOTTIME offsets (whole seconds, unshare(1)'s unit). */
  timens?: { monotonic: number; boottime: number };
  /** A SysV message queue holding messages (checked by the workload on every tick). */
  msgQueue?: boolean;
  /**
   * A user namespace of its own: ids 0..count-1 inside are `outside`.. on the host (uid and gid). There is no
   * newuidmap here: a holder makes the namespace, its maps are written from outside, and the container is
   * started through `nsenter --user` (which becomes root inside) so that it owns every other namespace.
   */
  userns?: { outside: number; count: number };
}

export async function runUnshareContainer(o: UnshareOptions = {}): Promise<UnshareContainer> {
  const features = [o.features, o.msgQueue ? 'msg' : '', o.timens ? `mono=${o.timens.monotonic},boot=${o.timens.boottime}` : ''].filter(Boolean).join(',');
  const bundle = await buildBundle({ ...o, features });
  const r = bundle.rootfs;
  const cfg = bundle.config;
  let cgroupDirs: string[] = [];
  let child: ChildProcess | undefined;
  let initPid = 0;
  let usernsHolder: UsernsHolder | undefined;
  let exited: Promise<void> = Promise.resolve();
  let destroyed = false;
  const destroySync = (): void => {
    if (destroyed) return;
    destroyed = true;
    live.delete(destroySync);
    usernsHolder?.kill();
    for (const p of [initPid, child?.pid ?? 0])
      if (p)
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
    removeCgroups(cgroupDirs);
    fs.rmSync(bundle.dir, { recursive: true, force: true });
  };
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    usernsHolder?.kill();
    for (const p of [initPid, child?.pid ?? 0])
      if (p)
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((res) => (timer = setTimeout(res, 5000)))]);
    clearTimeout(timer);
    // The cgroup empties once the killed tasks are reaped: retry the rmdir briefly.
    for (let i = 0; i < 50 && cgroupDirs.some((d) => fs.existsSync(d)); i++) {
      removeCgroups(cgroupDirs);
      await new Promise((res) => setTimeout(res, 20));
    }
    destroySync();
  };
  live.add(destroySync);
  if (!hooked) {
    hooked = true;
    process.on('exit', () => [...live].forEach((f) => f()));
  }
  try {
    cgroupDirs = makeCgroups(bundle.id, bundle.opts);
    // The container's root is an unprivileged id on the host: it must be able to walk into the bundle.
    if (o.userns) fs.chmodSync(bundle.dir, 0o711);
    const args = (cfg.process.args as string[]).map(q).join(' ');
    const t = o.timens;
    const timeFlags = t ? `--time --monotonic ${Math.trunc(t.monotonic)} --boottime ${Math.trunc(t.boottime)} ` : '';
    const un = o.userns;
    const inner = [
      'set -e',
      `hostname ${q(bundle.opts.hostname)}`,
      `mount --bind ${q(r)} ${q(r)}`,
      `mount -t tmpfs -o nosuid,nodev,size=${bundle.opts.tmpfsBytes} tmpfs ${q(r + '/tmp')}`,
      `mount -t tmpfs -o nosuid,mode=755 tmpfs ${q(r + '/dev')}`,
      // A user namespace may not make device nodes: the host's /dev/null is bound instead.
      un ? `touch ${q(r + '/dev/null')} && mount --bind /dev/null ${q(r + '/dev/null')}` : `mknod -m 666 ${q(r + '/dev/null')} c 1 3`,
      `mount -t proc proc ${q(r + '/proc')}`,
      'ip link set lo up',
      `cd ${q(r)}`,
      'pivot_root . .',
      'umount -l .',
      'cd /',
      `exec ${args}`,
    ].join('\n');
    // The outer shell joins the cgroups before unshare forks the init, so everything of the container is in them.
    if (un) usernsHolder = await makeUserns(un);
    const enter = usernsHolder ? `nsenter --user=/proc/${usernsHolder.pid}/ns/user ` : '';
    const outer = [...cgroupDirs.map((d) => `echo $$ > ${q(path.join(d, 'cgroup.procs'))}`), `exec ${enter}unshare --fork --pid --mount --uts --ipc --net ${timeFlags}--propagation private sh -c ${q(inner)}`].join('\n');
    const log = fs.openSync(path.join(bundle.dir, 'container.log'), 'a');
    child = spawn('sh', ['-c', outer], { stdio: ['ignore', log, log], detached: true });
    fs.closeSync(log);
    let exit: string | undefined;
    exited = new Promise<void>((res) => {
      child!.on('exit', (code, sig) => ((exit = `exited ${code ?? sig}`), res()));
      child!.on('error', (e) => ((exit = e.message), res()));
    });
    const deadline = Date.now() + (o.readyTimeoutMs ?? 10000);
    for (;;) {
      if (exit !== undefined) throw new GodwitError(`unshare container ${bundle.id} ${exit} before the workload was ready: ${readOr(path.join(bundle.dir, 'container.log')) ?? ''}`);
      if (!initPid) initPid = Number((readOr(`/proc/${child.pid}/task/${child.pid}/children`) ?? '').split(' ')[0] || 0);
      if (initPid && fs.existsSync(`/proc/${initPid}/root/tmp/ready`)) break;
      if (Date.now() > deadline) throw new GodwitError(`unshare container ${bundle.id}: workload not ready after ${o.readyTimeoutMs ?? 10000} ms: ${readOr(path.join(bundle.dir, 'container.log')) ?? ''}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    const pid = initPid;
    // The container's tasks hold its user namespace now.
    usernsHolder?.kill();
    return {
      bundle,
      pid,
      cgroupDirs,
      count: () => Number(readOr(`/proc/${pid}/root/tmp/count`) ?? 0),
      failure: () => readOr(`/proc/${pid}/root/tmp/result`),
      destroy,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}
