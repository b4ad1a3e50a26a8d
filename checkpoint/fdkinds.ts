/**
 * What an open fd is, from /proc alone: the link text of /proc/PID/fd/N, a stat of the open file, and for
 * sockets the family (from the target's /proc/PID/net tables). Preflight uses this to refuse what cannot be
 * dumped before anything is frozen; files.ts uses it to pick the image entry kind.
 */
import * as fs from 'node:fs';
import { readFd, ProcFd } from './proc/fdinfo';
import { procPath } from './proc/read';

export type FdKind =
  | 'reg' // regular file, directory, or a memory char device (/dev/null, /dev/zero, /dev/urandom, ...)
  | 'fifo'
  | 'pipe'
  | 'unix'
  | 'inet' // TCP or UDP over IPv4 or IPv6 (checkpoint/inet.ts)
  | 'socket' // in no /proc/net table (an unbound TCP/UDP socket, or an exotic family): the helper tells which
  | 'eventfd'
  | 'eventpoll'
  | 'signalfd'
  | 'timerfd'
  | 'inotify'
  | 'memfd'
  | 'pidfd'
  | 'tty'
  | 'nsfile' // an fd on /proc/PID/ns/KIND (checkpoint/nsfiles.ts)
  | 'unsupported';

export interface FdClass {
  fd: number;
  kind: FdKind;
  /** For 'unsupported': what it is (e.g. "inet socket (tcp)", "tty /dev/pts/3", "io_uring"). */
  what: string;
  link: string;
  proc: ProcFd;
}

/** Char devices of the "mem" driver (major 1) that CRIU also dumps as plain files: they need no state. */
const MEM_MAJOR = 1;

const S_IFMT = 0o170000n;
const S_IFREG = 0o100000n;
const S_IFDIR = 0o040000n;
const S_IFCHR = 0o020000n;
const S_IFIFO = 0o010000n;
const S_IFSOCK = 0o140000n;

export function major(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}
export function minor(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

/** A device number in the kernel's internal layout (major << 20 | minor), as CRIU images store it. */
/** /dev/console (5:1) or a virtual terminal /dev/ttyN (4:0-63; 4:64 and up are serial ports). */
export function isConsoleOrVt(rdev: bigint): boolean {
  const maj = major(rdev);
  const min = minor(rdev);
  return (maj === 5 && min === 1) || (maj === 4 && min < 64);
}

export function kernelDev(dev: bigint): number {
  return ((major(dev) << 20) | minor(dev)) >>> 0;
}

/** The descriptions of the TCP, UDP and UDP-Lite tables: these sockets are dumped (checkpoint/inet.ts). */
export const INET_KINDS = new Set([
  'inet socket (tcp)',
  'inet6 socket (tcp6)',
  'inet socket (udp)',
  'inet6 socket (udp6)',
  'inet socket (udplite)',
  'inet6 socket (udplite6)',
]);

/** Socket inode -> a description, per network namespace tables of one pid (cached per dump). */
export class SocketTables {
  private cache = new Map<number, Map<number, string>>();
  /** inet socket inode -> kernel state (the `st` column of /proc/net/{tcp,udp}{,6}), per network namespace. */
  private states = new Map<number, Map<number, number>>();

  private load(pid: number, states: Map<number, number>): Map<number, string> {
    const m = new Map<number, string>();
    const tables: [string, number, string][] = [
      // file, column of the inode, description
      ['unix', 6, 'unix'],
      ['tcp', 9, 'inet socket (tcp)'],
      ['tcp6', 9, 'inet6 socket (tcp6)'],
      ['udp', 9, 'inet socket (udp)'],
      ['udp6', 9, 'inet6 socket (udp6)'],
      ['raw', 9, 'inet raw socket'],
      ['raw6', 9, 'inet6 raw socket'],
      ['udplite', 9, 'inet socket (udplite)'],
      ['udplite6', 9, 'inet6 socket (udplite6)'],
      ['netlink', 9, 'netlink socket'],
      ['packet', 8, 'packet socket'],
    ];
    for (const [file, col, what] of tables) {
      let text: string;
      try {
        text = fs.readFileSync(procPath(pid, `net/${file}`), 'latin1');
      } catch {
        continue;
      }
      for (const line of text.split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        const ino = Number(cols[col]);
        if (ino) m.set(ino, what);
        if (ino && INET_KINDS.has(what)) states.set(ino, parseInt(cols[3], 16));
      }
    }
    return m;
  }

  private tables(pid: number): { names: Map<number, string>; states: Map<number, number> } {
    let netns: number;
    try {
      netns = Number(/\[(\d+)\]/.exec(fs.readlinkSync(procPath(pid, 'ns/net')))?.[1] ?? 0);
    } catch {
      netns = -pid;
    }
    let t = this.cache.get(netns);
    let st = this.states.get(netns);
    if (!t || !st) {
      st = new Map();
      t = this.load(pid, st);
      this.cache.set(netns, t);
      this.states.set(netns, st);
    }
    return { names: t, states: st };
  }

  describe(pid: number, ino: number): string {
    return this.tables(pid).names.get(ino) ?? 'socket of an unknown family';
  }

  /** The kernel state of an inet socket as /proc/net shows it (TCP_ESTABLISHED = 1, ... TCP_LISTEN = 10). */
  inetState(pid: number, ino: number): number | undefined {
    return this.tables(pid).states.get(ino);
  }
}

export function classifyFd(pid: number, fd: number, sockets: SocketTables): FdClass {
  const proc = readFd(pid, fd);
  const link = proc.link;
  const mode = proc.stat.mode & S_IFMT;
  const out = (kind: FdKind, what = kind as string): FdClass => ({ fd, kind, what, link, proc });
  if (link.startsWith('pipe:[')) return out('pipe');
  if (link.startsWith('socket:[')) {
    const what = sockets.describe(pid, Number(proc.stat.ino));
    if (what === 'unix') return out('unix');
    if (what === 'socket of an unknown family') return out('socket', what);
    return INET_KINDS.has(what) ? out('inet', what) : out('unsupported', what);
  }
  if (link.startsWith('anon_inode:')) {
    const name = link.slice('anon_inode:'.length).replace(/^\[|\]$/g, '');
    switch (name) {
      case 'eventfd':
        return out('eventfd');
      case 'eventpoll':
        return out('eventpoll');
      case 'signalfd':
        return out('signalfd');
      case 'timerfd':
        return out('timerfd');
      case 'inotify':
        return out('inotify');
      case 'pidfd':
        return out('pidfd');
      default:
        return out('unsupported', name); // io_uring, userfaultfd, fanotify, perf_event, bpf-*, ...
    }
  }
  if (link.startsWith('/memfd:') && mode === S_IFREG) {
    // hugetlbfs memfds need huge pages at restore: not yet.
    return proc.stat.blksize > 4096n ? out('unsupported', `hugetlb memfd ${link}`) : out('memfd');
  }
  // nsfs inodes are regular files whose link is "KIND:[INODE]" (no path).
  if (mode === S_IFREG && /^[a-z]+:\[\d+\]$/.test(link)) return out('nsfile');
  if (mode === S_IFREG || mode === S_IFDIR) return out('reg');
  if (mode === S_IFIFO) return out('fifo');
  if (mode === S_IFCHR) {
    if (major(proc.stat.rdev) === MEM_MAJOR) return out('reg');
    const maj = major(proc.stat.rdev);
    // Unix98 ptys (/dev/ptmx masters, /dev/pts/N slaves): tty.ts; preflight checks that both ends are in the tree.
    // /dev/tty (5:0) too: it stands for the holder's controlling terminal, which preflight checks is such a pty.
    if ((maj === 5 && minor(proc.stat.rdev) <= 2 && minor(proc.stat.rdev) !== 1) || (maj >= 136 && maj <= 143))
      return out('tty', `pty ${link}`);
    // A console (5:1) or virtual terminal (4:0-63) is a device that outlives its users, its settings kept with it:
    // reopened by path like /dev/null (never as a controlling terminal: preflight refuses that one).
    if (isConsoleOrVt(proc.stat.rdev)) return out('reg');
    const isTty = maj === 4 || maj === 5 || maj === 136 || (maj >= 128 && maj < 144);
    return out('unsupported', `${isTty ? 'tty' : 'character device'} ${link}`);
  }
  if (mode === S_IFSOCK) return out('unsupported', `socket ${link}`);
  return out('unsupported', `${link} (file type 0${(mode >> 12n).toString(8)})`);
}
