/**
 * pidfds: made in the restorer once the whole tree (threads too) exists, with pidfd_open of the restored task
 * (dump only records pidfds of tasks of the tree, whose pids they keep). The restorer sees the tasks' pids as
 * they were: it is in their PID namespace (host), or that namespace's init (--new-pidns). Tasks pull the pidfd
 * like any file, so fds that shared one description share one again.
 * A pidfd of a reaped process (nspid -1) is a pidfd of a stand-in: a process started here (one per dumped
 * inode, so pidfds that named one process name one again), opened while it lives and ended once every pidfd
 * exists (endStandIns, before the tree resumes) the way the original ended, as far as the dump could tell
 * (exit_status: exit code or killing signal; the stand-in exits 0 without it).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { Batch, runLocal } from './syscalls';

const O_NONBLOCK = 0o4000; // PIDFD_NONBLOCK
const O_EXCL = 0o200; // PIDFD_THREAD (Linux 6.9+): a pidfd of one thread, not of its thread group

interface StandIn {
  child: ChildProcess;
  exitStatus?: number;
}

const standIns = new WeakMap<RestoreContext, Map<bigint, StandIn>>();

export async function createPidfd(ctx: RestoreContext, id: number, p: Msg): Promise<number> {
  const nspid = Number(p.nspid ?? 0);
  if (ctx.container?.record.ns.includes('pid'))
    throw new GodwitError(`pidfd ${id} (of pid ${nspid}): a container's PID namespace hides its tasks from the restorer, pidfds are not restored there yet`);
  if (nspid === -1) return openPidfd(ctx, id, standIn(ctx, id, p).child.pid!, p);
  if (nspid <= 0) throw new GodwitError(`pidfd ${id}: it names no live process (nspid ${nspid}), which cannot be made again`);
  return openPidfd(ctx, id, nspid, p);
}

async function openPidfd(ctx: RestoreContext, id: number, pid: number, p: Msg): Promise<number> {
  const b = new Batch();
  b.call('pidfd_open', [pid, Number(p.flags ?? 0) & (O_NONBLOCK | O_EXCL)], `open a pidfd of pid ${pid} (file ${id})`);
  const fd = Number((await runLocal(ctx.restorer!, b, `pidfd ${id}`)).results[0]);
  ctx.restorerFds.push(fd);
  return fd;
}

/** The stand-in of the reaped process pidfd P named, started on first use: it waits for its stdin to close. */
function standIn(ctx: RestoreContext, id: number, p: Msg): StandIn {
  // Started here, it lives in this process's PID namespace, which the restorer must share to open its pidfd.
  if (ctx.opts.newPidns) throw new GodwitError(`pidfd ${id} of a reaped process: restoring it into a new PID namespace is not supported yet`);
  let m = standIns.get(ctx);
  if (!m) standIns.set(ctx, (m = new Map()));
  const ino = BigInt((p.ino as bigint | undefined) ?? 0n);
  let s = m.get(ino);
  if (!s) {
    const status = p.exit_status === undefined ? undefined : Number(p.exit_status);
    const code = status === undefined || status & 0x7f ? 0 : (status >> 8) & 0xff;
    const child = spawn('/bin/sh', ['-c', `read _; exit ${code}`], { stdio: ['pipe', 'ignore', 'ignore'] });
    // A failed spawn emits 'error' on the next tick: reported here by the missing pid, not as an uncaught event.
    child.on('error', () => undefined);
    if (!child.pid) throw new GodwitError(`pidfd ${id} of a reaped process: could not start its stand-in (/bin/sh)`);
    m.set(ino, (s = { child, exitStatus: status }));
  }
  return s;
}

/** Ends every stand-in as its original ended and waits until it is reaped (its pidfds then report the exit). */
export async function endStandIns(ctx: RestoreContext): Promise<void> {
  const m = standIns.get(ctx);
  if (!m) return;
  standIns.delete(ctx);
  await Promise.all(
    [...m.values()].map(async (s) => {
      const exited = s.child.exitCode !== null || s.child.signalCode !== null ? Promise.resolve() : once(s.child, 'exit');
      const sig = (s.exitStatus ?? 0) & 0x7f;
      if (sig && sig !== 0x7f) s.child.kill(sig);
      else s.child.stdin!.end();
      await exited;
    }),
  );
}
