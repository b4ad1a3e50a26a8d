/**
 * epoll: the registered targets (fdinfo tfd lines: fd number, events, data) inline in the eventpoll entry,
 * with dev/inode/pos so restore can tell dup()ed fds apart. Targets must be fds of the same process that
 * godwit also dumps; preflight checks that they exist.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

export function dumpEpoll(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
  refuseStaleTargets(pid, c.fd, info);
  const flags = info.flags & ~O_CLOEXEC;
  return ctx.files.add(`epoll:${c.proc.stat.ino}:${pid}:${c.fd}`, (id) => ({
    type: FD_TYPES.EVENTPOLL,
    id,
    epfd: {
      id,
      flags,
      fown: fown(),
      tfd: info.epoll.map((t) => ({
        id,
        tfd: t.tfd,
        events: t.events,
        data: t.data,
        dev: t.sdev,
        inode: BigInt(t.ino),
        pos: t.pos,
      })),
    },
  }));
}

/**
 * An epoll item stays registered under the fd number it was added with after that fd is closed, as long as
 * the file is open elsewhere (zdtm epoll01): restore adds items by fd number in the task, so an item whose
 * number is closed now, or holds another file, or is registered twice, cannot be made again. Refused by name
 * before anything is killed (restore would fail with EBADF or EEXIST after the tree is gone).
 */
function refuseStaleTargets(pid: number, epfd: number, info: ProcFdInfo): void {
  const seen = new Set<number>();
  for (const t of info.epoll) {
    let ino: bigint | undefined;
    try {
      ino = fs.statSync(`/proc/${pid}/fd/${t.tfd}`, { bigint: true }).ino;
    } catch {
      ino = undefined;
    }
    const why = seen.has(t.tfd)
      ? 'is registered twice (the first file under that number was closed, another one added under it)'
      : ino === undefined
        ? 'is closed now (the watched file lives on under another fd)'
        : ino !== BigInt(t.ino)
          ? `holds another file now (inode ${ino}, the watched one is ${t.ino})`
          : undefined;
    seen.add(t.tfd);
    if (why)
      throw new GodwitError(
        `pid ${pid} fd ${epfd}: epoll watches a file under fd number ${t.tfd}, which ${why}: restore adds epoll items by fd number, such an item cannot be made again (not supported yet)`,
      );
  }
}
