/** signalfd: its signal mask (fdinfo sigmask). */
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

export function dumpSignalfd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
  const flags = info.flags & ~O_CLOEXEC;
  return ctx.files.add(`signalfd:${c.proc.stat.ino}:${pid}:${c.fd}`, (id) => ({
    type: FD_TYPES.SIGNALFD,
    id,
    sgfd: { id, flags, fown: fown(), sigmask: info.sigmask ?? 0n },
  }));
}
