/**
 * process_vm_readv from Node's own threads (native/addon/readv.c, built as native/build/godwit-readv.node): the
 * page readers copy a target's memory straight into the shared page buffer with up to 1024 ranges per system
 * call, instead of one pread of /proc/PID/mem per range (measured on 256 MiB at load 15: 1.5-1.8 GB/s against
 * 0.2-0.4 GB/s). Without the addon (no Node headers when it was built, or GODWIT_READV=0) the readers use pread.
 */
import * as path from 'node:path';

export interface ReadvAddon {
  /** Reads (address, length, offset in dst) triples; returns the bytes read. Throws Error with errno, syscall, addr. */
  readv(pid: number, dst: Uint8Array, pieces: Float64Array): number;
}

export const READV_ADDON = path.resolve(__dirname, '..', '..', 'native', 'build', 'godwit-readv.node');

let loaded: ReadvAddon | null | undefined;

/** The addon, or null when it is not built or turned off. Loaded once per thread. */
export function readvAddon(): ReadvAddon | null {
  if (loaded !== undefined) return loaded;
  if (process.env.GODWIT_READV === '0') return (loaded = null);
  try {
    loaded = require(READV_ADDON) as ReadvAddon;
  } catch {
    loaded = null;
  }
  return loaded;
}
