/**
 * epoll: the registered targets (fdinfo tfd lines: fd number, events, data) inline in the eventpoll entry,
 * with dev/inode/pos so restore can tell dup()ed fds apart. Targets must be fds of the same process that
 * godwit also dumps; preflight checks that they exist.
 */
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

export function dumpEpoll(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
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
