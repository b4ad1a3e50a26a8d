/**
 * Pseudo-terminals whose master is inside the tree: tty-info.img (one entry per side of a pair: id
 * index*2 + 1 for the master, index*2 for the slave, as CRIU numbers them) with termios, locked termios,
 * window size, lock/packet/exclusive state and the session and foreground process group of the slave; tty
 * files in files.img (TTY, one per open file description). Read through the helper's FdQuery ioctls while
 * frozen.
 *
 * Refused, with the pid and fd: a slave whose master is outside the tree (a shell's terminal: the process is a
 * "shell job"; one whose master was closed is carried, hung up), ptys of a devpts instance other than the tree's /dev/pts, consoles, virtual and serial terminals, /dev/tty
 * of a process whose controlling terminal is not such a pty.
 * Bytes queued in a pair are carried in tty-data.img (`dumpQueuedBytes`).
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import { isConsoleOrVt, major, minor, kernelDev } from './fdkinds';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';
import type { ProcFdInfo } from './proc/fdinfo';
import { readStat } from './proc/stat';

export const PTMX_MAJOR = 5;
export const PTMX_MINOR = 2;
/** Unix98 pty slaves: majors 136..143 (UNIX98_PTY_SLAVE_MAJOR + UNIX98_PTY_MAJOR_COUNT). */
export const PTS_MAJOR_FIRST = 136;
export const PTS_MAJOR_LAST = 143;

const TTY_TYPE_PTY = 1;
const TTY_TYPE_CONSOLE = 2;
const TTY_TYPE_VT = 3;
const TTY_TYPE_CTTY = 4;
/** tty_info ids of consoles and virtual terminals that are a session's controlling terminal: base + minor. */
const CONSOLE_VT_INFO_BASE = 1 << 29;
/** tty_info ids of /dev/tty files: this base + the pts index of the controlling terminal they stand for. */
export const CTTY_INFO_BASE = 1 << 30;
// ioctl numbers (x86_64, asm-generic/ioctls.h)
const TCGETS2 = 0x802c542a; // struct termios2: 4 flags, c_line, c_cc[19], c_ispeed, c_ospeed
const TIOCGLCKTRMIOS = 0x5456; // struct termios (36 bytes)
const TIOCGWINSZ = 0x5413;
const TIOCGPTLCK = 0x80045439;
const TIOCGPKT = 0x80045438;
const TIOCGEXCL = 0x80045440;
const TIOCGSID = 0x5429;
const TIOCGPGRP = 0x540f;
const NCCS = 19;

export type PtySide = 'master' | 'slave';

/** The pty a character device fd is, or null when it is not a Unix98 pty. */
export function ptyOf(c: FdClass, info: ProcFdInfo): { side: PtySide; index: number } | null {
  const rdev = c.proc.stat.rdev;
  const maj = major(rdev);
  if (maj === PTMX_MAJOR && minor(rdev) === PTMX_MINOR) {
    const idx = info.raw.get('tty-index');
    if (idx === undefined) return null;
    return { side: 'master', index: Number(idx) };
  }
  if (maj >= PTS_MAJOR_FIRST && maj <= PTS_MAJOR_LAST) return { side: 'slave', index: (maj - PTS_MAJOR_FIRST) * 256 + minor(rdev) };
  return null;
}

/** A /dev/tty fd (5:0): it names no terminal of its own, only the holder's controlling terminal. */
export function isCtty(c: FdClass): boolean {
  return major(c.proc.stat.rdev) === PTMX_MAJOR && minor(c.proc.stat.rdev) === 0;
}

/** The pts index of pid's controlling terminal (/proc/PID/stat tty_nr), or null if it has none or another kind. */
export function cttyIndex(pid: number): number | null {
  const nr = BigInt(readStat(pid).ttyNr);
  const maj = major(nr);
  return maj >= PTS_MAJOR_FIRST && maj <= PTS_MAJOR_LAST ? (maj - PTS_MAJOR_FIRST) * 256 + minor(nr) : null;
}

/**
 * A slave whose master was closed: the kernel removed its /dev/pts entry and hung it up (its fds read end of file,
 * and every ioctl fails with EIO), so it has no settings left to read.
 */
export function isHungUpSlave(link: string): boolean {
  return link.endsWith(' (deleted)');
}

export function ttyInfoId(index: number, side: PtySide): number {
  return index * 2 + (side === 'master' ? 1 : 0);
}


/**
 * The devpts instance (st_dev) at /dev/pts as task PID sees it (a container's own, or this host's), or undefined
 * if there is none.
 */
export function devptsOf(pid: number): bigint | undefined {
  try {
    return fs.statSync(`/proc/${pid}/root/dev/pts`, { bigint: true }).dev;
  } catch {
    return undefined;
  }
}

function termios(b: Buffer, withSpeeds: boolean): Record<string, unknown> {
  const cc: number[] = [];
  for (let i = 0; i < NCCS; i++) cc.push(b[17 + i]);
  return {
    c_iflag: b.readUInt32LE(0),
    c_oflag: b.readUInt32LE(4),
    c_cflag: b.readUInt32LE(8),
    c_lflag: b.readUInt32LE(12),
    c_line: b[16],
    c_ispeed: withSpeeds ? b.readUInt32LE(36) : 0,
    c_ospeed: withSpeeds ? b.readUInt32LE(40) : 0,
    c_cc: cc,
  };
}

export interface TtyState {
  /** tty_info ids written so far. */
  infos: Set<number>;
  /** master index -> its one open file description key (a second description of a master cannot be made). */
  masterDescriptions: Map<number, string>;
}

const states = new WeakMap<CollectContext, TtyState>();
function state(ctx: CollectContext): TtyState {
  let s = states.get(ctx);
  if (!s) states.set(ctx, (s = { infos: new Set(), masterDescriptions: new Map() }));
  return s;
}

/**
 * The bytes queued in a pair, both ways, into tty-data.img: one entry per direction that holds any, tty_id being
 * the side that has yet to read them. The helper reads them from the master and a slave of its own and writes
 * them back (native/src/tty.c): with the slave in canonical mode and none of them a character canonical mode
 * acts on, they go back as lines; otherwise raw, so a partial line becomes readable at once.
 */
async function dumpQueuedBytes(ctx: CollectContext, pid: number, fd: number, index: number): Promise<void> {
  const { slaveIn, masterIn } = await ctx.helper.ttyQueue(pid, fd);
  if (slaveIn.length) ctx.images.add('TTY_DATA', undefined, { tty_id: ttyInfoId(index, 'slave'), data: slaveIn });
  if (masterIn.length) ctx.images.add('TTY_DATA', undefined, { tty_id: ttyInfoId(index, 'master'), data: masterIn });
}

/** One pty fd: its TTY file entry (and the pair's tty_info entries the first time). Returns the file id. */
export async function dumpTtyFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  if (isCtty(c)) return dumpCttyFd(ctx, pid, c, info);
  const pty = ptyOf(c, info);
  if (!pty) throw new GodwitError(`pid ${pid} fd ${c.fd}: ${c.link} is not a pseudo-terminal godwit can dump`);
  const st = state(ctx);
  const q = (cmd: number, argLen = 4) => ctx.helper.fdQuery({ pid, fd: c.fd, kind: 'ioctl', cmd, argLen });
  const u32 = async (cmd: number) => (await q(cmd)).data.readInt32LE(0);
  const what = `pid ${pid} fd ${c.fd} (${c.link}, pty ${pty.index} ${pty.side})`;
  try {
    const id = ttyInfoId(pty.index, pty.side);
    if (!st.infos.has(id) && pty.side === 'slave' && isHungUpSlave(c.link)) {
      // No master entry in tty-info.img tells restore to close the master it makes, which hangs the slave up again.
      st.infos.add(id);
      ctx.images.add('TTY_INFO', undefined, { id, type: TTY_TYPE_PTY, locked: false, exclusive: false, packet_mode: false, sid: 0, pgrp: 0, rdev: kernelDev(c.proc.stat.rdev), pty: { index: pty.index } });
    }
    if (!st.infos.has(id)) {
      st.infos.add(id);
      if (pty.side === 'master') await dumpQueuedBytes(ctx, pid, c.fd, pty.index);
      const t2 = (await q(TCGETS2, 44)).data;
      const lck = (await q(TIOCGLCKTRMIOS, 36)).data;
      const ws = (await q(TIOCGWINSZ, 8)).data;
      // Session and foreground group of the pair: asked on the master, which answers for its slave whoever asks.
      let sid = 0;
      let pgrp = 0;
      if (pty.side === 'master') {
        sid = await u32(TIOCGSID).catch(() => 0); // ENOTTY: the slave is nobody's controlling terminal
        if (sid) pgrp = await u32(TIOCGPGRP).catch(() => 0);
      }
      const e: Record<string, unknown> = {
        id,
        type: TTY_TYPE_PTY,
        locked: pty.side === 'master' ? (await u32(TIOCGPTLCK)) !== 0 : false,
        exclusive: pty.side === 'slave' ? (await u32(TIOCGEXCL)) !== 0 : false,
        packet_mode: pty.side === 'master' ? (await u32(TIOCGPKT)) !== 0 : false,
        sid,
        pgrp,
        rdev: kernelDev(c.proc.stat.rdev),
        termios: termios(t2, true),
        termios_locked: termios(lck, false),
        winsize: { ws_row: ws.readUInt16LE(0), ws_col: ws.readUInt16LE(2), ws_xpixel: ws.readUInt16LE(4), ws_ypixel: ws.readUInt16LE(6) },
        pty: { index: pty.index },
      };
      ctx.images.add('TTY_INFO', undefined, e);
    }
  } catch (err) {
    if (err instanceof GodwitError && !(err as { errno?: number }).errno) throw err;
    throw new GodwitError(`${what}: cannot read its terminal state`, { cause: err });
  }
  const flags = info.flags & ~O_CLOEXEC;
  const key = `tty:${pty.index}:${pty.side}:${c.proc.stat.ino}:${flags}:${info.mntId}`;
  if (pty.side === 'master') {
    // Descriptions are told apart by their flags and position only; a master has position 0 always.
    const have = st.masterDescriptions.get(pty.index);
    if (have !== undefined && have !== key)
      throw new GodwitError(`${what}: two open file descriptions of one pty master (different flags) cannot be restored`);
    st.masterDescriptions.set(pty.index, key);
  }
  return ctx.files.add(key, (id) => ({
    type: FD_TYPES.TTY,
    id,
    tty: { id, tty_info_id: ttyInfoId(pty.index, pty.side), flags, fown: fown() },
  }));
}

/**
 * A /dev/tty fd: a TTY file whose tty_info (type CTTY, rdev 5:0) names the pts index of the controlling terminal
 * it reached when opened: restore opens /dev/tty again inside the holder, whose session has that terminal by then.
 */
function dumpCttyFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
  const index = cttyIndex(pid);
  if (index === null) throw new GodwitError(`pid ${pid} fd ${c.fd}: /dev/tty of a process whose controlling terminal is not a pty`);
  const st = state(ctx);
  const infoId = CTTY_INFO_BASE + index;
  if (!st.infos.has(infoId)) {
    st.infos.add(infoId);
    ctx.images.add('TTY_INFO', undefined, {
      id: infoId,
      type: TTY_TYPE_CTTY,
      locked: false,
      exclusive: false,
      packet_mode: false,
      sid: 0,
      pgrp: 0,
      rdev: kernelDev(c.proc.stat.rdev),
      pty: { index },
    });
  }
  const flags = info.flags & ~O_CLOEXEC;
  return ctx.files.add(`ctty:${index}:${c.proc.stat.ino}:${flags}:${pid}`, (id) => ({
    type: FD_TYPES.TTY,
    id,
    tty: { id, tty_info_id: infoId, flags, fown: fown() },
  }));
}

/** The path a console (5:1: /dev/console) or virtual terminal (4:N: /dev/ttyN) is opened by at restore. */
export function consoleOrVtPath(rdev: bigint): string {
  return major(rdev) === PTMX_MAJOR ? '/dev/console' : `/dev/tty${minor(rdev)}`;
}

/**
 * A session leader whose controlling terminal is a console or virtual terminal (zdtm vt): a tty_info of type
 * CONSOLE or VT with its session and foreground group. Restore opens the device by its usual path
 * (consoleOrVtPath) for the leader to take while it is made (preflight checks that path is the device).
 */
export function dumpConsoleTerminal(ctx: CollectContext, pid: number): void {
  const st = readStat(pid);
  const nr = BigInt(st.ttyNr);
  if (st.sid !== pid || !nr || !isConsoleOrVt(nr)) return;
  const vt = major(nr) !== PTMX_MAJOR;
  ctx.images.add('TTY_INFO', undefined, {
    id: CONSOLE_VT_INFO_BASE + (vt ? minor(nr) : 64),
    type: vt ? TTY_TYPE_VT : TTY_TYPE_CONSOLE,
    locked: false,
    exclusive: false,
    packet_mode: false,
    sid: pid,
    pgrp: st.tpgid > 0 ? st.tpgid : 0,
    rdev: kernelDev(nr),
  });
}
