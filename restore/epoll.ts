/**
 * epoll: the instance is made in the restorer like any file object, but its interest list must be filled in
 * a task that holds it, because an epoll item is keyed by the fd number in that task (the dumped tfd).
 */
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { Batch, runBatch, runLocal } from './syscalls';

const O_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const F_DUPFD_CLOEXEC = 1030;
const FD_CLOEXEC = 1;

export async function createEpoll(ctx: RestoreContext, id: number): Promise<number> {
  const b = new Batch();
  b.call('epoll_create1', [O_CLOEXEC], `create epoll ${id}`);
  const fd = Number((await runLocal(ctx.restorer!, b, `epoll ${id}`)).results[0]);
  ctx.restorerFds.push(fd);
  return fd;
}

/**
 * After the task's fds are in place: the items of every epoll it is the first holder of. An item whose fd number
 * was closed or reused before the dump (holder_fd: its file lives on under that fd) is added through a dup of the
 * holder at the number, closed again at once: the item keeps the number it was added with.
 */
export async function fillEpolls(ctx: RestoreContext, t: TaskImage, filled: Set<number>): Promise<void> {
  const b = new Batch();
  const open = new Map(t.fds.map((x) => [Number(x.fd), x]));
  for (const fdi of t.fds) {
    const f = ctx.set!.files.get(Number(fdi.id));
    const ep = f?.epfd as Msg | undefined;
    if (!ep || filled.has(Number(fdi.id))) continue;
    filled.add(Number(fdi.id));
    for (const tfd of (ep.tfd as Msg[] | undefined) ?? []) {
      const ev = Buffer.alloc(12); // struct epoll_event is packed on x86_64: u32 events, u64 data
      ev.writeUInt32LE(Number(tfd.events ?? 0) >>> 0, 0);
      ev.writeBigUInt64LE(BigInt.asUintN(64, BigInt((tfd.data as bigint | undefined) ?? 0n)), 4);
      const num = Number(tfd.tfd);
      const holder = tfd.holder_fd as number | undefined;
      // The number's own fd (another file now, zdtm epoll01) waits at a free number meanwhile, then comes back with
      // its close-on-exec flag: dup3 keeps its open file description. No file locks are set yet (closes drop them).
      const own = open.get(num);
      const saved = holder !== undefined && own ? b.call('fcntl', [num, F_DUPFD_CLOEXEC, 0], `set fd ${num} aside`) : undefined;
      if (holder !== undefined) b.call('dup3', [Number(holder), num, O_CLOEXEC], `lend fd ${holder} the number ${num} of an epoll item`);
      b.call('epoll_ctl', [Number(fdi.fd), EPOLL_CTL_ADD, num, b.data(ev)], `add fd ${num} to epoll fd ${fdi.fd}`);
      if (saved !== undefined) {
        b.call('dup3', [saved, num, Number(own!.flags ?? 0) & FD_CLOEXEC ? O_CLOEXEC : 0], `put fd ${num} back`);
        b.call('close', [saved], `close the set-aside copy of fd ${num}`);
      } else if (holder !== undefined) b.call('close', [num], `close the lent fd ${num}`);
    }
  }
  await runBatch(ctx.restorer!, t.pid, b);
}
