/** Resource limits (set from outside with prlimit) and credentials (last, per thread, so nothing needs root after). */
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { Op, RestorerError } from './restorer';
import { Batch } from './syscalls';

export interface Warning {
  pid: number;
  message: string;
}

const RLIMIT_NAMES = ['CPU', 'FSIZE', 'DATA', 'STACK', 'CORE', 'RSS', 'NPROC', 'NOFILE', 'MEMLOCK', 'AS', 'LOCKS',
  'SIGPENDING', 'MSGQUEUE', 'NICE', 'RTPRIO', 'RTTIME'];

export async function restoreRlimits(ctx: RestoreContext, t: TaskImage, warnings: Warning[]): Promise<void> {
  const rl = (((t.cores.get(t.pid)!.tc as Msg | undefined)?.rlimits as Msg | undefined)?.rlimits as Msg[] | undefined) ?? [];
  for (let i = 0; i < rl.length && i < RLIMIT_NAMES.length; i++) {
    const b = Buffer.alloc(24);
    b.writeInt32LE(t.pid, 0);
    b.writeUInt32LE(i, 4);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt((rl[i].cur as bigint | undefined) ?? 0n)), 8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt((rl[i].max as bigint | undefined) ?? 0n)), 16);
    try {
      await ctx.restorer!.request(Op.PRLIMIT, b, `set RLIMIT_${RLIMIT_NAMES[i]} of ${t.pid}`);
    } catch (e) {
      // Without CAP_SYS_RESOURCE a hard limit cannot be raised above ours: keep ours and say so.
      if (e instanceof RestorerError && e.errno === 1)
        warnings.push({ pid: t.pid, message: `RLIMIT_${RLIMIT_NAMES[i]} kept at this host's value (raising it needs CAP_SYS_RESOURCE)` });
      else throw e;
    }
  }
}

/** Credentials differ from the restorer's (root, full caps)? Then switch, per thread. */
export function addCredCalls(t: TaskImage, tid: number, b: Batch): void {
  const creds = ((t.cores.get(tid)!.thread_core as Msg | undefined)?.creds as Msg | undefined) ?? null;
  if (!creds) return;
  const ids = ['uid', 'gid', 'euid', 'egid', 'suid', 'sgid'].map((k) => Number(creds[k] ?? 0));
  if (ids.every((x) => x === 0)) return;
  const groups = ((creds.groups as number[] | undefined) ?? []).map(Number);
  const g = Buffer.alloc(4 * Math.max(groups.length, 1));
  groups.forEach((x, i) => g.writeUInt32LE(x >>> 0, 4 * i));
  b.call('setgroups', [groups.length, b.data(g)], 'set supplementary groups');
  b.call('setresgid', [ids[1], ids[3], ids[5]], 'set gids');
  b.call('setresuid', [ids[0], ids[2], ids[4]], 'set uids');
}
