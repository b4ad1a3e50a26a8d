/**
 * The container's mount tree on restore, from mountpoints-N.img (checkpoint/mounts.ts), in two parts:
 * - built by godwit-nsutil in the fresh mount namespace (the holder's) under a staging directory: the rootfs,
 *   every fresh filesystem (tmpfs, sysfs, devpts, mqueue, cgroup2) with the tmpfs contents unpacked into them,
 *   binds, host directories; then pivot_root into it;
 * - made by the container's root task itself, first thing in its new pid namespace (the restorer's root
 *   stub): proc, which must belong to that pid namespace, and everything mounted on top of it (runc's masks).
 * A container whose root was the host's root (`unshare -m`: checkpoint/mounts.ts HOST_ROOT_KEY) gets no staging
 * directory and no pivot: the holder's mount namespace is already a copy of the host's, so the host's mounts the
 * container had are there; only the container's own mounts are made, at their places.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { HOST_ROOT_KEY } from '../checkpoint/mounts';
import { MountInfo } from '../checkpoint/proc/misc';
import { runNsutil } from '../checkpoint/ns-content';
import { GodwitError } from '../util/errors';

const run = promisify(execFile);
type Msg = Record<string, unknown>;

const MS_RDONLY = 1;
const MS_REMOUNT = 32;
const MS_BIND = 4096;
const MS_REC = 16384;
/**
 * godwit's own flag on a root-task record (beyond every MS_* bit): a placeholder proc sits on the target; make
 * the new proc detached (fsmount), drop the placeholder, move the new one in. In a mount namespace owned by a user
 * namespace the kernel allows a new proc only while a proc is fully visible in it (mount_too_revealing), which
 * after pivot_root none is: the placeholder, a bind of the host's /proc made before the pivot, is that proc.
 */
export const MNT_REPLACE_PLACEHOLDER = 2 ** 40;

/** Per-mount flags a bind remount carries over. */
const PER_MOUNT = 1 | 2 | 4 | 8 | 0x400 | 0x800 | 0x200000 | 0x1000000;

export interface MountOp {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  data: string;
}

export interface MountPlan {
  /** nsutil mnt-build script, before the tmpfs contents are unpacked. */
  build: Buffer;
  /** tmpfs images to unpack: image file -> directory under the staging root. */
  unpack: { image: string; dir: string }[];
  /** Mounts the container's root task makes (proc and below), container paths. */
  rootTask: MountOp[];
}

function rec(fields: string[]): Buffer {
  return Buffer.from(fields.map((f) => f + '\0').join(''));
}

/** Which earlier mount a bind takes its source from: same device, root enclosing this one's. */
function bindSource(m: Msg, earlier: Msg[]): string | undefined {
  for (const o of [...earlier].reverse()) {
    if (o.root_dev !== m.root_dev) continue;
    const rel = path.relative(String(o.root), String(m.root));
    if (rel.startsWith('..')) continue;
    return path.join(String(o.mountpoint), rel);
  }
  return undefined;
}

/** The root entry says the container's root was the host's own. */
export const hostRootOf = (entries: Msg[]): boolean => entries.some((m) => m.ext_key === HOST_ROOT_KEY);

/**
 * Host root: a mount of the host's the container had (ext_key = its own mount point) that this host has at the
 * same place with the same filesystem type is in the holder's copy already.
 */
function inHostCopy(m: Msg, host: MountInfo[]): boolean {
  return !!m.ext_mount && m.ext_key === m.mountpoint && host.some((h) => h.mountPoint === m.mountpoint && h.fsType === m.fsname);
}

/**
 * `root` is the rootfs to mount on the staging directory, or `{ host }` (godwit's mountinfo) when the container's
 * root was the host's: then `staging` is '/' and the mounts go in place.
 */
export function planMounts(
  entries: Msg[],
  staging: string,
  root: { source: string; fstype: string; flags: number; data: string } | { host: MountInfo[] },
  fileTargets: Set<string>,
  o: { procPlaceholder?: boolean } = {},
): MountPlan {
  const parts: Buffer[] = [];
  const unpack: MountPlan['unpack'] = [];
  const rootTask: MountOp[] = [];
  const procPoints: string[] = [];
  const done: Msg[] = [];
  const under = (p: string, dir: string) => p === dir || p.startsWith(dir.endsWith('/') ? dir : dir + '/');
  for (const m of entries) {
    const mp = String(m.mountpoint);
    const flags = Number(m.flags ?? 0);
    const fs = String(m.fsname ?? '');
    if ('host' in root && (m.ext_key === HOST_ROOT_KEY || inHostCopy(m, root.host))) {
      done.push(m);
      continue;
    }
    if (m.ext_key === 'rootfs' && !('host' in root)) {
      parts.push(rec(['mount', root.source, staging, root.fstype, String(root.flags), root.data]));
      if (flags & MS_RDONLY) parts.push(rec(['mount', '', staging, '', String(MS_BIND | MS_REMOUNT | (flags & PER_MOUNT)), '']));
      done.push(m);
      continue;
    }
    const inProc = procPoints.some((p) => under(mp, p));
    const src = m.ext_mount ? String(m.ext_key) : bindSource(m, done);
    const isBind = !!m.ext_mount || src !== undefined;
    if (Number(m.fstype) === 1 || inProc) {
      // proc and what sits on it: made by the root task (container paths, inside its new root).
      if (Number(m.fstype) === 1 && !isBind) {
        procPoints.push(mp);
        let f = flags & PER_MOUNT & ~MS_RDONLY;
        if (o.procPlaceholder) {
          parts.push(rec(['mkdir', path.join(staging, mp)]), rec(['mount', '/proc', path.join(staging, mp), '', String(MS_BIND), '']));
          f += MNT_REPLACE_PLACEHOLDER;
        }
        rootTask.push({ source: 'proc', target: mp, fstype: 'proc', flags: f, data: '' });
      } else {
        if (!src) throw new GodwitError(`mount ${mp} (${fs}) inside a proc mount is not a bind: cannot restore it`);
        rootTask.push({ source: src, target: mp, fstype: '', flags: MS_BIND, data: '' });
      }
      if (flags & MS_RDONLY || (isBind && flags & PER_MOUNT))
        rootTask.push({ source: '', target: mp, fstype: '', flags: MS_BIND | MS_REMOUNT | (flags & PER_MOUNT), data: '' });
      done.push(m);
      continue;
    }
    const target = path.join(staging, mp);
    parts.push(rec([fileTargets.has(mp) ? 'touch' : 'mkdir', target]));
    if (isBind) {
      const from = m.ext_mount ? src! : path.join(staging, src!);
      parts.push(rec(['mount', from, target, '', String(MS_BIND | MS_REC), '']));
      if (flags & PER_MOUNT) parts.push(rec(['mount', '', target, '', String(MS_BIND | MS_REMOUNT | (flags & PER_MOUNT)), '']));
    } else {
      parts.push(rec(['mount', String(m.source ?? fs), target, fs, String(flags & PER_MOUNT & ~MS_RDONLY), String(m.options ?? '')]));
      if (Number(m.fstype) === 5) unpack.push({ image: `tmpfs-dev-${m.root_dev}.tar.gz`, dir: mp });
    }
    done.push(m);
  }
  return { build: Buffer.concat(parts), unpack, rootTask };
}

/** Read-only mounts become read-only once their contents are in: a remount record per such mount. */
export function readonlyRecords(entries: Msg[], staging: string): Buffer {
  const parts: Buffer[] = [];
  for (const m of entries) {
    if (m.ext_key === 'rootfs' || m.ext_key === HOST_ROOT_KEY || Number(m.fstype) === 1 || m.ext_mount) continue;
    if (Number(m.flags ?? 0) & MS_RDONLY && !bindSource(m, []))
      parts.push(rec(['mount', '', path.join(staging, String(m.mountpoint)), '', String(MS_REMOUNT | (Number(m.flags) & PER_MOUNT)), String(m.options ?? '')]));
  }
  return Buffer.concat(parts);
}

/** Runs the plan in the holder's mount namespace: mounts, tmpfs contents, read-only remounts, pivot_root (not for the host's root). */
export async function buildMounts(holder: number, plan: MountPlan, imageDir: string, staging: string, ro: Buffer, o: { pivot: boolean } = { pivot: true }): Promise<void> {
  await runNsutil(['mnt-build', String(holder)], plan.build);
  for (const u of plan.unpack) {
    const into = path.join(`/proc/${holder}/root`, staging, u.dir);
    await run('tar', ['--numeric-owner', '-xzpf', path.join(imageDir, u.image), '-C', into]).catch((e: Error & { stderr?: string }) => {
      throw new GodwitError(`cannot unpack ${u.image} into the container's ${u.dir}: ${e.stderr?.trim() || e.message}`, { cause: e });
    });
  }
  const tail = Buffer.concat([ro, o.pivot ? rec(['pivot', staging]) : Buffer.alloc(0)]);
  if (tail.length) await runNsutil(['mnt-build', String(holder)], tail);
}

/** The root task's mount records as godwit-restorer's OP_CONTAINER carries them. */
export function rootTaskRecords(ops: MountOp[]): Buffer {
  return Buffer.concat(
    ops.map((o) => {
      const f = Buffer.alloc(8);
      f.writeBigUInt64LE(BigInt(o.flags));
      return Buffer.concat([f, Buffer.from(`${o.source}\0${o.target}\0${o.fstype}\0${o.data}\0`)]);
    }),
  );
}
