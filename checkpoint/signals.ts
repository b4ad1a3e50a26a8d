/**
 * Signal dispositions (read in the task by injected rt_sigaction, /proc cannot show handlers) as core
 * tc.sigactions, in CRIU's layout: one sa_entry per signal 1..64 except SIGKILL and SIGSTOP (62 entries).
 */
import type { SigAction } from '../native/helper';

export const NSIG = 64;
const SIGKILL = 9;
const SIGSTOP = 19;

/** The signal each sa_entry index stands for. */
export function sigactionSignals(): number[] {
  const out: number[] = [];
  for (let sig = 1; sig <= NSIG; sig++) if (sig !== SIGKILL && sig !== SIGSTOP) out.push(sig);
  return out;
}

export function buildSigactions(actions: SigAction[]): Record<string, unknown>[] {
  return sigactionSignals().map((sig) => {
    const a = actions.find((x) => x.sig === sig);
    return {
      sigaction: a?.handler ?? 0n,
      flags: a?.flags ?? 0n,
      restorer: a?.restorer ?? 0n,
      mask: a?.mask ?? 0n,
      compat_sigaction: false,
    };
  });
}
