/**
 * godwit's Node-API addon (native/addon/, built by `make -C native` as native/build/godwit.node when Node's headers
 * are there): process_vm_readv for the page readers (checkpoint/readv.ts), fcntl's pipe size for the receiving end
 * of a stream (transport/pipe-size.ts), buffer alignment for its O_DIRECT writes (transport/direct-appender.ts) and
 * a folding crc32 for the stream's frames (images/crc32.ts). Its own module so that `godwit receive` does not load
 * the checkpoint code to find it.
 */
import * as path from 'node:path';

export interface GodwitAddon {
  /** Reads (address, length, offset in dst) triples; returns the bytes read. Throws Error with errno, syscall, addr. */
  readv(pid: number, dst: Uint8Array, pieces: Float64Array): number;
  /** F_SETPIPE_SZ (when bytes is given), then F_GETPIPE_SZ. Throws Error with errno and syscall. */
  pipeSize(fd: number, bytes?: number): number;
  /** Bytes to skip from view's start to an address that is a multiple of align (a power of two). */
  alignOffset(view: Uint8Array, align: number): number;
  /** zlib.crc32(view, previous) by carry-less multiplication; absent when the CPU has no PCLMULQDQ. */
  crc32?(view: Uint8Array, previous?: number): number;
}

export const ADDON_PATH = path.resolve(__dirname, '..', '..', 'native', 'build', 'godwit.node');

let loaded: GodwitAddon | null | undefined;

/** The addon, or null when it is not built. Loaded once per thread. */
export function loadAddon(): GodwitAddon | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = require(ADDON_PATH) as GodwitAddon;
  } catch {
    loaded = null;
  }
  return loaded;
}
