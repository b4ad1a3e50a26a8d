/** eventfd: the counter (fdinfo eventfd-count) and flags (EFD_SEMAPHORE shows as eventfd-semaphore). */
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

const EFD_SEMAPHORE = 1;

export function dumpEventfd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
  const flags = (info.flags & ~O_CLOEXEC) | (info.eventfdSemaphore ? EFD_SEMAPHORE : 0);
  const counter = info.eventfdCount ?? 0n;
  return ctx.files.add(info.eventfdId !== undefined ? `eventfd:id:${info.eventfdId}` : `eventfd:${pid}:${c.fd}`, (id) => ({
    type: FD_TYPES.EVENTFD,
    id,
    efd: { id, flags, fown: fown(), counter },
  }));
}
