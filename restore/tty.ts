/**
 * Pseudo-terminals (checkpoint/tty.ts): each pair is made again in the restorer with its dumped index (/dev/ptmx
 * is opened until the kernel hands out that index: it gives the lowest free one, so a free index is reached and
 * a taken one is reported), then the slave's termios, locked termios, window size, packet mode, exclusive mode
 * and lock. Master files are the master fd itself (a second description cannot be made); slave files are new
 * opens of /dev/pts/N with their flags. Once the process groups exist, the session leader takes the slave as its
 * controlling terminal again (TIOCSCTTY) and sets the foreground process group (TIOCSPGRP).
 */
import * as fs from 'node:fs';
import { kernelDev } from '../checkpoint/fdkinds';
import { GodwitError } from '../util/errors';
import { RestoreContext, treePath } from './context';
import { Msg, readEntries } from './image-files';
import { liveTasks, TaskImage } from './load';
import { Batch, runBatch, runLocal } from './syscalls';

const O_RDWR = 2;
const O_NOCTTY = 0o400;
const O_CLOEXEC = 0o2000000;
const O_ACCMODE = 3;
const F_SETFL = 4;
const AT_FDCWD = -100;
const FD_TYPE_TTY = 11;
const TTY_TYPE_PTY = 1;
const TTY_TYPE_CONSOLE = 2;
const TTY_TYPE_VT = 3;
const TTY_TYPE_CTTY = 4;
const TIOCGPTN = 0x80045430;
const TIOCSPTLCK = 0x40045431;
const TCSETS2 = 0x402c542b;
const TIOCSLCKTRMIOS = 0x5457;
const TIOCSWINSZ = 0x5414;
const TIOCPKT = 0x5420;
const TIOCEXCL = 0x540c;
const TIOCSCTTY = 0x540e;
const TIOCSPGRP = 0x5410;
const POLLIN = 1;
const ICANON = 2;
const IXON = 0o2000;
/** c_cc indices of the characters canonical mode acts on: VERASE, VKILL, VEOF, VEOL, VEOL2. */
const CANON_CHARS = [2, 3, 4, 11, 16];
const NCCS = 19;
/** /dev/ptmx opens allowed while looking for one index: the kernel hands out the lowest free index. */
const MAX_PTY_INDEX = 4096;

interface Pair {
  index: number;
  master: number;
  /** Restorer's own slave fd, for the settings (closed with the other restorer fds). */
  slave: number;
}

interface TtyState {
  infos: Map<number, Msg>;
  pairs: Map<number, Pair>;
  /** tty-data.img: tty_info id of the side that has yet to read them -> the bytes. */
  queued: Map<number, Buffer>;
}

const states = new WeakMap<RestoreContext, TtyState>();

function ttyState(ctx: RestoreContext): TtyState {
  let s = states.get(ctx);
  if (!s) {
    const infos = new Map<number, Msg>();
    for (const e of readEntries(ctx.set!.dir, 'tty-info.img') ?? []) infos.set(Number(e.id), e);
    const queued = new Map<number, Buffer>();
    for (const e of readEntries(ctx.set!.dir, 'tty-data.img') ?? []) queued.set(Number(e.tty_id), Buffer.from(e.data as Uint8Array));
    states.set(ctx, (s = { infos, pairs: new Map(), queued }));
  }
  return s;
}

function infoOf(ctx: RestoreContext, tf: Msg, what: string): Msg {
  const info = ttyState(ctx).infos.get(Number(tf.tty_info_id));
  if (!info) throw new GodwitError(`${what}: tty info ${tf.tty_info_id} is missing from tty-info.img`);
  if ((Number(info.type) !== TTY_TYPE_PTY && Number(info.type) !== TTY_TYPE_CTTY) || !info.pty) throw new GodwitError(`${what}: terminal type ${info.type} is not a pty, which restore does not support yet`);
  return info;
}

const isMaster = (info: Msg) => Number(info.type) === TTY_TYPE_PTY && Number(info.id) % 2 === 1;
const isCtty = (info: Msg) => Number(info.type) === TTY_TYPE_CTTY;
const isConsoleOrVt = (info: Msg) => Number(info.type) === TTY_TYPE_CONSOLE || Number(info.type) === TTY_TYPE_VT;

/** Where a console or virtual terminal is opened (checkpoint/tty.ts consoleOrVtPath); rdev in the kernel's encoding. */
function consoleOrVtPath(info: Msg): string {
  const rdev = Number(info.rdev ?? 0);
  return Number(info.type) === TTY_TYPE_CONSOLE ? '/dev/console' : `/dev/tty${rdev & 0xfffff}`;
}
const indexOf = (info: Msg) => Number((info.pty as Msg).index);

/** Preflight: every pty the tree needs must have a free index here. */
export function ttyProblems(ctx: RestoreContext): string[] {
  const problems: string[] = [];
  for (const info of ttyState(ctx).infos.values()) {
    if (!isConsoleOrVt(info)) continue;
    const path = consoleOrVtPath(info);
    const want = Number(info.rdev ?? 0);
    let rdev = -1;
    try {
      const st = fs.statSync(treePath(ctx, path), { bigint: true });
      if (st.isCharacterDevice()) rdev = kernelDev(st.rdev);
    } catch {
      /* missing or unreachable: not that device */
    }
    if (rdev !== want)
      problems.push(`session ${info.sid}: its controlling terminal ${want >>> 20}:${want & 0xfffff} would be opened as ${path}, which is not that device here`);
  }
  const seen = new Set<number>();
  for (const t of liveTasks(ctx.set!))
    for (const fdi of t.fds) {
      const f = ctx.set!.files.get(Number(fdi.id));
      if (!f || Number(f.type) !== FD_TYPE_TTY) continue;
      try {
        const info = infoOf(ctx, f.tty as Msg, `task ${t.pid} fd ${fdi.fd}`);
        const index = indexOf(info);
        if (isCtty(info) || seen.has(index)) continue;
        seen.add(index);
        if (fs.existsSync(treePath(ctx, `/dev/pts/${index}`)))
          problems.push(`task ${t.pid} fd ${fdi.fd}: pty ${index} is in use on this host (/dev/pts/${index} exists): end what holds it, the restored tree needs the same index`);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
  return problems;
}

function termios2(t: Msg | undefined, withSpeeds: boolean): Buffer {
  const b = Buffer.alloc(withSpeeds ? 44 : 36);
  if (!t) return b;
  b.writeUInt32LE(Number(t.c_iflag ?? 0), 0);
  b.writeUInt32LE(Number(t.c_oflag ?? 0), 4);
  b.writeUInt32LE(Number(t.c_cflag ?? 0), 8);
  b.writeUInt32LE(Number(t.c_lflag ?? 0), 12);
  b[16] = Number(t.c_line ?? 0);
  ((t.c_cc as number[] | undefined) ?? []).slice(0, NCCS).forEach((v, i) => (b[17 + i] = Number(v)));
  if (withSpeeds) {
    b.writeUInt32LE(Number(t.c_ispeed ?? 0), 36);
    b.writeUInt32LE(Number(t.c_ospeed ?? 0), 40);
  }
  return b;
}

const int32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};

/** Opens /dev/ptmx until it hands out `index`; the others opened on the way are closed again. */
async function openPtmxAt(ctx: RestoreContext, index: number): Promise<number> {
  const spare: number[] = [];
  try {
    for (let tries = 0; tries <= MAX_PTY_INDEX; tries++) {
      const b = new Batch();
      const fd = b.call('openat', [AT_FDCWD, b.str('/dev/ptmx'), O_RDWR | O_NOCTTY | O_CLOEXEC, 0], 'open /dev/ptmx');
      const n = b.data(Buffer.alloc(4));
      b.call('ioctl', [fd, TIOCGPTN, n], 'read the pty index');
      const { results, scratch } = await runLocal(ctx.restorer!, b, `pty ${index}`);
      const got = scratch.readUInt32LE(n.scratch);
      const m = Number(results[0]);
      if (got === index) return m;
      spare.push(m);
      if (got > index)
        throw new GodwitError(`pty ${index} is taken on this host (the kernel handed out ${got}): end what holds /dev/pts/${index}`);
    }
    throw new GodwitError(`pty ${index}: no such index after ${MAX_PTY_INDEX} tries`);
  } finally {
    if (spare.length) {
      const c = new Batch();
      for (const fd of spare) c.call('close', [fd], 'close a pty opened on the way');
      await runLocal(ctx.restorer!, c, 'spare ptys');
    }
  }
}

/** The pair of `info`, made once with all its settings. */
async function pairFor(ctx: RestoreContext, info: Msg): Promise<Pair> {
  const st = ttyState(ctx);
  const index = indexOf(info);
  const have = st.pairs.get(index);
  if (have) return have;
  const master = await openPtmxAt(ctx, index);
  ctx.restorerFds.push(master);
  const mInfo = st.infos.get(index * 2 + 1);
  const sInfo = st.infos.get(index * 2) ?? mInfo;
  const b = new Batch();
  b.call('ioctl', [master, TIOCSPTLCK, b.data(int32(0))], `unlock pty ${index}`);
  const slave = b.call('openat', [AT_FDCWD, b.str(`/dev/pts/${index}`), O_RDWR | O_NOCTTY | O_CLOEXEC, 0], `open /dev/pts/${index}`);
  const tio = (sInfo?.termios ?? mInfo?.termios) as Msg | undefined;
  if (tio) b.call('ioctl', [slave, TCSETS2, b.data(termios2(tio, true))], `termios of pty ${index}`);
  const lck = termios2((sInfo?.termios_locked ?? mInfo?.termios_locked) as Msg | undefined, false);
  if (lck.some((x) => x !== 0)) b.call('ioctl', [slave, TIOCSLCKTRMIOS, b.data(lck)], `locked termios of pty ${index}`);
  const ws = (mInfo?.winsize ?? sInfo?.winsize) as Msg | undefined;
  if (ws) {
    const w = Buffer.alloc(8);
    ['ws_row', 'ws_col', 'ws_xpixel', 'ws_ypixel'].forEach((k, i) => w.writeUInt16LE(Number(ws[k] ?? 0) & 0xffff, 2 * i));
    b.call('ioctl', [master, TIOCSWINSZ, b.data(w)], `window size of pty ${index}`);
  }
  if (mInfo?.packet_mode) b.call('ioctl', [master, TIOCPKT, b.data(int32(1))], `packet mode of pty ${index}`);
  const { results } = await runLocal(ctx.restorer!, b, `pty ${index}`);
  const pair = { index, master, slave: Number(results[slave.result]) };
  ctx.restorerFds.push(pair.slave);
  st.pairs.set(index, pair);
  await requeue(ctx, pair, tio, !!mInfo?.packet_mode);
  return pair;
}

/**
 * The bytes that were queued in the pair, written again as the dump put them back (native/src/tty.c): with
 * echo and input/output processing off (IXON kept for a master in packet mode), as lines if the slave is
 * canonical and none of them is a character canonical mode acts on, else raw. A poll after each write waits for the line discipline to take the bytes
 * (it does in a work item) before the termios go back.
 */
async function requeue(ctx: RestoreContext, pair: Pair, tio: Msg | undefined, packet: boolean): Promise<void> {
  const st = ttyState(ctx);
  const toSlave = st.queued.get(pair.index * 2) ?? Buffer.alloc(0);
  const toMaster = st.queued.get(pair.index * 2 + 1) ?? Buffer.alloc(0);
  if (!toSlave.length && !toMaster.length) return;
  if (!tio) throw new GodwitError(`pty ${pair.index}: queued bytes but no termios in tty-info.img to write them back with`);
  const real = termios2(tio, true);
  const mode = Buffer.from(real);
  const lflag = real.readUInt32LE(12);
  const canonical = (lflag & ICANON) !== 0 && CANON_CHARS.every((i) => !real[17 + i] || !toSlave.includes(real[17 + i]));
  // A master in packet mode is told of every change of IXON (a status byte for its next read): kept.
  mode.writeUInt32LE(packet ? real.readUInt32LE(0) & IXON : 0, 0);
  mode.writeUInt32LE(0, 4);
  mode.writeUInt32LE(canonical ? ICANON : 0, 12);
  const pollfd = (fd: number) => {
    const p = Buffer.alloc(8);
    p.writeInt32LE(fd, 0);
    p.writeInt16LE(POLLIN, 4);
    return p;
  };
  const b = new Batch();
  b.call('ioctl', [pair.slave, TCSETS2, b.data(mode)], `pty ${pair.index}: termios for requeueing its bytes`);
  for (const [to, from, data, what] of [
    [pair.master, pair.slave, toSlave, 'slave'],
    [pair.slave, pair.master, toMaster, 'master'],
  ] as const) {
    if (!data.length) continue;
    b.call('write', [to, b.data(data), data.length], `pty ${pair.index}: requeue ${data.length} bytes for its ${what}`);
    b.call('poll', [b.data(pollfd(from)), 1, 0], `pty ${pair.index}: wait for the ${what} to take them`);
  }
  b.call('ioctl', [pair.slave, TCSETS2, b.data(real)], `termios of pty ${pair.index}`);
  await runLocal(ctx.restorer!, b, `pty ${pair.index}`);
}

/** A TTY file: the pair's master fd, or a new open of the slave, with the description's flags. */
export async function createTtyFile(ctx: RestoreContext, id: number, tf: Msg): Promise<number> {
  const info = infoOf(ctx, tf, `file id ${id}`);
  const pair = await pairFor(ctx, info);
  const flags = Number(tf.flags ?? O_RDWR) & ~O_CLOEXEC;
  const b = new Batch();
  if (isMaster(info)) {
    b.call('fcntl', [pair.master, F_SETFL, flags & ~O_ACCMODE], `flags of pty master ${pair.index}`);
    await runLocal(ctx.restorer!, b, `pty ${pair.index}`);
    return pair.master;
  }
  b.call('openat', [AT_FDCWD, b.str(`/dev/pts/${pair.index}`), flags | O_NOCTTY | O_CLOEXEC, 0], `open /dev/pts/${pair.index} as file ${id}`);
  const { results } = await runLocal(ctx.restorer!, b, `pty ${pair.index}`);
  const fd = Number(results[0]);
  ctx.restorerFds.push(fd);
  return fd;
}

/** Exclusive mode and the lock last: both would refuse the slave opens above. */
async function finishPairs(ctx: RestoreContext): Promise<void> {
  const st = ttyState(ctx);
  for (const p of st.pairs.values()) {
    const b = new Batch();
    if (st.infos.get(p.index * 2)?.exclusive) b.call('ioctl', [p.slave, TIOCEXCL, 0], `exclusive mode of pty ${p.index}`);
    if (st.infos.get(p.index * 2 + 1)?.locked) b.call('ioctl', [p.master, TIOCSPTLCK, b.data(int32(1))], `lock pty ${p.index}`);
    if (!st.infos.has(p.index * 2 + 1)) {
      // Its master had been closed (checkpoint/tty.ts isHungUpSlave): closing ours hangs the slave's files up again.
      b.call('close', [p.master], `close the master of pty ${p.index}, closed before the dump`);
      ctx.restorerFds.splice(ctx.restorerFds.indexOf(p.master), 1);
    }
    if (b.length) await runLocal(ctx.restorer!, b, `pty ${p.index}`);
  }
}

/**
 * Makes every pty pair the tree's fds need, before the tree exists, and returns the tree request's trailer:
 * the session leaders that take a pty as controlling terminal while they are created (before forking: the
 * members of the session inherit the terminal from them; nobody but a session leader can take one later).
 */
export async function createPtyPairs(ctx: RestoreContext): Promise<Buffer | undefined> {
  const st = ttyState(ctx);
  for (const t of liveTasks(ctx.set!))
    for (const fdi of t.fds) {
      const f = ctx.set!.files.get(Number(fdi.id));
      if (!f || Number(f.type) !== FD_TYPE_TTY) continue;
      const info = infoOf(ctx, f.tty as Msg, `task ${t.pid} fd ${fdi.fd}`);
      if (!isCtty(info)) await pairFor(ctx, info);
    }
  const pids = new Set(liveTasks(ctx.set!).filter((t) => t.sid === t.pid).map((t) => t.pid));
  const recs: [number, number][] = [];
  for (const info of st.infos.values()) {
    const sid = Number(info.sid ?? 0);
    if (sid && isMaster(info) && st.pairs.has(indexOf(info)) && pids.has(sid)) recs.push([sid, indexOf(info)]);
  }
  for (const info of st.infos.values()) {
    const sid = Number(info.sid ?? 0);
    if (!isConsoleOrVt(info) || !pids.has(sid)) continue;
    // Opened here without becoming ours; the leader's stub inherits the fd and takes it with TIOCSCTTY.
    const b = new Batch();
    const path = consoleOrVtPath(info);
    b.call('openat', [AT_FDCWD, b.str(path), O_RDWR | O_NOCTTY | O_CLOEXEC, 0], `open ${path}, the controlling terminal of session ${sid}`);
    const fd = Number((await runLocal(ctx.restorer!, b, path)).results[0]);
    ctx.restorerFds.push(fd);
    recs.push([sid, -(fd + 1)]);
  }
  if (!recs.length) return undefined;
  const b = Buffer.alloc(4 + 8 * recs.length);
  b.writeUInt32LE(recs.length, 0);
  recs.forEach(([pid, index], i) => {
    b.writeInt32LE(pid, 4 + 8 * i);
    b.writeInt32LE(index, 8 + 8 * i);
  });
  return b;
}

/** Controlling terminals and foreground process groups, after the process groups exist. */
export async function restoreControllingTerminals(ctx: RestoreContext): Promise<void> {
  const st = states.get(ctx);
  if (!st) return;
  await finishPairs(ctx);
  const tasks = liveTasks(ctx.set!);
  for (const [id, info] of st.infos) {
    const sid = Number(info.sid ?? 0);
    if (!sid || !isMaster(info) || !st.pairs.has(indexOf(info))) continue;
    const leader = tasks.find((t) => t.pid === sid);
    if (!leader) {
      ctx.warnings.push({ pid: sid, message: `pty ${indexOf(info)} was the controlling terminal of session ${sid}, whose leader is not in the tree: left without a session` });
      continue;
    }
    await takeTerminal(ctx, leader, `/dev/pts/${indexOf(info)}`, Number(info.pgrp ?? 0), id);
  }
  for (const [id, info] of st.infos) {
    const leader = tasks.find((t) => t.pid === Number(info.sid ?? 0));
    if (isConsoleOrVt(info) && leader) await takeTerminal(ctx, leader, consoleOrVtPath(info), Number(info.pgrp ?? 0), id);
  }
}

async function takeTerminal(ctx: RestoreContext, t: TaskImage, path: string, pgrp: number, infoId: number): Promise<void> {
  const b = new Batch();
  // Opening the terminal without O_NOCTTY in a session leader without one makes it the controlling one.
  const fd = b.call('openat', [AT_FDCWD, b.str(path), O_RDWR | O_CLOEXEC, 0], `open ${path} in the session leader`);
  b.call('ioctl', [fd, TIOCSCTTY, 0], `make ${path} the controlling terminal of session ${t.pid}`);
  if (pgrp) b.call('ioctl', [fd, TIOCSPGRP, b.data(int32(pgrp))], `foreground process group ${pgrp} of ${path}`);
  b.call('close', [fd], `close the extra ${path}`);
  try {
    await runBatch(ctx.restorer!, t.pid, b);
  } catch (err) {
    throw new GodwitError(`task ${t.pid}: cannot make ${path} (tty info ${infoId}) its controlling terminal again`, { cause: err });
  }
}

/** A /dev/tty file (made by openCttys, not with the other files). */
export function isCttyFile(ctx: RestoreContext, f: Msg): boolean {
  return Number(f.type) === FD_TYPE_TTY && isCtty(infoOf(ctx, f.tty as Msg, `file id ${f.id}`));
}

/**
 * /dev/tty files, once the tasks can run injected calls (after their memory): each is opened inside a task
 * holding it (its session leader took the terminal when it was made), then fetched into the restorer with
 * pidfd_getfd like any other object.
 */
export async function openCttys(ctx: RestoreContext): Promise<void> {
  for (const t of liveTasks(ctx.set!))
    for (const fdi of t.fds) {
      const id = Number(fdi.id);
      const f = ctx.set!.files.get(id);
      if (ctx.objects.has(id) || !f || !isCttyFile(ctx, f)) continue;
      ctx.objects.set(id, await openCtty(ctx, id, f.tty as Msg, indexOf(infoOf(ctx, f.tty as Msg, `file id ${id}`))));
    }
}

async function openCtty(ctx: RestoreContext, id: number, tf: Msg, index: number): Promise<number> {
  const t = liveTasks(ctx.set!).find((x) => x.fds.some((f) => Number(f.id) === id));
  if (!t) throw new GodwitError(`file id ${id}: /dev/tty held by no task`);
  const flags = Number(tf.flags ?? O_RDWR) & ~O_CLOEXEC;
  const what = `task ${t.pid}: /dev/tty (pty ${index}) as file ${id}`;
  try {
    const b = new Batch();
    b.call('openat', [AT_FDCWD, b.str('/dev/tty'), flags | O_CLOEXEC, 0], 'open /dev/tty');
    const fd = Number((await runBatch(ctx.restorer!, t.pid, b))[0]);
    const l = new Batch();
    const pidfd = l.call('pidfd_open', [t.pid, 0], `pidfd of task ${t.pid}`);
    const mine = l.call('pidfd_getfd', [pidfd, fd, 0], 'fetch its /dev/tty');
    l.call('close', [pidfd], 'close the pidfd');
    const { results } = await runLocal(ctx.restorer!, l, what);
    const c = new Batch();
    c.call('close', [fd], 'close the /dev/tty fetched by the restorer');
    await runBatch(ctx.restorer!, t.pid, c);
    const got = Number(results[mine.result]);
    ctx.restorerFds.push(got);
    return got;
  } catch (err) {
    throw new GodwitError(`${what}: cannot open it again (is its controlling terminal back?)`, { cause: err });
  }
}
