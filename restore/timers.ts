/** Interval timers (ITIMER_REAL/VIRTUAL/PROF). POSIX timers are refused by preflight until supported. */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { Batch } from './syscalls';

export function addTimerCalls(_ctx: RestoreContext, t: TaskImage, b: Batch): void {
  const timers = ((t.cores.get(t.pid)!.tc as Msg | undefined)?.timers as Msg | undefined) ?? {};
  (['real', 'virt', 'prof'] as const).forEach((name, which) => {
    const it = timers[name] as Msg | undefined;
    if (!it) return;
    const v = ['isec', 'iusec', 'vsec', 'vusec'].map((k) => BigInt((it[k] as bigint | undefined) ?? 0n));
    if (v.every((x) => x === 0n)) return;
    const buf = Buffer.alloc(32); // struct itimerval: interval {sec, usec}, value {sec, usec}
    v.forEach((x, i) => buf.writeBigInt64LE(x, 8 * i));
    // A zero value with a non-zero interval would disarm it: the timer was about to fire, so fire it soon.
    if (v[2] === 0n && v[3] === 0n) buf.writeBigInt64LE(1n, 24);
    b.call('setitimer', [which, b.data(buf), 0], `arm interval timer ${name}`);
  });
}

export function checkTimers(t: TaskImage): void {
  const timers = ((t.cores.get(t.pid)!.tc as Msg | undefined)?.timers as Msg | undefined) ?? {};
  const posix = (timers.posix as Msg[] | undefined) ?? [];
  if (posix.length)
    throw new GodwitError(`task ${t.pid} has ${posix.length} POSIX timer(s), which restore does not support yet`);
}
