/**
 * Pipes: one pipe per dumped pipe_id, created in the restorer; its ends become the objects of the file ids
 * that name them (O_WRONLY = write end), with their status flags, and its in-flight data is written back
 * before any task runs.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { Op } from './restorer';

const O_ACCMODE = 3;
const O_WRONLY = 1;
const F_SETFL = 4;
const F_SETPIPE_SZ = 1031;
const SETFL_MASK = 0o2000 /* O_APPEND */ | 0o4000 /* O_NONBLOCK */ | 0o20000 /* O_ASYNC */ | 0o40000 /* O_DIRECT */;

async function fcntl(ctx: RestoreContext, fd: number, cmd: number, arg: number, what: string): Promise<number> {
  const b = Buffer.alloc(16);
  b.writeInt32LE(fd, 0);
  b.writeInt32LE(cmd, 4);
  b.writeBigInt64LE(BigInt(arg), 8);
  return (await ctx.restorer!.request(Op.FCNTL, b, what)).readInt32LE(0);
}

export async function createPipes(ctx: RestoreContext): Promise<void> {
  const set = ctx.set!;
  const ends = new Map<number, Msg[]>();
  for (const f of set.files.values()) {
    if (!f.pipe) continue;
    const p = f.pipe as Msg;
    const list = ends.get(Number(p.pipe_id)) ?? [];
    list.push(f);
    ends.set(Number(p.pipe_id), list);
  }
  for (const [pipeId, files] of ends) {
    const out = await ctx.restorer!.request(Op.PIPE, Buffer.alloc(0), `create pipe ${pipeId}`);
    const rd = out.readInt32LE(0);
    const wr = out.readInt32LE(4);
    ctx.restorerFds.push(rd, wr);
    for (const f of files) {
      const p = f.pipe as Msg;
      const flags = Number(p.flags ?? 0);
      const fd = (flags & O_ACCMODE) === O_WRONLY ? wr : rd;
      ctx.objects.set(Number(f.id), fd);
      if (flags & SETFL_MASK) await fcntl(ctx, fd, F_SETFL, flags & SETFL_MASK, `set flags of pipe ${pipeId}`);
    }
    const data = set.pipeData.get(pipeId);
    if (data && data.length) {
      if (data.length > 65536) {
        // Grow the pipe to hold the data; without CAP_SYS_RESOURCE the cap is pipe-max-size (1 MiB here).
        await fcntl(ctx, wr, F_SETPIPE_SZ, data.length, `grow pipe ${pipeId}`).catch((e) => {
          throw new GodwitError(`pipe ${pipeId} held ${data.length} bytes, more than this host lets a pipe grow to`, { cause: e });
        });
      }
      const b = Buffer.alloc(4 + data.length);
      b.writeInt32LE(wr, 0);
      data.copy(b, 4);
      await ctx.restorer!.request(Op.WRITE_FD, b, `refill pipe ${pipeId} with ${data.length} bytes`);
    }
  }
}
