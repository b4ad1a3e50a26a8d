/**
 * eventfd, signalfd, timerfd and inotify objects, made in the restorer (so fds that shared one at dump time
 * share one again) with their state: eventfd count and semaphore mode, signalfd mask, timerfd clock, remaining
 * time, interval and expiration count, inotify watches with their numbers. Tasks pull them like any file.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { Batch, hostPath, runLocal } from './syscalls';

const O_NONBLOCK = 0o4000;
const EFD_SEMAPHORE = 1;
const TFD_IOC_SET_TICKS = 0x40085400n; // _IOW('T', 0, u64)
const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const AT_FDCWD = -100;
/** An inotify wd is handed out in increasing order; a dumped one further away than this is an image error. */
const MAX_WD_SKIP = 65536;

async function one(ctx: RestoreContext, b: Batch, what: string): Promise<number> {
  const { results } = await runLocal(ctx.restorer!, b, what);
  const fd = Number(results[0]);
  ctx.restorerFds.push(fd);
  return fd;
}

export async function createEventfd(ctx: RestoreContext, id: number, e: Msg): Promise<number> {
  const flags = Number(e.flags ?? 0);
  const b = new Batch();
  const fd = b.call('eventfd2', [0, (flags & (EFD_SEMAPHORE | O_NONBLOCK)) | O_CLOEXEC], `create eventfd ${id}`);
  const count = BigInt((e.counter as bigint | undefined) ?? 0n);
  if (count > 0n) {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(count);
    b.call('write', [fd, b.data(v), 8], `set the count of eventfd ${id}`);
  }
  return one(ctx, b, `eventfd ${id}`);
}

export async function createSignalfd(ctx: RestoreContext, id: number, e: Msg): Promise<number> {
  const b = new Batch();
  const mask = Buffer.alloc(8);
  mask.writeBigUInt64LE(BigInt((e.sigmask as bigint | undefined) ?? 0n));
  b.call('signalfd4', [-1, b.data(mask), 8, (Number(e.flags ?? 0) & O_NONBLOCK) | O_CLOEXEC], `create signalfd ${id}`);
  return one(ctx, b, `signalfd ${id}`);
}

export async function createTimerfd(ctx: RestoreContext, id: number, e: Msg): Promise<number> {
  const b = new Batch();
  const fd = b.call('timerfd_create', [Number(e.clockid ?? 0), (Number(e.flags ?? 0) & O_NONBLOCK) | O_CLOEXEC], `create timerfd ${id}`);
  const v = ['isec', 'insec', 'vsec', 'vnsec'].map((k) => BigInt((e[k] as bigint | undefined) ?? 0n));
  if (v.some((x) => x !== 0n)) {
    // The dump recorded the time left: arm it relative to now. A zero value would disarm it: make it due now.
    if (v[2] === 0n && v[3] === 0n) v[3] = 1n;
    const its = Buffer.alloc(32);
    v.forEach((x, i) => its.writeBigInt64LE(x, 8 * i));
    b.call('timerfd_settime', [fd, 0, b.data(its), 0], `arm timerfd ${id}`);
  }
  const ticks = BigInt((e.ticks as bigint | undefined) ?? 0n);
  if (ticks > 0n) {
    const t = Buffer.alloc(8);
    t.writeBigUInt64LE(ticks);
    b.call('ioctl', [fd, TFD_IOC_SET_TICKS, b.data(t)], `restore the expirations of timerfd ${id}`);
  }
  return one(ctx, b, `timerfd ${id}`);
}

/** inotify with each watch at its number: watched inodes are found by their file handle on the root mount. */
export async function createInotify(ctx: RestoreContext, id: number, e: Msg): Promise<number> {
  const b = new Batch();
  b.call('inotify_init1', [(Number(e.flags ?? 0) & O_NONBLOCK) | O_CLOEXEC], `create inotify ${id}`);
  const fd = await one(ctx, b, `inotify ${id}`);
  const watches = ((e.wd as Msg[] | undefined) ?? []).slice().sort((a, c) => Number(a.wd) - Number(c.wd));
  for (const w of watches) {
    const fh = (w.f_handle as Msg | undefined) ?? {};
    const words = (fh.handle as bigint[] | undefined) ?? [];
    const bytes = Number(fh.bytes ?? 0);
    const h = Buffer.alloc(8 + Math.max(bytes, words.length * 8));
    h.writeUInt32LE(bytes, 0);
    h.writeInt32LE(Number(fh.type ?? 0), 4);
    words.forEach((x, i) => h.writeBigUInt64LE(BigInt.asUintN(64, BigInt(x)), 8 + 8 * i));
    const o = new Batch();
    // The mount fd must be a real open file: open_by_handle_at does not take an O_PATH one.
    const mnt = o.call('openat', [AT_FDCWD, o.str('/'), O_DIRECTORY | O_CLOEXEC, 0], 'open the root mount');
    o.call('open_by_handle_at', [mnt, o.data(h), O_PATH | O_CLOEXEC], `find the inode watched by inotify ${id} wd ${w.wd}`);
    o.call('close', [mnt], 'close the root mount');
    // A watched file deleted while open (zdtm inotify00) came back from its ghost image, as a new inode its
    // handle cannot name: the watch goes on that file.
    const ghost = ctx.ghostFds.get(`${w.s_dev}:${w.i_ino}`);
    const target =
      ghost ??
      Number(
        (
          await runLocal(ctx.restorer!, o, `inotify ${id}`).catch((err) => {
            throw new GodwitError(`inotify ${id}: the inode of watch ${w.wd} (inode ${w.i_ino}) is no longer on this host's root filesystem`, { cause: err });
          })
        ).results[1],
      );
    const mask = Number(w.mask ?? 0) & 0x7fffffff;
    try {
      for (let tries = 0; ; tries++) {
        const a = new Batch();
        // inotify_add_watch takes only a path: the O_PATH fd through the restorer's /proc/self/fd, the host's.
        a.call('inotify_add_watch', [fd, a.str(hostPath(`/proc/self/fd/${target}`)), mask], `watch inode ${w.i_ino}`);
        const got = Number((await runLocal(ctx.restorer!, a, `inotify ${id}`)).results[0]);
        if (got === Number(w.wd)) break;
        if (got > Number(w.wd) || tries > MAX_WD_SKIP)
          throw new GodwitError(`inotify ${id}: cannot give watch ${w.wd} its number back (the kernel handed out ${got})`);
        // Numbers go up: drop this one and ask again for the next.
        const r = new Batch();
        r.call('inotify_rm_watch', [fd, got], 'skip a watch number');
        await runLocal(ctx.restorer!, r, `inotify ${id}`);
      }
    } finally {
      if (ghost === undefined) {
        const c = new Batch();
        c.call('close', [target], 'close the watched inode');
        await runLocal(ctx.restorer!, c, `inotify ${id}`);
      }
    }
  }
  return fd;
}
