/**
 * File locks (filelocks.img, CRIU's file_lock_entry): flock() locks, POSIX record locks and OFD locks held on the
 * tree's open files, read from the "lock:" lines of /proc/PID/fdinfo/N (the kernel lists there the flock and OFD
 * locks of that open file description and the POSIX locks the process owns on that inode). Each lock is written
 * once with the pid and fd that restore takes it again through. Leases and delegations are refused; a task
 * blocked waiting for a lock ("->" lines) simply waits again after restore (its fcntl/flock call restarts).
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { readProcText } from './proc/read';

// CRIU's file_lock_entry values (criu/include/file-lock.h).
export const FL_POSIX = 1;
export const FL_FLOCK = 2;
export const FL_OFD = 4;
const F_RDLCK = 0;
const F_WRLCK = 1;

// "lock:\t1: POSIX  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
const LOCK_LINE = /^lock:\s+\d+:\s+(->\s+)?(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\S+)/;

const seen = new WeakMap<CollectContext, Set<string>>();

/** Adds the locks fd `fd` of `pid` carries to filelocks.img. `descKey` names its open file description. */
export function dumpFileLocks(ctx: CollectContext, pid: number, fd: number, descKey: string): void {
  let text: string;
  try {
    text = readProcText(pid, `fdinfo/${fd}`);
  } catch {
    return; // closed meanwhile cannot happen while frozen; a vanished fd has no locks to carry
  }
  let done = seen.get(ctx);
  if (!done) seen.set(ctx, (done = new Set()));
  for (const line of text.split('\n')) {
    if (!line.startsWith('lock:')) continue;
    const m = LOCK_LINE.exec(line);
    if (!m) throw new GodwitError(`pid ${pid} fd ${fd}: cannot parse the lock line "${line}" of /proc/${pid}/fdinfo/${fd}`);
    if (m[1]) continue; // a waiter, not a holder
    const kind = m[2];
    const type = m[4] === 'READ' ? F_RDLCK : m[4] === 'WRITE' ? F_WRLCK : -1;
    if (type < 0) throw new GodwitError(`pid ${pid} fd ${fd}: lock of type ${m[4]} (${kind}) cannot be checkpointed yet`);
    const start = BigInt(m[9]);
    const len = m[10] === 'EOF' ? 0n : BigInt(m[10]) - start + 1n;
    let flag: number;
    let key: string;
    if (kind === 'FLOCK') {
      flag = FL_FLOCK;
      key = `flock:${descKey}`;
    } else if (kind === 'OFDLCK') {
      flag = FL_OFD;
      key = `ofd:${descKey}:${start}:${len}`;
    } else if (kind === 'POSIX') {
      flag = FL_POSIX;
      key = `posix:${pid}:${m[8]}:${start}:${len}`;
    } else {
      throw new GodwitError(`pid ${pid} fd ${fd}: a ${kind} (${m[3]}) cannot be checkpointed yet`);
    }
    if (done.has(key)) continue;
    done.add(key);
    ctx.images.add('FILE_LOCKS', undefined, { flag, type, pid, fd, start, len });
  }
}
