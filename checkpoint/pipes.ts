/**
 * Pipes and FIFOs: one pipe_entry (or fifo_entry + the FIFO's path) per open description, and once per pipe
 * the bytes in flight (pipes-data.img / fifo-data.img), peeked by the helper without consuming them.
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { describe, FD_TYPES, fown, O_CLOEXEC } from './filetable';
import { ghostFor, remapToGhost } from './ghosts';

export async function dumpPipeFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const ino = Number(c.proc.stat.ino);
  const flags = info.flags & ~O_CLOEXEC;
  const id = ctx.files.add(await describe(ctx, pid, c.fd, `pipe:${ino}:${flags}`), (id) => ({
    type: FD_TYPES.PIPE,
    id,
    pipe: { id, pipe_id: ino, flags, fown: fown() },
  }));
  await pipeData(ctx, 'PIPES_DATA', pid, c.fd, ino);
  return id;
}

export async function dumpFifoFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const ino = Number(c.proc.stat.ino);
  const flags = info.flags & ~O_CLOEXEC;
  // The FIFO's path is a regular-file entry; restore opens it by name (O_RDWR first so it does not block).
  const deleted = c.link.endsWith(' (deleted)') && c.proc.stat.nlink === 0n;
  const regf = ctx.files.regular(c.link.replace(/ \(deleted\)$/, ''), c.proc.stat, flags, 0n);
  if (deleted) ghostFifo(ctx, c, regf);
  const id = ctx.files.add(await describe(ctx, pid, c.fd, `fifo:${ino}:${flags}`), (id) => ({
    type: FD_TYPES.FIFO,
    id,
    fifo: { id, pipe_id: ino, regf_id: regf },
  }));
  await pipeData(ctx, 'FIFO_DATA', pid, c.fd, ino);
  return id;
}

/**
 * A FIFO unlinked while open (zdtm unlink_fifo): no path to open it by at restore. A ghost file of no content
 * but the FIFO's mode and owner tells restore to make it again (mknod), open it and unlink it.
 */
function ghostFifo(ctx: CollectContext, c: FdClass, regf: number): void {
  const ghostId = ghostFor(ctx, c.proc.stat, () => Buffer.alloc(0));
  remapToGhost(ctx, regf, ghostId);
}

async function pipeData(ctx: CollectContext, kind: string, pid: number, fd: number, ino: number): Promise<void> {
  if (ctx.pipesSeen.has(ino)) return;
  ctx.pipesSeen.add(ino);
  const { data, pipeSize, truncated } = await ctx.helper.peekPipe(pid, fd);
  if (truncated) throw new GodwitError(`pid ${pid} fd ${fd}: pipe ${ino} holds more data than could be peeked`);
  ctx.images.add(kind, undefined, { pipe_id: ino, bytes: data.length, size: pipeSize }, data);
}
