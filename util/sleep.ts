/** Blocks this thread for `ms` (for the short polls of synchronous checks, where awaiting would spread async). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
