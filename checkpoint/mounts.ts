/**
 * The mount tree inside a container (mountpoints-N.img, CRIU's mnt_entry) and the contents of its tmpfs
 * mounts (tmpfs-dev-N.tar.gz, a gzip'd tar as CRIU writes them). Read from /proc/PID/mountinfo of the
 * container's root while it is frozen; tmpfs contents through /proc/PID/root (the container's view).
 *
 * Each mount is one of: the root (the container's rootfs: external, handled by checkpoint/rootfs.ts), a mount of
 * the host's own (only when the container's root is the host's root, as in a mount namespace made by `unshare -m`:
 * the same mount at the same place in godwit's namespace; restore finds it there, nothing travels), a
 * filesystem made fresh on restore (proc, sysfs, tmpfs with its contents, devpts, mqueue, cgroup2), a bind of
 * part of an earlier mount of the same container (e.g. runc's masks: /dev/null over /proc/keys), or a bind of a
 * host directory (a volume: external, bound from the same host path on restore).
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { GodwitError } from '../util/errors';
import { MountInfo, parseMountInfo, readMountInfo } from './proc/misc';
import * as fs from 'node:fs';

const run = promisify(execFile);

/** CRIU's fstype enum values (images/proto/ns.proto). */
export const FSTYPE: Record<string, number> = { proc: 1, sysfs: 2, devtmpfs: 3, tmpfs: 5, devpts: 6, mqueue: 14, cgroup2: 23 };
const FRESH = new Set(['proc', 'sysfs', 'tmpfs', 'devpts', 'mqueue', 'cgroup2']);

/** Per-mount flags (MS_*) from mountinfo's mount options. */
const MNT_FLAGS: Record<string, number> = {
  ro: 1, nosuid: 2, nodev: 4, noexec: 8, noatime: 0x400, nodiratime: 0x800, relatime: 0x200000, strictatime: 0x1000000,
};
export const MS_RDONLY = 1;

/** Largest tmpfs content carried (compressed tar): bigger ones belong on shared storage. */
export const TMPFS_LIMIT = 256 << 20;

export function mountFlags(options: string): number {
  let f = 0;
  const opts = options.split(',');
  for (const o of opts) f |= MNT_FLAGS[o] ?? 0;
  // mountinfo shows no word for strictatime: it is the absence of relatime and noatime.
  if (!opts.includes('relatime') && !opts.includes('noatime')) f |= MNT_FLAGS.strictatime;
  return f;
}

/** The kernel's internal dev_t encoding, as CRIU stores root_dev. */
export const kdev = (maj: number, min: number): number => ((maj << 20) | min) >>> 0;

export interface ContainerMount {
  info: MountInfo;
  entry: Record<string, unknown>;
  kind: 'root' | 'fresh' | 'bind' | 'external' | 'host';
  /** tmpfs whose contents travel (tmpfs-dev-N.tar.gz). */
  tmpfsImage?: string;
  /** external: the directory on this host that is bound there; host: its mount point. */
  hostPath?: string;
  /** root: the container's root is the host's own (no rootfs of its own to record or check). */
  hostRoot?: boolean;
}

/** ext_key of the root mount when the container's root is the host's root (restore: no rootfs, no pivot). */
export const HOST_ROOT_KEY = 'host-root';

/**
 * Whether `pid`'s root is godwit's own: the same directory (dev and inode) reached without chroot or pivot_root
 * (its root mount is godwit's root mount, same device and root). Such a tree has no rootfs of its own.
 */
export function isHostRoot(pid: number, rootMount: MountInfo, host: MountInfo[]): boolean {
  const own = host.find((h) => h.mountPoint === '/' && !host.some((o) => o.mntId === h.parentId));
  if (!own || own.devMajor !== rootMount.devMajor || own.devMinor !== rootMount.devMinor || own.root !== rootMount.root) return false;
  try {
    const a = fs.statSync(`/proc/${pid}/root`);
    const b = fs.statSync('/');
    return a.dev === b.dev && a.ino === b.ino && fs.readlinkSync(`/proc/${pid}/root`) === '/';
  } catch {
    return false;
  }
}

/** godwit's mount at the same place as `m`, of the same filesystem and root: the host's mount `m` is a copy of. */
function sameHostMount(m: MountInfo, host: MountInfo[]): MountInfo | undefined {
  return host.find((h) => h.mountPoint === m.mountPoint && h.devMajor === m.devMajor && h.devMinor === m.devMinor && h.root === m.root && h.fsType === m.fsType);
}

/** Where a mount's root lies on this host: a mount of godwit's own with the same device and an enclosing root. */
export function hostPathOf(m: MountInfo, host: MountInfo[] = parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'))): string | undefined {
  let best: MountInfo | undefined;
  for (const h of host) {
    if (h.devMajor !== m.devMajor || h.devMinor !== m.devMinor) continue;
    const rel = path.relative(h.root, m.root);
    if (rel.startsWith('..') || path.isAbsolute(rel)) continue;
    if (!best || h.root.length > best.root.length) best = h;
  }
  return best ? path.join(best.mountPoint, path.relative(best.root, m.root)) : undefined;
}

/** Classifies the container's mounts (mountinfo order: parents first). */
export function containerMounts(pid: number): ContainerMount[] {
  const infos = readMountInfo(pid);
  const ids = new Set(infos.map((m) => m.mntId));
  const out: ContainerMount[] = [];
  const host = parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
  let hostRoot = false;
  for (const m of infos) {
    const isRoot = m.mountPoint === '/' && !ids.has(m.parentId);
    const earlier = out.find(
      (o) => o.info.devMajor === m.devMajor && o.info.devMinor === m.devMinor && !path.relative(o.info.root, m.root).startsWith('..'),
    );
    const entry: Record<string, unknown> = {
      fstype: FSTYPE[m.fsType] ?? 0,
      mnt_id: m.mntId,
      root_dev: kdev(m.devMajor, m.devMinor),
      parent_mnt_id: isRoot ? m.mntId : m.parentId,
      flags: mountFlags(m.options),
      root: m.root,
      mountpoint: m.mountPoint,
      source: m.source,
      options: m.superOptions
        .split(',')
        .filter((o) => o !== 'rw' && o !== 'ro')
        .join(','),
      fsname: m.fsType,
      sb_flags: m.superOptions.split(',').includes('ro') ? MS_RDONLY : 0,
    };
    let cm: ContainerMount;
    const hostCopy = hostRoot && !isRoot ? sameHostMount(m, host) : undefined;
    if (isRoot) {
      const hp = hostPathOf(m, host);
      if (!hp) throw new GodwitError(`pid ${pid}: its root filesystem (${m.source} ${m.root}) is not reachable from this host's mounts: cannot locate the rootfs`);
      hostRoot = isHostRoot(pid, m, host);
      entry.ext_mount = true;
      entry.ext_key = hostRoot ? HOST_ROOT_KEY : 'rootfs';
      cm = { info: m, entry, kind: 'root', hostPath: hp, ...(hostRoot ? { hostRoot } : {}) };
    } else if (hostCopy) {
      // A copy of the host's mount (unshare -m copies them all): restore's mount namespace, itself a copy of the
      // host's, holds it too; tmpfs contents stay on the host, where they are.
      entry.ext_mount = true;
      entry.ext_key = m.mountPoint;
      cm = { info: m, entry, kind: 'host', hostPath: m.mountPoint };
    } else if (earlier) {
      cm = { info: m, entry, kind: 'bind' };
    } else if (FRESH.has(m.fsType) && m.root === '/') {
      cm = { info: m, entry, kind: 'fresh' };
      if (m.fsType === 'tmpfs') cm.tmpfsImage = `tmpfs-dev-${entry.root_dev}.tar.gz`;
    } else {
      const hp = hostPathOf(m, host);
      if (!hp || FRESH.has(m.fsType))
        throw new GodwitError(`pid ${pid}: mount ${m.mountPoint} (${m.fsType} ${m.source}, root ${m.root}) cannot be checkpointed: not a fresh filesystem and not a directory of this host`);
      entry.ext_mount = true;
      entry.ext_key = hp;
      cm = { info: m, entry, kind: 'external', hostPath: hp };
    }
    out.push(cm);
  }
  if (!out.some((m) => m.kind === 'root')) throw new GodwitError(`pid ${pid}: no root mount in /proc/${pid}/mountinfo`);
  return out;
}

/** A tmpfs's contents as a gzip'd tar, read through the container's root (mounts below it left out). */
export async function tarTmpfs(pid: number, m: ContainerMount): Promise<Buffer> {
  const dir = path.join(`/proc/${pid}/root`, m.info.mountPoint);
  try {
    const { stdout } = await run('tar', ['--numeric-owner', '--one-file-system', '-czf', '-', '-C', dir, '.'], {
      encoding: 'buffer',
      maxBuffer: TMPFS_LIMIT,
    });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER')
      throw new GodwitError(`tmpfs ${m.info.mountPoint} of pid ${pid} holds more than ${TMPFS_LIMIT >> 20} MiB compressed: too big to carry in the checkpoint`);
    throw new GodwitError(`cannot archive tmpfs ${m.info.mountPoint} of pid ${pid}: ${err.stderr?.toString().trim() || err.message}`, { cause: e });
  }
}
