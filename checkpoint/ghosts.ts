/** Ghost files: deleted inodes still held open, mapped or as a working directory, in CRIU's ghost-file image. */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { FdClass, kernelDev } from './fdkinds';
import { REMAP_TYPE } from './filetable';

/**
 * The GHOST_FILE entry of a deleted inode (a file, a removed directory, an unlinked FIFO): its attributes and
 * content, added once per inode however many fds and working directories hold it, so that restore makes one
 * inode for all of them. `content` runs only for the first holder. Returns the ghost's id.
 */
const isDevice = (mode: bigint) => (mode & 0o170000n) === 0o020000n || (mode & 0o170000n) === 0o060000n;

export function ghostFor(ctx: CollectContext, st: FdClass['proc']['stat'], content: () => Buffer): number {
  const key = `${st.dev}:${st.ino}`;
  let ghostId = ctx.ghosts.get(key);
  if (ghostId !== undefined) return ghostId;
  const data = content();
  // Ids only need to be unique: the map only grows (remap keys included).
  ghostId = ctx.ghosts.size + 1;
  ctx.ghosts.set(key, ghostId);
  const tv = (ns: bigint) => ({ tv_sec: ns / 1000000000n, tv_usec: (ns % 1000000000n) / 1000n });
  ctx.images.add('GHOST_FILE', ghostId, {
    uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode), dev: kernelDev(st.dev), ino: st.ino,
    atim: tv(st.atimeNs), mtim: tv(st.mtimeNs), size: BigInt(data.length),
    // A device node's device, made again with mknod: st_rdev as stat gives it, as CRIU stores it (odev).
    ...(isDevice(st.mode) ? { rdev: Number(st.rdev & 0xffffffffn) } : {}),
  }, data);
  return ghostId;
}

const GHOST_CHUNK = 1 << 20;

/**
 * The whole content of a deleted regular file, read through `from` (a /proc fd or map_files link: the path is
 * gone), refused above the ghost limit. `what` names the holder for errors ("pid 7 fd 3").
 */
export function readGhostContent(ctx: CollectContext, st: fs.BigIntStats, from: string, what: string, path: string): Buffer {
  if (st.size > BigInt(ctx.ghostLimit))
    throw new GodwitError(`${what}: deleted file ${path} holds ${st.size} bytes, more than the ghost limit of ${ctx.ghostLimit}; raise --ghost-limit`);
  const size = Number(st.size);
  const content = Buffer.alloc(size);
  const fd = fs.openSync(from, 'r');
  try {
    for (let off = 0; off < size; ) {
      const n = fs.readSync(fd, content, off, Math.min(GHOST_CHUNK, size - off), off);
      if (n <= 0) break;
      off += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return content;
}

/**
 * A deleted regular file that is mapped or is a task's executable (no fd holds it, or not only one): file
 * entry `fileId` gets the inode's ghost (the same one its fds get), its content read through `from`.
 */
export function ghostMappedFile(ctx: CollectContext, fileId: number, st: fs.BigIntStats, from: string, what: string, path: string): void {
  remapToGhost(ctx, fileId, ghostFor(ctx, st, () => readGhostContent(ctx, st, from, what, path)));
}

/** remap-fpath.img: file entry `fileId` is the ghost `ghostId` (once per file entry, however many fds share it). */
export function remapToGhost(ctx: CollectContext, fileId: number, ghostId: number): void {
  addRemap(ctx, fileId, ghostId, REMAP_TYPE.GHOST);
}

/** remap-fpath.img: file entry `fileId` is reached through `remapId` (a ghost, or a link remap's file entry), once. */
export function addRemap(ctx: CollectContext, fileId: number, remapId: number, type: number): void {
  const key = `remap:${fileId}`;
  if (ctx.ghosts.has(key)) return;
  ctx.ghosts.set(key, -1);
  ctx.images.add('REMAP_FPATH', undefined, { orig_id: fileId, remap_id: remapId, remap_type: type });
}
