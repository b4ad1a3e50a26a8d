/**
 * The container's root filesystem on restore (see checkpoint/rootfs.ts): `shared` binds the recorded
 * directory after checking its digest; `diff` stacks the carried changes (rootfs-diff.tar plus whiteouts for
 * deleted paths) as an overlayfs upper layer over a base whose digest must equal the one recorded. Both refuse,
 * naming what differs, before anything is created.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { RootfsRecord, ROOTFS_DIFF, treeDigest, walkTree } from '../checkpoint/rootfs';
import { GodwitError } from '../util/errors';

const run = promisify(execFile);

export interface PreparedRootfs {
  /** What to bind (shared) or the overlay's mount options (diff). */
  mount: { source: string; fstype: string; flags: number; data: string };
  /** Removes what was made here (the overlay's upper/work directories). Idempotent. */
  remove(): void;
  /** The diff's upper layer directory, kept for as long as the container lives. */
  upper?: string;
  /** The directory holding upper/ and work/: whoever ends the container removes it. */
  layerDir?: string;
}

const MS_BIND = 4096;
const MS_REC = 16384;

export async function prepareRootfs(rec: RootfsRecord, imageDir: string, opts: { base?: string; path?: string } = {}): Promise<PreparedRootfs> {
  if (rec.mode === 'shared') {
    const dir = opts.path ?? rec.path;
    if (!fs.existsSync(dir)) throw new GodwitError(`the container's rootfs ${dir} does not exist on this host: restore needs it at that path (shared mode), or dump with --rootfs diff`);
    const digest = treeDigest(walkTree(dir));
    if (digest !== rec.digest)
      throw new GodwitError(`the container's rootfs ${dir} differs from the one dumped (digest ${digest.slice(0, 12)}, dump ${rec.digest.slice(0, 12)}): restore needs it unchanged`);
    return { mount: { source: dir, fstype: '', flags: MS_BIND | MS_REC, data: '' }, remove: () => undefined };
  }
  const base = opts.base ?? rec.base;
  if (!base || !fs.existsSync(base)) throw new GodwitError(`the rootfs base ${base ?? '(none recorded)'} is missing on this host: give the pristine rootfs the container started from`);
  const digest = treeDigest(walkTree(base));
  if (digest !== rec.digest)
    throw new GodwitError(`the rootfs base ${base} is not the one the container was dumped against (digest ${digest.slice(0, 12)}, dump ${rec.digest.slice(0, 12)})`);
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-rootfs-'));
  const remove = () => fs.rmSync(top, { recursive: true, force: true });
  try {
    const upper = path.join(top, 'upper');
    const work = path.join(top, 'work');
    fs.mkdirSync(upper);
    fs.mkdirSync(work);
    const tar = path.join(imageDir, ROOTFS_DIFF);
    if (fs.existsSync(tar) && fs.statSync(tar).size > 0)
      await run('tar', ['--numeric-owner', '-xpf', tar, '-C', upper]).catch((e: Error & { stderr?: string }) => {
        throw new GodwitError(`cannot unpack ${tar}: ${e.stderr?.trim() || e.message}`, { cause: e });
      });
    for (const d of rec.deleted ?? []) {
      const p = path.join(upper, d);
      if (path.relative(upper, p).startsWith('..')) throw new GodwitError(`container.json: deleted path ${d} leaves the rootfs`);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      // overlayfs whiteout: a 0/0 character device hides the lower entry.
      await run('mknod', [p, 'c', '0', '0']);
    }
    return { mount: { source: 'overlay', fstype: 'overlay', flags: 0, data: `lowerdir=${base},upperdir=${upper},workdir=${work}` }, remove, upper, layerDir: top };
  } catch (e) {
    remove();
    throw e;
  }
}
