/**
 * pidfds: made in the restorer once the whole tree (threads too) exists, with pidfd_open of the restored task
 * (dump only records pidfds of tasks of the tree, whose pids they keep). The restorer sees the tasks' pids as
 * they were: it is in their PID namespace (host), or that namespace's init (--new-pidns). Tasks pull the pidfd
 * like any file, so fds that shared one description share one again.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { Batch, runLocal } from './syscalls';

const O_NONBLOCK = 0o4000; // PIDFD_NONBLOCK
const O_EXCL = 0o200; // PIDFD_THREAD (Linux 6.9+): a pidfd of one thread, not of its thread group

export async function createPidfd(ctx: RestoreContext, id: number, p: Msg): Promise<number> {
  const nspid = Number(p.nspid ?? 0);
  if (ctx.container?.record.ns.includes('pid'))
    throw new GodwitError(`pidfd ${id} (of pid ${nspid}): a container's PID namespace hides its tasks from the restorer, pidfds are not restored there yet`);
  if (nspid <= 0) throw new GodwitError(`pidfd ${id}: it names no live process (nspid ${nspid}), which cannot be made again`);
  const b = new Batch();
  b.call('pidfd_open', [nspid, Number(p.flags ?? 0) & (O_NONBLOCK | O_EXCL)], `open a pidfd of pid ${nspid} (file ${id})`);
  const fd = Number((await runLocal(ctx.restorer!, b, `pidfd ${id}`)).results[0]);
  ctx.restorerFds.push(fd);
  return fd;
}
