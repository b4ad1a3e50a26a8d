/**
 * Interval timers (getitimer, injected) and POSIX timers: /proc/PID/timers gives id, clock, signal and
 * notification; the helper's injected timer_gettime/timer_getoverrun give the remaining time and interval.
 */
import type { ProcessState } from './helperapi';
import type { ProcPosixTimer } from './proc/misc';

const ITIMER_REAL = 0;
const ITIMER_VIRTUAL = 1;
const ITIMER_PROF = 2;

function itimer(state: ProcessState, which: number): Record<string, unknown> {
  const t = state.itimers.find((x) => x.which === which);
  return {
    isec: t?.intervalSec ?? 0n,
    iusec: t?.intervalUsec ?? 0n,
    vsec: t?.valueSec ?? 0n,
    vusec: t?.valueUsec ?? 0n,
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
        isec: s?.intervalSec ?? 0n,
        insec: s?.intervalNsec ?? 0n,
        vsec: s?.valueSec ?? 0n,
        vnsec: s?.valueNsec ?? 0n,
      };
      if (p.notify & 4) e.notify_thread_id = p.notifyTid;
      return e;
    });
  }
  return timers;
}
