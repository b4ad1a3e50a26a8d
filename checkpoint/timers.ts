/**
 * Interval timers (getitimer, injected) and POSIX timers: /proc/PID/timers gives id, clock, signal and
 * notification; the helper's injected timer_gettime/timer_getoverrun give the remaining time and interval.
 */
import type { ProcessState } from '../native/helper';
import type { ProcPosixTimer } from './proc/misc';

const ITIMER_REAL = 0;
const ITIMER_VIRTUAL = 1;
const ITIMER_PROF = 2;

function itimer(state: ProcessState, which: number): Record<string, unknown> {
  const t = state.itimers.find((x) => x.which === which);
  return {
    isec: t?.interval.sec ?? 0n,
    iusec: t?.interval.usec ?? 0n,
    vsec: t?.value.sec ?? 0n,
    vusec: t?.value.usec ?? 0n,
  };
}

export function buildTimers(state: ProcessState, posix: ProcPosixTimer[]): Record<string, unknown> {
  const timers: Record<string, unknown> = {
    real: itimer(state, ITIMER_REAL),
    virt: itimer(state, ITIMER_VIRTUAL),
    prof: itimer(state, ITIMER_PROF),
  };
  if (posix.length) {
    timers.posix = posix.map((p) => {
      const s = state.posixTimers.find((x) => x.id === p.id);
      const e: Record<string, unknown> = {
        it_id: p.id,
        clock_id: p.clockId,
        si_signo: p.signo,
        it_sigev_notify: p.notify,
        sival_ptr: p.sigval,
        overrun: s?.overrun ?? 0,
        isec: s?.interval.sec ?? 0n,
        insec: s?.interval.nsec ?? 0n,
        vsec: s?.value.sec ?? 0n,
        vnsec: s?.value.nsec ?? 0n,
      };
      if (p.notify & 4) e.notify_thread_id = p.notifyTid;
      return e;
    });
  }
  return timers;
}
