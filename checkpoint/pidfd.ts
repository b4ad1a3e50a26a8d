/**
 * pidfds (anon_inode:[pidfd]): fdinfo names the process ("Pid:" as this /proc sees it, -1 once it is reaped;
 * "NSpid:" down to its innermost namespace) and the open flags (PIDFD_THREAD is O_EXCL, PIDFD_NONBLOCK O_NONBLOCK).
 * CRIU's pidfd_entry carries them; restore opens a new pidfd of the restored task. Only a task of the dumped tree
 * can be named again: another process's pid may mean someone else after restore, and a reaped one has none.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { describe, FD_TYPES, fown, O_CLOEXEC } from './filetable';

export async function dumpPidfd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const target = Number(info.raw.get('Pid') ?? NaN);
  const nspids = (info.raw.get('NSpid') ?? '').split(/\s+/).filter(Boolean).map(Number);
  const where = `pid ${pid} fd ${c.fd}: a pidfd`;
  if (!Number.isInteger(target)) throw new GodwitError(`${where}: its fdinfo names no Pid (kernel too old)`);
  if (target <= 0) throw new GodwitError(`${where} of a process that has exited and been reaped cannot be made again (not supported yet)`);
  const inTree = ctx.tree.processes.some((p) => p.threads.includes(target));
  if (!inTree)
    throw new GodwitError(`${where} of pid ${target}, which is outside the dumped tree: its pid may name another process after restore`);
  const flags = info.flags & ~O_CLOEXEC;
  const ino = fs.statSync(`/proc/${pid}/fd/${c.fd}`, { bigint: true }).ino;
  const key = await describe(ctx, pid, c.fd, `pidfd:${ino}:${target}:${flags}`);
  return ctx.files.add(key, (id) => ({
    type: FD_TYPES.PIDFD,
    id,
    // nspid: the pid in the target's own (innermost) namespace, the one its restored task has again.
    pidfd: { id, ino, flags, nspid: nspids.length ? nspids[nspids.length - 1] : target, fown: fown() },
  }));
}
