/**
 * File locks (checkpoint/filelocks.ts), taken again once every task holds its fds: flock() on the fd for flock
 * locks, F_SETLK (POSIX, owned by the task) or F_OFD_SETLK (owned by the open file description) for record locks.
 * Non-blocking: a lock someone else took meanwhile is an error naming the task, fd and range.
 */
import { GodwitError } from '../util/errors';
import type { RestoreContext } from './context';
import { Msg, readEntries } from './image-files';
import { liveTasks } from './load';
import { Batch, runBatch } from './syscalls';

const FL_POSIX = 1;
const FL_FLOCK = 2;
const FL_OFD = 4;
const F_RDLCK = 0;
const F_WRLCK = 1;
const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const F_SETLK = 6;
const F_OFD_SETLK = 37;
const SEEK_SET = 0;

export function fileLockProblems(ctx: RestoreContext): string[] {
  const problems: string[] = [];
  const tasks = new Map(liveTasks(ctx.set!).map((t) => [t.pid, t]));
  for (const l of readEntries(ctx.set!.dir, 'filelocks.img') ?? []) {
    const t = tasks.get(Number(l.pid));
    const flag = Number(l.flag);
    if (![FL_POSIX, FL_FLOCK, FL_OFD].includes(flag) || ![F_RDLCK, F_WRLCK].includes(Number(l.type)))
      problems.push(`filelocks.img: lock of kind ${flag} type ${l.type} (pid ${l.pid} fd ${l.fd}) is not supported yet`);
    else if (!t || !t.fds.some((f) => Number(f.fd) === Number(l.fd)))
      problems.push(`filelocks.img: a lock held through pid ${l.pid} fd ${l.fd}, which the image has no such fd for`);
  }
  return problems;
}

export async function restoreFileLocks(ctx: RestoreContext): Promise<void> {
  const byPid = new Map<number, Msg[]>();
  for (const l of readEntries(ctx.set!.dir, 'filelocks.img') ?? []) {
    const list = byPid.get(Number(l.pid)) ?? [];
    list.push(l);
    byPid.set(Number(l.pid), list);
  }
  for (const [pid, locks] of byPid) {
    const b = new Batch();
    for (const l of locks) {
      const fd = Number(l.fd);
      const type = Number(l.type);
      const flag = Number(l.flag);
      const range = `${l.start}+${Number(l.len) === 0 ? 'EOF' : l.len}`;
      if (flag === FL_FLOCK) {
        b.call('flock', [fd, (type === F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB], `flock fd ${fd} (${type === F_WRLCK ? 'exclusive' : 'shared'})`);
      } else {
        const fl = Buffer.alloc(32);
        fl.writeInt16LE(type, 0);
        fl.writeInt16LE(SEEK_SET, 2);
        fl.writeBigInt64LE(BigInt(l.start as bigint), 8);
        fl.writeBigInt64LE(BigInt(l.len as bigint), 16);
        b.call('fcntl', [fd, flag === FL_OFD ? F_OFD_SETLK : F_SETLK, b.data(fl)], `${flag === FL_OFD ? 'OFD' : 'POSIX'} lock fd ${fd} bytes ${range}`);
      }
    }
    try {
      await runBatch(ctx.restorer!, pid, b);
    } catch (err) {
      throw new GodwitError(`task ${pid}: cannot take its file locks again (another process holds them now?)`, { cause: err });
    }
  }
}
