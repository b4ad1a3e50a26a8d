/**
 * inotify: each watch (fdinfo "inotify wd:" lines) with the watched inode's file handle, which restore opens
 * with open_by_handle_at to find the path again.
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';
import type { Helper } from '../native/helper';
import type { Tree } from './tree';
import { isNoEntry, listProcNumbers, readProcLink } from './proc/read';

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

export interface QueuedInotify {
  pid: number;
  fd: number;
  bytes: number;
}

/**
 * Every inotify fd of the (frozen) tree holding events not read yet. Queued events are refused: reading them
 * empties the queue and nothing can put them back (here, for a --leave-running dump, or in the restored inotify),
 * so they would be lost without a word. The freeze (freeze.ts `freezeSettled`) asks this, and lets the tree run
 * a moment when it finds some: they are nearly always just in flight to a reader.
 */
export async function queuedInotify(helper: Helper, tree: Tree): Promise<QueuedInotify[]> {
  const out: QueuedInotify[] = [];
  for (const p of tree.processes) {
    if (p.zombie) continue;
    for (const fd of listProcNumbers(p.pid, 'fd')) {
      let link: string;
      try {
        link = readProcLink(p.pid, `fd/${fd}`);
      } catch (err) {
        if (isNoEntry(err)) continue; // closed before the freeze took hold
        throw err;
      }
      if (link !== 'anon_inode:inotify') continue;
      const bytes = (await helper.fdQuery({ pid: p.pid, fd, kind: 'ioctl', cmd: FIONREAD, argLen: 4 })).data.readInt32LE(0);
      if (bytes > 0) out.push({ pid: p.pid, fd, bytes });
    }
  }
  return out;
}

/** The refusal once the freeze gave up waiting for the readers. */
export function queuedInotifyError(queued: QueuedInotify[], waitedMs: number, freezes: number): GodwitError {
  const which = queued.map((q) => `pid ${q.pid} fd ${q.fd}: inotify holds ${q.bytes} bytes of events not read yet`).join('; ');
  return new GodwitError(
    `${which}, which cannot be queued again at restore (still there after ${freezes} freezes over ${waitedMs.toFixed(0)} ms ` +
      `of letting the tree run to read them; not supported: read them first)`,
  );
}

/**
 * The queue was found empty at the freeze (freezeSettled). Events queued since then come from outside the frozen
 * tree: they happened after the checkpoint, like everything between the dump and the restore, and are not asked
 * about again here (a writer outside the tree would otherwise make nearly every dump of its watcher fail).
 */
export async function dumpInotify(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
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
