/**
 * process_vm_readv from Node's own threads (native/addon/readv.c, built into native/build/godwit.node): the
 * page readers copy a target's memory straight into the shared page buffer with up to 1024 ranges per system
 * call, instead of one pread of /proc/PID/mem per range (measured on 256 MiB at load 15: 1.5-1.8 GB/s against
 * 0.2-0.4 GB/s). Without the addon (no Node headers when it was built, or GODWIT_READV=0) the readers use pread.
 */
import { GodwitAddon, loadAddon } from '../native/addon';

export type ReadvAddon = Pick<GodwitAddon, 'readv'>;

/** The addon, or null when it is not built or turned off. */
export function readvAddon(): ReadvAddon | null {
  return process.env.GODWIT_READV === '0' ? null : loadAddon();
}
