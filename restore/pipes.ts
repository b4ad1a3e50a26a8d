/**
 * Pipes: one pipe per dumped pipe_id, created in the restorer; its ends become the objects of the file ids
 * that name them (O_WRONLY = write end), with their status flags, and its in-flight data is written back
 * before any task runs.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { Op } from './restorer';
import { openInRestorer } from './memory';

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_CLOEXEC = 0o2000000;
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

/** Default pipe buffer (16 pages): nothing to do when a pipe had it. */
const DEFAULT_PIPE_SIZE = 65536;

/** Gives the pipe its dumped buffer size (and room for its data). */
async function resize(ctx: RestoreContext, fd: number, size: number | undefined, data: Buffer | undefined, what: string): Promise<void> {
  const want = Math.max(size ?? DEFAULT_PIPE_SIZE, data?.length ?? 0);
  if (want === DEFAULT_PIPE_SIZE) return;
  await fcntl(ctx, fd, F_SETPIPE_SZ, want, `set the buffer size of ${what}`).catch((e) => {
    // Without CAP_SYS_RESOURCE a pipe cannot grow past pipe-max-size (1 MiB here).
    throw new GodwitError(`${what} had a ${want}-byte buffer, more than this host lets a pipe have`, { cause: e });
  });
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
    const taken = new Set<number>();
    for (const f of files) {
      const p = f.pipe as Msg;
      const flags = Number(p.flags ?? 0);
      const end = (flags & O_ACCMODE) === O_WRONLY ? wr : rd;
      let fd = end;
      if (taken.has(end)) {
        // Another open file description of the same end (an open of /proc/PID/fd/N, as zdtm pipe01 makes): its
        // own, so that its flags stay its own.
        fd = await openInRestorer(ctx, `/proc/self/fd/${end}`, (flags & O_ACCMODE) | O_CLOEXEC, undefined, 0, true);
        ctx.restorerFds.push(fd);
      }
      taken.add(end);
      ctx.objects.set(Number(f.id), fd);
      if (flags & SETFL_MASK) await fcntl(ctx, fd, F_SETFL, flags & SETFL_MASK, `set flags of pipe ${pipeId}`);
    }
    await resize(ctx, wr, set.pipeSizes.get(pipeId), set.pipeData.get(pipeId), `pipe ${pipeId}`);
    const data = set.pipeData.get(pipeId);
    if (data && data.length) {
      const b = Buffer.alloc(4 + data.length);
      b.writeInt32LE(wr, 0);
      data.copy(b, 4);
      await ctx.restorer!.request(Op.WRITE_FD, b, `refill pipe ${pipeId} with ${data.length} bytes`);
    }
  }
}

const O_RDWR = 2;
const O_NONBLOCK = 0o4000;

/**
 * FIFOs: opened by path in the restorer. A keeper opened O_RDWR first makes every other open return at once
 * (a FIFO open blocks until both ends exist) and takes the data in flight; it is closed with the other
 * restorer fds once the tasks hold theirs.
 */
export async function createFifos(ctx: RestoreContext): Promise<void> {
  const set = ctx.set!;
  const keepers = new Map<number, number>();
  for (const f of set.files.values()) {
    const fifo = f.fifo as Msg | undefined;
    if (!fifo) continue;
    const reg = set.files.get(Number(fifo.regf_id))?.reg as Msg | undefined;
    if (!reg) throw new GodwitError(`FIFO file id ${f.id}: its path entry ${fifo.regf_id} is missing from files.img`);
    const p = reg.name as string;
    const pipeId = Number(fifo.pipe_id);
    if (!keepers.has(pipeId)) {
      const k = await openInRestorer(ctx, p, O_RDWR | O_NONBLOCK);
      keepers.set(pipeId, k);
      ctx.restorerFds.push(k);
      const data = set.fifoData.get(pipeId);
      await resize(ctx, k, set.pipeSizes.get(pipeId), data, `FIFO ${p}`);
      if (data && data.length) {
        const b = Buffer.alloc(4 + data.length);
        b.writeInt32LE(k, 0);
        data.copy(b, 4);
        await ctx.restorer!.request(Op.WRITE_FD, b, `refill FIFO ${p} with ${data.length} bytes`);
      }
    }
    const flags = Number(reg.flags ?? 0);
    const fd = await openInRestorer(ctx, p, (flags & O_ACCMODE) | O_NONBLOCK);
    ctx.restorerFds.push(fd);
    await fcntl(ctx, fd, F_SETFL, flags & SETFL_MASK, `set flags of FIFO ${p}`);
    ctx.objects.set(Number(f.id), fd);
  }
}
