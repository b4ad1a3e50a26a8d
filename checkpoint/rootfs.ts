/**
 * The container's root filesystem. Two modes:
 * - `shared`: the rootfs stays where it is (same host, or storage both hosts see at the same path); the image
 *   records its path and a digest of its whole content, and restore refuses a rootfs whose digest differs.
 * - `diff`: the rootfs is compared with a base (the image it was made from, e.g. a pristine copy of the bundle's
 *   rootfs) and what changed travels in the checkpoint (rootfs-diff.tar: changed and new files, plus the list of
 *   deleted paths); the image records the base's digest, and restore stacks the diff over a base with that same
 *   digest (overlayfs), refusing a missing or different base.
 * The digest: sha256 over every entry (path, type, mode, uid, gid, size, content hash or link target), sorted.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GodwitError } from '../util/errors';


export type RootfsMode = 'shared' | 'diff';

export interface TreeEntry {
  type: 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** sha256 of a file's bytes, a link's target, a device's rdev. */
  hash: string;
}

/** Largest tree walked (entries): a runaway rootfs must not make the dump allocate without end. */
const MAX_ENTRIES = 1_000_000;

function typeOf(st: fs.Stats): TreeEntry['type'] {
  if (st.isFile()) return 'f';
  if (st.isDirectory()) return 'd';
  if (st.isSymbolicLink()) return 'l';
  if (st.isCharacterDevice()) return 'c';
  if (st.isBlockDevice()) return 'b';
  if (st.isFIFO()) return 'p';
  return 's';
}

/** Files are hashed through one buffer of this size: a file of many GB never becomes one allocation. */
const HASH_CHUNK = 1 << 20;

/**
 * What walkTree throws when an entry disappears or changes while it is read: the rootfs must hold still (the
 * container is frozen meanwhile), so a change comes from a process outside the container.
 */
function movedError(root: string, rel: string, what: string, cause?: unknown): GodwitError {
  return new GodwitError(
    `rootfs ${root}: ${path.join(root, rel)} ${what} while godwit read it: a process outside the container (not frozen) is changing the container's rootfs; stop it (or keep it off that directory) and dump again`,
    { code: 'EROOTFSCHANGED', ...(cause ? { cause } : {}) },
  );
}

const gone = (e: unknown): boolean => ['ENOENT', 'ENOTDIR'].includes((e as NodeJS.ErrnoException).code ?? '');

/** sha256 of a regular file, read in HASH_CHUNK pieces; a file whose size or times change meanwhile is refused. */
function hashFile(root: string, rel: string, st: fs.Stats, buf: Buffer): string {
  const p = path.join(root, rel);
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    if (gone(e) || (e as NodeJS.ErrnoException).code === 'ELOOP') throw movedError(root, rel, 'disappeared or was replaced', e);
    throw new GodwitError(`rootfs ${root}: cannot read ${p}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const h = createHash('sha256');
    let total = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      total += n;
    }
    const now = fs.fstatSync(fd);
    if (now.ino !== st.ino || now.size !== st.size || total !== st.size || now.mtimeMs !== st.mtimeMs || now.ctimeMs !== st.ctimeMs)
      throw movedError(root, rel, `changed (size ${st.size} -> ${now.size})`);
    return h.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/** Every entry of a directory tree (one filesystem only: mounts below it are other mounts), by relative path. */
export function walkTree(root: string): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  let rootDev: number;
  try {
    rootDev = fs.lstatSync(root).dev;
  } catch (e) {
    throw new GodwitError(`rootfs ${root} cannot be read: ${(e as Error).message}`, { cause: e });
  }
  const buf = Buffer.allocUnsafe(HASH_CHUNK);
  const stack = [''];
  while (stack.length) {
    const rel = stack.pop()!;
    const abs = path.join(root, rel);
    let names: string[];
    try {
      names = fs.readdirSync(abs);
    } catch (e) {
      if (gone(e)) throw movedError(root, rel, 'disappeared', e);
      throw new GodwitError(`rootfs ${root}: cannot list ${abs}: ${(e as Error).message}`, { cause: e });
    }
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(root, r);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(p);
      } catch (e) {
        if (gone(e)) throw movedError(root, r, 'disappeared', e);
        throw new GodwitError(`rootfs ${root}: cannot stat ${p}: ${(e as Error).message}`, { cause: e });
      }
      if (st.dev !== rootDev) continue;
      const type = typeOf(st);
      let hash = '';
      if (type === 'f') hash = hashFile(root, r, st, buf);
      else if (type === 'l') {
        try {
          hash = fs.readlinkSync(p);
        } catch (e) {
          // EINVAL: no longer a symlink (replaced since the lstat).
          if (gone(e) || (e as NodeJS.ErrnoException).code === 'EINVAL') throw movedError(root, r, 'disappeared or was replaced', e);
          throw new GodwitError(`rootfs ${root}: cannot read the link ${p}: ${(e as Error).message}`, { cause: e });
        }
      } else if (type === 'c' || type === 'b') hash = String(st.rdev);
      out.set(r, { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: type === 'f' ? st.size : 0, hash });
      if (out.size > MAX_ENTRIES) throw new GodwitError(`rootfs ${root} has more than ${MAX_ENTRIES} entries: use shared storage for it`);
      if (type === 'd') stack.push(r);
    }
  }
  return out;
}

export function treeDigest(t: Map<string, TreeEntry>): string {
  const h = createHash('sha256');
  for (const k of [...t.keys()].sort()) {
    const e = t.get(k)!;
    h.update(`${k}\0${e.type}\0${e.mode}\0${e.uid}\0${e.gid}\0${e.size}\0${e.hash}\n`);
  }
  return h.digest('hex');
}

export interface RootfsRecord {
  /** host: the container's root is the host's own root (a mount namespace made by `unshare -m`): no digest. */
  mode: RootfsMode | 'host';
  /** The rootfs directory at dump time (shared: where restore expects it). */
  path: string;
  /** shared: digest of the rootfs; diff: digest of the base. */
  digest: string;
  /** diff: the base directory given at dump time (restore's default). */
  base?: string;
  /** diff: paths deleted against the base. */
  deleted?: string[];
  /** diff: paths carried in rootfs-diff.tar. */
  changed?: number;
}

export const ROOTFS_DIFF = 'rootfs-diff.tar';

/** shared mode: the digest of the rootfs in place. */
export function sharedRootfs(dir: string): RootfsRecord {
  return { mode: 'shared', path: dir, digest: treeDigest(walkTree(dir)) };
}

/** diff mode: what changed against `base`, as a tar of the changed entries (directories included for their modes). */
export async function diffRootfs(dir: string, base: string): Promise<{ record: RootfsRecord; tar: Buffer }> {
  const now = walkTree(dir);
  const was = walkTree(base);
  const changed: string[] = [];
  for (const [k, e] of now) {
    const b = was.get(k);
    if (!b || b.type !== e.type || b.mode !== e.mode || b.uid !== e.uid || b.gid !== e.gid || b.hash !== e.hash) changed.push(k);
  }
  const deleted = [...was.keys()].filter((k) => !now.has(k)).sort();
  // A deleted directory's contents need no entries of their own: the whiteout of the directory hides them.
  const topDeleted = deleted.filter((k) => !deleted.some((d) => d !== k && k.startsWith(d + '/')));
  let tar: Buffer = Buffer.alloc(0);
  if (changed.length) {
    tar = await tarList(dir, changed.sort());
  }
  return {
    record: { mode: 'diff', path: dir, digest: treeDigest(was), base, deleted: topDeleted, changed: changed.length },
    tar,
  };
}

/** tar of the listed relative paths (NUL-separated list on stdin), not recursing. */
function tarList(dir: string, list: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile('tar', ['--numeric-owner', '--no-recursion', '-cf', '-', '-C', dir, '--null', '-T', '-'], { encoding: 'buffer', maxBuffer: 1 << 30 }, (err, stdout, stderr) => {
      if (err) reject(new GodwitError(`cannot archive the changed files of rootfs ${dir}: ${stderr.toString().trim() || err.message}`, { cause: err }));
      else resolve(stdout);
    });
    child.stdin!.end(Buffer.from(list.map((l) => l + '\0').join('')));
  });
}
