/**
 * pidfds (anon_inode:[pidfd]): fdinfo names the process ("Pid:" as this /proc sees it, -1 once it is reaped;
 * "NSpid:" down to its innermost namespace) and the open flags (PIDFD_THREAD is O_EXCL, PIDFD_NONBLOCK O_NONBLOCK).
 * CRIU's pidfd_entry carries them; restore opens a new pidfd of the restored task. Only a task of the dumped tree
 * can be named again: another process's pid may mean someone else after restore. A pidfd of a reaped process
 * (Pid: -1) is kept with nspid -1, its inode (pidfds of one process share it) and the wait status the kernel kept
 * (PIDFD_GET_INFO with PIDFD_INFO_EXIT); restore makes a stand-in process end the same way (restore/pidfd.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
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
  if (target <= 0) return dumpDeadPidfd(ctx, pid, c, info);
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

/** PIDFD_GET_INFO: _IOWR(0xFF, 11, struct pidfd_info), its first (64-byte) version; exit_code is its last field. */
const PIDFD_GET_INFO = 0xc040ff0b;
const PIDFD_INFO_EXIT = 1 << 3;
const PIDFD_INFO_SIZE = 64;

async function dumpDeadPidfd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  let exitStatus: number | undefined;
  try {
    const r = await ctx.helper.fdQuery({ pid, fd: c.fd, kind: 'ioctl', cmd: PIDFD_GET_INFO, arg: PIDFD_INFO_EXIT, argLen: PIDFD_INFO_SIZE });
    if (Number(r.data.readBigUInt64LE(0) & BigInt(PIDFD_INFO_EXIT))) exitStatus = r.data.readInt32LE(PIDFD_INFO_SIZE - 4);
  } catch (err) {
    // Before Linux 6.13 (no PIDFD_GET_INFO: ENOTTY) or without exit information: the stand-in just exits 0.
    const errno = (err as { errno?: number }).errno;
    const { ENOTTY, EINVAL, ESRCH } = os.constants.errno;
    if (errno !== ENOTTY && errno !== EINVAL && errno !== ESRCH) throw err;
  }
  const flags = info.flags & ~O_CLOEXEC;
  const ino = fs.statSync(`/proc/${pid}/fd/${c.fd}`, { bigint: true }).ino;
  const key = await describe(ctx, pid, c.fd, `pidfd:${ino}:dead:${flags}`);
  return ctx.files.add(key, (id) => ({
    type: FD_TYPES.PIDFD,
    id,
    pidfd: { id, ino, flags, nspid: -1, fown: fown(), ...(exitStatus === undefined ? {} : { exit_status: exitStatus }) },
  }));
}
