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

export async function createEpoll(ctx: RestoreContext, id: number): Promise<number> {
  const b = new Batch();
  b.call('epoll_create1', [O_CLOEXEC], `create epoll ${id}`);
  const fd = Number((await runLocal(ctx.restorer!, b, `epoll ${id}`)).results[0]);
  ctx.restorerFds.push(fd);
  return fd;
}

/** After the task's fds are in place: the items of every epoll it is the first holder of. */
export async function fillEpolls(ctx: RestoreContext, t: TaskImage, filled: Set<number>): Promise<void> {
  const b = new Batch();
  for (const fdi of t.fds) {
    const f = ctx.set!.files.get(Number(fdi.id));
    const ep = f?.epfd as Msg | undefined;
    if (!ep || filled.has(Number(fdi.id))) continue;
    filled.add(Number(fdi.id));
    for (const tfd of (ep.tfd as Msg[] | undefined) ?? []) {
      const ev = Buffer.alloc(12); // struct epoll_event is packed on x86_64: u32 events, u64 data
      ev.writeUInt32LE(Number(tfd.events ?? 0) >>> 0, 0);
      ev.writeBigUInt64LE(BigInt.asUintN(64, BigInt((tfd.data as bigint | undefined) ?? 0n)), 4);
      b.call('epoll_ctl', [Number(fdi.fd), EPOLL_CTL_ADD, Number(tfd.tfd), b.data(ev)], `add fd ${tfd.tfd} to epoll fd ${fdi.fd}`);
    }
  }
  await runBatch(ctx.restorer!, t.pid, b);
}
