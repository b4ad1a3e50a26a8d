/**
 * /proc/PID/fdinfo/N and /proc/PID/fd/N. fdinfo carries what fstat cannot: the position, open flags, mount id,
 * and kind-specific lines (eventfd-count, epoll tfd, signalfd sigmask, timerfd clock and timer, inotify wd).
 */
import * as fs from 'node:fs';
import { procPath, readProcText, toSysError } from './read';

export interface EpollTarget {
  tfd: number;
  events: number;
  data: bigint;
  pos: bigint;
  ino: number;
  sdev: number;
}

export interface InotifyWatch {
  wd: number;
  ino: bigint;
  sdev: number;
  mask: number;
  ignoredMask: number;
  /** file handle bytes for open_by_handle_at, when the kernel shows them */
  fhandleBytes?: number;
  fhandleType?: number;
  fhandle?: Buffer;
}

export interface ProcFdInfo {
  pos: bigint;
  /** Octal in the file: O_* flags plus O_CLOEXEC when close-on-exec is set. */
  flags: number;
  mntId: number;
  ino: number;
  eventfdCount?: bigint;
  eventfdId?: number;
  eventfdSemaphore?: boolean;
  epoll: EpollTarget[];
  sigmask?: bigint;
  timerfd?: {
    clockid: number;
    ticks: bigint;
    settimeFlags: number;
    valueSec: bigint;
    valueNsec: bigint;
    intervalSec: bigint;
    intervalNsec: bigint;
  };
  inotify: InotifyWatch[];
  /** Every "key: value" line, for kinds godwit does not interpret. */
  raw: Map<string, string>;
}

function kv(line: string): Map<string, string> {
  // "tfd:        5 events:       19 data: ..." -> key/value pairs
  const m = new Map<string, string>();
  const re = /([A-Za-z_-]+):\s*(\S+)/g;
  let x: RegExpExecArray | null;
  while ((x = re.exec(line))) m.set(x[1]!, x[2]!);
  return m;
}

const hexBig = (s: string | undefined) => BigInt('0x' + (s ?? '0'));

export function parseFdInfo(text: string): ProcFdInfo {
  const info: ProcFdInfo = { pos: 0n, flags: 0, mntId: 0, ino: 0, epoll: [], inotify: [], raw: new Map() };
  for (const line of text.split('\n')) {
    if (!line) continue;
    if (line.startsWith('tfd:')) {
      const m = kv(line);
      info.epoll.push({
        tfd: Number(m.get('tfd')),
        events: parseInt(m.get('events') ?? '0', 16),
        data: hexBig(m.get('data')),
        pos: BigInt(m.get('pos') ?? '0'),
        ino: parseInt(m.get('ino') ?? '0', 16),
        sdev: parseInt(m.get('sdev') ?? '0', 16),
      });
      continue;
    }
    if (line.startsWith('inotify wd:')) {
      const m = kv(line.slice('inotify '.length));
      const w: InotifyWatch = {
        wd: parseInt(m.get('wd') ?? '0', 16),
        ino: hexBig(m.get('ino')),
        sdev: parseInt(m.get('sdev') ?? '0', 16),
        mask: parseInt(m.get('mask') ?? '0', 16),
        ignoredMask: parseInt(m.get('ignored_mask') ?? '0', 16),
      };
      if (m.has('fhandle-bytes')) {
        w.fhandleBytes = parseInt(m.get('fhandle-bytes')!, 16);
        w.fhandleType = parseInt(m.get('fhandle-type') ?? '0', 16);
        const hx = m.get('f_handle') ?? '';
        w.fhandle = Buffer.from(hx, 'hex');
      }
      info.inotify.push(w);
      continue;
    }
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const key = line.slice(0, i);
    const val = line.slice(i + 1).trim();
    info.raw.set(key, val);
    switch (key) {
      case 'pos':
        info.pos = BigInt(val);
        break;
      case 'flags':
        info.flags = parseInt(val, 8);
        break;
      case 'mnt_id':
        info.mntId = Number(val);
        break;
      case 'ino':
        info.ino = Number(val);
        break;
      case 'eventfd-count':
        info.eventfdCount = hexBig(val);
        break;
      case 'eventfd-id':
        info.eventfdId = Number(val);
        break;
      case 'eventfd-semaphore':
        info.eventfdSemaphore = val === '1';
        break;
      case 'sigmask':
        info.sigmask = hexBig(val);
        break;
      case 'clockid':
        info.timerfd = {
          clockid: Number(val),
          ticks: 0n,
          settimeFlags: 0,
          valueSec: 0n,
          valueNsec: 0n,
          intervalSec: 0n,
          intervalNsec: 0n,
        };
        break;
      case 'ticks':
        if (info.timerfd) info.timerfd.ticks = BigInt(val);
        break;
      case 'settime flags':
        if (info.timerfd) info.timerfd.settimeFlags = parseInt(val, 8);
        break;
      case 'it_value':
      case 'it_interval': {
        // "(0, 999999783)"
        const m = /\((-?\d+),\s*(-?\d+)\)/.exec(val);
        if (info.timerfd && m) {
          if (key === 'it_value') {
            info.timerfd.valueSec = BigInt(m[1]!);
            info.timerfd.valueNsec = BigInt(m[2]!);
          } else {
            info.timerfd.intervalSec = BigInt(m[1]!);
            info.timerfd.intervalNsec = BigInt(m[2]!);
          }
        }
        break;
      }
    }
  }
  return info;
}

export function readFdInfo(pid: number, fd: number): ProcFdInfo {
  return parseFdInfo(readProcText(pid, `fdinfo/${fd}`));
}

/** What /proc/PID/fd/N says: the link text and a stat of the open file itself (not of the path). */
export interface ProcFd {
  fd: number;
  link: string;
  stat: fs.BigIntStats;
}

export function readFd(pid: number, fd: number): ProcFd {
  const p = procPath(pid, `fd/${fd}`);
  try {
    return { fd, link: fs.readlinkSync(p, 'latin1'), stat: fs.statSync(p, { bigint: true }) };
  } catch (err) {
    throw toSysError(err, `inspect fd ${fd} of pid ${pid}`, pid);
  }
}
