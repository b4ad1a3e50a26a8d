/**
 * timerfd: clock, expirations not yet read (ticks), settime flags and the remaining time as fdinfo shows it
 * (it_value is relative to now, which is what restore re-arms with).
 */
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

export function dumpTimerfd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
  const flags = info.flags & ~O_CLOEXEC;
  const t = info.timerfd;
  return ctx.files.add(`timerfd:${c.proc.stat.ino}:${pid}:${c.fd}`, (id) => ({
    type: FD_TYPES.TIMERFD,
    id,
    tfd: {
      id,
      flags,
      fown: fown(),
      clockid: t?.clockid ?? 0,
      ticks: t?.ticks ?? 0n,
      settime_flags: t?.settimeFlags ?? 0,
      vsec: t?.valueSec ?? 0n,
      vnsec: t?.valueNsec ?? 0n,
      isec: t?.intervalSec ?? 0n,
      insec: t?.intervalNsec ?? 0n,
    },
  }));
}
