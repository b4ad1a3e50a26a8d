/**
 * What to checkpoint, as `dump` and `migrate` take it: exactly one of --pid, --container, --cgroup, and the
 * container's --runtime, --rootfs and --rootfs-base. One parser, so both commands accept and refuse the same.
 */
import type { DumpOptions } from '../checkpoint/dump';
import { UsageError } from '../util/errors';

export interface TreeFlags {
  pid?: string;
  container?: string;
  runtime?: string;
  cgroup?: string;
  rootfs?: string;
  rootfsBase?: string;
}

export type TreeSelection = Pick<DumpOptions, 'pid' | 'container' | 'runtime' | 'cgroup' | 'rootfsMode' | 'rootfsBase'>;

/** The flags as dump options (pid 0 when a container or cgroup names the tree); a UsageError names a bad flag. */
export function treeSelection(f: TreeFlags): TreeSelection {
  if ([f.pid, f.container, f.cgroup].filter((x) => x !== undefined).length !== 1)
    throw new UsageError('give exactly one of --pid PID, --container ID, --cgroup PATH');
  if (f.pid !== undefined && (!/^\d+$/.test(f.pid) || Number(f.pid) <= 0))
    throw new UsageError(`--pid must be a process id (a positive integer), got '${f.pid}'`);
  const d: TreeSelection = { pid: f.pid !== undefined ? Number(f.pid) : 0 };
  if (f.container !== undefined) d.container = f.container;
  if (f.cgroup !== undefined) d.cgroup = f.cgroup;
  if (f.runtime !== undefined) {
    if (f.runtime !== 'runc' && f.runtime !== 'crun') throw new UsageError(`--runtime must be runc or crun, got '${f.runtime}'`);
    if (f.container === undefined) throw new UsageError('--runtime goes with --container');
    d.runtime = f.runtime;
  }
  if (f.rootfs !== undefined) {
    if (f.rootfs !== 'shared' && f.rootfs !== 'diff') throw new UsageError(`--rootfs must be shared or diff, got '${f.rootfs}'`);
    d.rootfsMode = f.rootfs;
  }
  if (f.rootfsBase !== undefined) {
    if (d.rootfsMode !== 'diff') throw new UsageError('--rootfs-base goes with --rootfs diff');
    d.rootfsBase = f.rootfsBase;
  }
  if (d.rootfsMode === 'diff' && !d.rootfsBase) throw new UsageError('--rootfs diff needs --rootfs-base DIR: the pristine rootfs the container started from');
  return d;
}
