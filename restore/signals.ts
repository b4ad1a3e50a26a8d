/** Signal dispositions and process-wide pending signals (per-thread ones are in threads.ts). */
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { Batch } from './syscalls';

/**
 * Which signal each sigactions entry is for. CRIU writes 62 entries, signals 1..64 without SIGKILL and SIGSTOP;
 * a 64-entry list (as some dumpers write) is indexed by signal - 1.
 */
export function sigactionSignals(count = 62): number[] {
  const out: number[] = [];
  for (let s = 1; s <= 64; s++) if (count >= 64 || (s !== 9 && s !== 19)) out.push(s);
  return out;
}

/** Adds the task-wide signal state to a batch run in the main thread. Stubs start with every action default. */
export function addSignalCalls(_ctx: RestoreContext, t: TaskImage, b: Batch): void {
  const tc = (t.cores.get(t.pid)!.tc as Msg | undefined) ?? {};
  const sas = (tc.sigactions as Msg[] | undefined) ?? [];
  const sigs = sigactionSignals(sas.length);
  sas.forEach((sa, i) => {
    if (sigs[i] === 9 || sigs[i] === 19 || sigs[i] === undefined) return;
    const handler = BigInt((sa.sigaction as bigint | undefined) ?? 0n);
    const flags = BigInt((sa.flags as bigint | undefined) ?? 0n);
    const mask = BigInt((sa.mask as bigint | undefined) ?? 0n);
    if (handler === 0n && flags === 0n && mask === 0n) return;
    const k = Buffer.alloc(32); // struct kernel_sigaction on x86_64: handler, flags, restorer, mask
    k.writeBigUInt64LE(handler, 0);
    k.writeBigUInt64LE(flags, 8);
    k.writeBigUInt64LE(BigInt((sa.restorer as bigint | undefined) ?? 0n), 16);
    k.writeBigUInt64LE(mask, 24);
    b.call('rt_sigaction', [sigs[i], b.data(k), 0, 8], `set the action of signal ${sigs[i]}`);
  });
  for (const s of ((tc.signals_s as Msg | undefined)?.signals as Msg[] | undefined) ?? []) {
    const info = s.siginfo as Buffer;
    b.call('rt_sigqueueinfo', [t.pid, info.readInt32LE(0), b.data(info)], `queue pending signal ${info.readInt32LE(0)}`);
  }
}
