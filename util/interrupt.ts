/**
 * Ctrl-C (SIGINT) and SIGTERM for the commands that change processes (dump, restore, migrate, send). listr2's own
 * SIGINT handler exits on the spot, which would leave a tree frozen or half-restored and images half-written: the
 * lists run without it (registerSignalListeners: false) and the signal becomes an AbortSignal that the operation
 * turns into its clean-up.
 */
import { GodwitError } from './errors';

export interface Interrupt {
  /** Aborted (reason: the signal's name) on the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Back to the default handling of both signals (idempotent). */
  release(): void;
}

/** Catches SIGINT and SIGTERM until release(). */
export function catchInterrupt(): Interrupt {
  const ac = new AbortController();
  const on = (sig: NodeJS.Signals) => ac.abort(sig);
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return {
    signal: ac.signal,
    release() {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
    },
  };
}

/**
 * The error of an operation stopped by `signal` at `where` (e.g. 'before "dump pages"'), code EABORTED; `cause`: the
 * failure the stop brought about, if any (a step cut short).
 */
export function interruptedError(signal: AbortSignal, where: string, cause?: unknown): GodwitError {
  if (cause instanceof GodwitError && cause.code === 'EABORTED') return cause;
  const by = typeof signal.reason === 'string' ? signal.reason : 'a signal';
  return new GodwitError(`interrupted (${by}) ${where}`, { code: 'EABORTED', ...(cause !== undefined ? { cause } : {}) });
}
