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

/** Every entry of a directory tree (one filesystem only: mounts below it are other mounts), by relative path. */
export function walkTree(root: string): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  let rootDev: number;
  try {
    rootDev = fs.lstatSync(root).dev;
  } catch (e) {
    throw new GodwitError(`rootfs ${root} cannot be read: ${(e as Error).message}`, { cause: e });
  }
  const stack = [''];
  while (stack.length) {
    const rel = stack.pop()!;
    const abs = path.join(root, rel);
    for (const name of fs.readdirSync(abs)) {
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(root, r);
      const st = fs.lstatSync(p);
      if (st.dev !== rootDev) continue;
      const type = typeOf(st);
      let hash = '';
      if (type === 'f') hash = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      else if (type === 'l') hash = fs.readlinkSync(p);
      else if (type === 'c' || type === 'b') hash = String(st.rdev);
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
  mode: RootfsMode;
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
