/**
 * inotify: each watch (fdinfo "inotify wd:" lines) with the watched inode's file handle, which restore opens
 * with open_by_handle_at to find the path again.
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

/** The handle as CRIU stores it: 64-bit little-endian words. */
function handleWords(b: Buffer | undefined): bigint[] {
  const out: bigint[] = [];
  if (!b) return out;
  const padded = Buffer.alloc(Math.ceil(b.length / 8) * 8);
  b.copy(padded);
  for (let i = 0; i < padded.length; i += 8) out.push(padded.readBigUInt64LE(i));
  return out;
}

const FIONREAD = 0x541b;

/**
 * Events queued and not yet read are refused: reading them empties the queue, and nothing can put them back (here,
 * for a --leave-running dump, or in the restored inotify), so they would be lost without a word.
 */
export async function dumpInotify(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const queued = (await ctx.helper.fdQuery({ pid, fd: c.fd, kind: 'ioctl', cmd: FIONREAD, argLen: 4 })).data.readInt32LE(0);
  if (queued > 0)
    throw new GodwitError(`pid ${pid} fd ${c.fd}: inotify holds ${queued} bytes of events not read yet, which cannot be queued again at restore (not supported: read them first)`);
  const flags = info.flags & ~O_CLOEXEC;
  return ctx.files.add(`inotify:${c.proc.stat.ino}:${pid}:${c.fd}`, (id) => ({
    type: FD_TYPES.INOTIFY,
    id,
    ify: {
      id,
      flags,
      fown: fown(),
      wd: info.inotify.map((w) => ({
        id,
        i_ino: w.ino,
        mask: w.mask,
        ignored_mask: w.ignoredMask,
        s_dev: w.sdev,
        wd: w.wd,
        f_handle: { bytes: w.fhandleBytes ?? 0, type: w.fhandleType ?? 0, handle: handleWords(w.fhandle) },
      })),
    },
  }));
}
