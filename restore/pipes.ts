/**
 * Pipes: one pipe per dumped pipe_id, created in the restorer; its ends become the objects of the file ids
 * that name them (O_WRONLY = write end), with their status flags, and its in-flight data is written back
 * before any task runs.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { Op } from './restorer';
import * as fs from 'node:fs';
import { fileNameFor } from '../images';
import { treePath } from './context';
import { readEntries } from './image-files';
import { REMAP_TYPE } from '../checkpoint/filetable';
import { openInRestorer } from './memory';
import { Batch, runLocal } from './syscalls';

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
  // An unlinked FIFO: its first path entry carries the ghost (each open's flags make a path entry of their own).
  const ghosts = new Map<number, Msg>();
  for (const f of set.files.values()) {
    const fifo = f.fifo as Msg | undefined;
    const remap = fifo && set.remaps.get(Number(fifo.regf_id));
    if (remap) ghosts.set(Number(fifo.pipe_id), remap);
  }
  for (const f of set.files.values()) {
    const fifo = f.fifo as Msg | undefined;
    if (!fifo) continue;
    const reg = set.files.get(Number(fifo.regf_id))?.reg as Msg | undefined;
    if (!reg) throw new GodwitError(`FIFO file id ${f.id}: its path entry ${fifo.regf_id} is missing from files.img`);
    const pipeId = Number(fifo.pipe_id);
    const ghost = ghosts.get(pipeId);
    // An unlinked FIFO is reopened through the keeper (its path is gone once the keeper holds it).
    let p = reg.name as string;
    if (!keepers.has(pipeId)) {
      const k = ghost ? await openGhostFifo(ctx, p, ghost) : await openInRestorer(ctx, p, O_RDWR | O_NONBLOCK);
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
    if (ghost) p = `/proc/self/fd/${keepers.get(pipeId)}`;
    const flags = Number(reg.flags ?? 0);
    const fd = await openInRestorer(ctx, p, (flags & O_ACCMODE) | O_NONBLOCK, undefined, 0, !!ghost);
    ctx.restorerFds.push(fd);
    await fcntl(ctx, fd, F_SETFL, flags & SETFL_MASK, `set flags of FIFO ${p}`);
    ctx.objects.set(Number(f.id), fd);
  }
}

const AT_FDCWD = -100;

/**
 * A FIFO that was unlinked while open (a ghost in the image): made again with its mode at its old path (a
 * temporary name beside it if that is taken now), opened read-write, unlinked; its owner comes back too.
 */
async function openGhostFifo(ctx: RestoreContext, name: string, remap: Msg): Promise<number> {
  if (Number(remap.remap_type ?? REMAP_TYPE.GHOST) !== REMAP_TYPE.GHOST) throw new GodwitError(`FIFO ${name}: remap type ${remap.remap_type} is not supported yet`);
  const ghostFile = fileNameFor('GHOST_FILE', Number(remap.remap_id));
  const g = (readEntries(ctx.set!.dir, ghostFile) ?? [])[0];
  if (!g) throw new GodwitError(`${ghostFile} is missing: the unlinked FIFO ${name} is not in the image`);
  const where = fs.existsSync(treePath(ctx, name)) ? `${name}.godwit-ghost-${process.pid}-${remap.remap_id}` : name;
  const mk = new Batch();
  mk.call('mknodat', [AT_FDCWD, mk.str(where), S_IFIFO | (Number(g.mode ?? 0o600) & 0o7777), 0], `make the unlinked FIFO ${where} again`);
  await runLocal(ctx.restorer!, mk, 'unlinked FIFO');
  try {
    const k = await openInRestorer(ctx, where, O_RDWR | O_NONBLOCK);
    const b = new Batch();
    if (g.uid !== undefined && g.gid !== undefined) b.call('fchown', [k, Number(g.uid), Number(g.gid)], `give FIFO ${name} its owner`);
    b.call('fchmod', [k, Number(g.mode ?? 0o600) & 0o7777], `give FIFO ${name} its mode`);
    await runLocal(ctx.restorer!, b, 'unlinked FIFO');
    return k;
  } finally {
    const u = new Batch();
    u.call('unlinkat', [AT_FDCWD, u.str(where), 0], `unlink FIFO ${where} again`);
    await runLocal(ctx.restorer!, u, 'unlinked FIFO');
  }
}

const S_IFIFO = 0o010000;
