/**
 * The container part of `godwit migrate` (the source side; the target restores a container by itself when it finds
 * container.json): the target's configuration for it passed on as `godwit receive` flags, the cgroup freezer set
 * again once the dump is done (the tree stays frozen until the target runs it, even if this process is killed
 * outright), and after the commit everything of the container removed from the source: its processes (the dump's
 * kill), its own cgroups, the runtime's state. Its namespaces, mounts and veths go with its last process.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { freezeCgroup } from '../checkpoint/cgroups';
import type { ContainerDump } from '../checkpoint/container-dump';
import { RUNTIME_ROOTS } from '../checkpoint/container';
import type { DumpState } from '../checkpoint/dump';
import type { VethHostConfig } from '../restore/net';
import { GodwitError, UsageError } from '../util/errors';

const run = promisify(execFile);

/** How a container is set up on the target (its own configuration, given by whoever starts the migration). */
export interface MigrateTargetOptions {
  /** Host end of the container's veth: joins this bridge, or gets this address, or this name. */
  veth?: VethHostConfig;
  /** The dumped cgroup path is recreated under this cgroup directory on the target. */
  cgroupRoot?: string;
  /** --rootfs diff: the pristine base on the target (default: the path recorded at dump). */
  rootfsBase?: string;
  /** --rootfs shared: where the rootfs is on the target (default: the path recorded at dump). */
  rootfsPath?: string;
}

/** The `godwit receive --migrate` flags for `t`. */
export function targetContainerArgs(t: MigrateTargetOptions | undefined): string[] {
  if (!t) return [];
  const a: string[] = [];
  const flag = (name: string, v: string | undefined) => {
    if (v === undefined) return;
    // The flags travel in an SSH command line: a value that a shell would split or expand is refused here.
    if (!/^[\w@%+=:,./-]+$/.test(v)) throw new UsageError(`${name} ${JSON.stringify(v)}: only letters, digits and _@%+=:,./- are accepted`);
    a.push(name, v);
  };
  flag('--bridge', t.veth?.bridge);
  flag('--peer-addr', t.veth?.peerAddr);
  flag('--veth-host-name', t.veth?.hostName);
  flag('--cgroup-root', t.cgroupRoot);
  flag('--rootfs-base', t.rootfsBase);
  flag('--rootfs-path', t.rootfsPath);
  return a;
}

/**
 * The container's cgroup directories that hold nothing but its tree (and the launcher waiting for its init, as
 * unshare --fork does: it exits with it): removed from the source after the commit.
 */
export function ownCgroupDirs(c: ContainerDump, treePids: number[]): string[] {
  const tree = new Set(treePids);
  try {
    const st = fs.readFileSync(`/proc/${c.pid}/stat`, 'utf8');
    tree.add(Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]));
  } catch {
    /* gone: its cgroups are checked as they are */
  }
  const seen = new Set<string>();
  const out: string[] = [];
  for (const m of c.cgroups) {
    if (m.path === '/' || seen.has(m.dir)) continue;
    seen.add(m.dir);
    // A cgroup shared with anything else (a --pid tree in its parent's cgroup) is not the container's to remove.
    let pids: number[];
    try {
      pids = fs.readFileSync(path.join(m.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      continue;
    }
    if (pids.every((p) => tree.has(p))) out.push(m.dir);
  }
  return out;
}

/**
 * Sets the container's cgroup freezer again once the dump is done: the tasks are still in the dump's ptrace stops,
 * and stay frozen if this process dies outright before the transaction ends (a ptrace hold ends with its tracer).
 * abortDump() thaws it (the source resumes), endSourceContainer() too, before the kill.
 */
export async function holdFrozen(d: DumpState): Promise<void> {
  const c = d.container;
  if (!c || c.frozen) return;
  if (!c.cgroups.some((m) => m.path !== '/' && (m.version === 2 || m.controllers.includes('freezer')))) return;
  // v2 first: v1 FROZEN tasks are not killable until thawed (thawed before the kill anyway).
  c.frozen = await freezeCgroup(c.cgroups);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long the source's leftovers may take to go once its tasks are killed (a loaded machine reaps slowly). */
const LEFTOVER_TIMEOUT_MS = 10_000;

/**
 * After the target runs the container: thaw (the tasks stay in their ptrace stops), kill the tree (the dump's
 * kill), then remove its own cgroups and the runtime's state. Throws, naming what is left, if that fails.
 */
export async function endSourceContainer(d: DumpState, kill: (d: DumpState) => Promise<void>, ownDirs: string[]): Promise<void> {
  const c = d.container!;
  const f = c.frozen;
  c.frozen = undefined;
  f?.thaw();
  await kill(d);
  const left: string[] = [];
  const deadline = Date.now() + LEFTOVER_TIMEOUT_MS;
  // Deepest first; a directory still busy (tasks being reaped) is retried until the deadline.
  for (const dir of [...ownDirs].sort((a, b) => b.length - a.length)) {
    for (;;) {
      try {
        fs.rmdirSync(dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (Date.now() > deadline) {
          left.push(`cgroup ${dir} (${code})`);
          break;
        }
        await sleep(20);
      }
    }
  }
  if (c.runtime && c.id) {
    const stateDir = path.join(RUNTIME_ROOTS[c.runtime], c.id);
    // A foreground `runc run` removes its state itself once its init is gone; a detached container's stays ("stopped").
    for (let i = 0; i < 25 && fs.existsSync(stateDir); i++) await sleep(20);
    if (fs.existsSync(stateDir)) {
      try {
        await run(c.runtime, ['delete', '--force', c.id], { timeout: 15_000 });
      } catch (e) {
        if (fs.existsSync(stateDir)) left.push(`${c.runtime} state ${stateDir} (${c.runtime} delete: ${(e as Error).message.split('\n')[0]})`);
      }
    }
  }
  if (left.length) throw new GodwitError(`the container's processes are gone from this host, but not all of it: ${left.join('; ')}`);
}
