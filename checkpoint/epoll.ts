/**
 * epoll: the registered targets (fdinfo tfd lines: fd number, events, data) inline in the eventpoll entry,
 * with dev/inode/pos as CRIU writes them, and holder_fd when the item's number is closed now. Targets must be
 * files held by fds of the same process.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

export async function dumpEpoll(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const holders = await findTargets(ctx, pid, c.fd, info);
  const flags = info.flags & ~O_CLOEXEC;
  return ctx.files.add(`epoll:${c.proc.stat.ino}:${pid}:${c.fd}`, (id) => ({
    type: FD_TYPES.EVENTPOLL,
    id,
    epfd: {
      id,
      flags,
      fown: fown(),
      tfd: info.epoll.map((t, i) => ({
        id,
        tfd: t.tfd,
        events: t.events,
        data: t.data,
        dev: t.sdev,
        inode: BigInt(t.ino),
        pos: t.pos,
        ...(holders[i] !== t.tfd ? { holder_fd: holders[i] } : {}),
      })),
    },
  }));
}

function statIno(pid: number, fd: number): bigint | undefined {
  try {
    return fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

/**
 * The fd of `pid` that holds each item's file (kcmp KCMP_EPOLL_TFD asks the kernel). An epoll item is keyed by
 * (file, fd number at EPOLL_CTL_ADD) and stays registered under that number after the fd is closed, as long as
 * the file is open elsewhere (zdtm epoll, epoll01): restore adds items by fd number in the task, so such an item
 * is added by dup()ing its holder to the number for the call (`holder_fd`), the number's own file (if it holds
 * another one now) set aside meanwhile. Refused by name before anything is killed: an item whose file no fd of
 * the task holds (it lives on only in another process, or in epolls only).
 */
async function findTargets(ctx: CollectContext, pid: number, epfd: number, info: ProcFdInfo): Promise<number[]> {
  let byIno: Map<bigint, number[]> | undefined;
  const count = new Map<number, number>();
  const out: number[] = [];
  for (const t of info.epoll) {
    const toff = count.get(t.tfd) ?? 0; // items under one number are numbered in fdinfo (tree) order, as kcmp counts
    count.set(t.tfd, toff + 1);
    const fail = (why: string) =>
      new GodwitError(
        `pid ${pid} fd ${epfd}: epoll watches a file under fd number ${t.tfd}, which ${why}: restore adds epoll items by fd number, such an item cannot be made again (not supported yet)`,
      );
    if (statIno(pid, t.tfd) === BigInt(t.ino) && (await ctx.helper.epollTarget(pid, t.tfd, epfd, t.tfd, toff))) {
      out.push(t.tfd);
      continue;
    }
    if (!byIno) {
      byIno = new Map();
      for (const name of fs.readdirSync(`/proc/${pid}/fd`)) {
        const i = statIno(pid, Number(name));
        if (i !== undefined) byIno.set(i, [...(byIno.get(i) ?? []), Number(name)]);
      }
    }
    let holder: number | undefined;
    for (const fd of byIno.get(BigInt(t.ino)) ?? [])
      if (await ctx.helper.epollTarget(pid, fd, epfd, t.tfd, toff)) {
        holder = fd;
        break;
      }
    if (holder === undefined)
      throw fail(
        `${statIno(pid, t.tfd) === undefined ? 'is closed now' : 'holds another file now'}, and no fd of the process holds the watched file`,
      );
    out.push(holder);
  }
  return out;
}
