/** Ghost files: deleted inodes still held open (or as a working directory), in CRIU's ghost-file image. */
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
