/**
 * Signal dispositions (read in the task by injected rt_sigaction, /proc cannot show handlers) as the 64
 * sa_entry of core tc.sigactions: index i is signal i + 1; SIGKILL and SIGSTOP stay default.
 */
import type { SigAction } from './helperapi';

export const NSIG = 64;

export function buildSigactions(actions: SigAction[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (let sig = 1; sig <= NSIG; sig++) {
    const a = actions.find((x) => x.sig === sig);
    out.push({
      sigaction: a?.handler ?? 0n,
      flags: a?.flags ?? 0n,
      restorer: a?.restorer ?? 0n,
      mask: a?.mask ?? 0n,
      compat_sigaction: false,
    });
  }
  return out;
}
