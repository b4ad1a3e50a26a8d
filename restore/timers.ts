/** Interval timers (ITIMER_REAL/VIRTUAL/PROF). POSIX timers are refused by preflight until supported. */
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

const PR_TIMER_CREATE_RESTORE_IDS = 77;
const SIGEV_NONE = 1;
const SIGEV_THREAD_ID = 4;

/**
 * POSIX timers with their ids: in PR_TIMER_CREATE_RESTORE_IDS mode timer_create takes the id from *timerid
 * (Linux 6.17+); then armed with the time that was left and the interval.
 *
 * A SIGEV_THREAD_ID timer outlives the thread it signals: the kernel keeps the dead thread's struct pid, /proc
 * still names its tid, and on expiry it finds no task there and sends nothing. timer_create cannot name a dead
 * thread (EINVAL), so such a timer is made SIGEV_NONE: it never signals either, and timer_gettime,
 * timer_settime and timer_getoverrun keep working on its id (zdtm dead_thread_posix_timer). Retargeting it at
 * the leader instead would deliver signals the process never got before.
 */
export function addPosixTimerCalls(_ctx: RestoreContext, t: TaskImage, b: Batch): void {
  const timers = ((t.cores.get(t.pid)!.tc as Msg | undefined)?.timers as Msg | undefined) ?? {};
  const posix = (timers.posix as Msg[] | undefined) ?? [];
  if (!posix.length) return;
  b.call('prctl', [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0], 'let timer_create take the dumped timer ids');
  for (const p of posix) {
    const id = Number(p.it_id ?? 0);
    const sev = Buffer.alloc(64); // struct sigevent: value, signo, notify, then the thread id for SIGEV_THREAD_ID
    sev.writeBigUInt64LE(BigInt.asUintN(64, BigInt((p.sival_ptr as bigint | undefined) ?? 0n)), 0);
    sev.writeInt32LE(Number(p.si_signo ?? 0), 8);
    let notify = Number(p.it_sigev_notify ?? 0);
    const tid = Number(p.notify_thread_id ?? 0);
    if ((notify & SIGEV_THREAD_ID) !== 0 && !t.threads.includes(tid)) notify = SIGEV_NONE;
    sev.writeInt32LE(notify, 12);
    if ((notify & SIGEV_THREAD_ID) !== 0) sev.writeInt32LE(tid, 16);
    const idBuf = Buffer.alloc(4);
    idBuf.writeInt32LE(id, 0);
    b.call('timer_create', [Number(p.clock_id ?? 0), b.data(sev), b.data(idBuf)], `create POSIX timer ${id}`);
    const v = ['isec', 'insec', 'vsec', 'vnsec'].map((k) => BigInt((p[k] as bigint | undefined) ?? 0n));
    if (v.some((x) => x !== 0n)) {
      if (v[2] === 0n && v[3] === 0n) v[3] = 1n; // due: fire now rather than disarm
      const its = Buffer.alloc(32);
      v.forEach((x, i) => its.writeBigInt64LE(x, 8 * i));
      b.call('timer_settime', [id, 0, b.data(its), 0], `arm POSIX timer ${id}`);
    }
  }
  b.call('prctl', [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0], 'back to normal timer ids');
}
