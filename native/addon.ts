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
  /** setsockopt(TCP_QUICKACK) on a TCP socket: a delayed ACK goes out now. Throws Error with errno and syscall. */
  tcpQuickAck?(fd: number): void;
  /** src stored as a zstd frame of raw blocks in dst (at least src.length + 9 + 3 per 128 KiB); returns its bytes.
   *  Throws ENOBUFS if dst is too small. */
  zstdRawFrame(dst: Uint8Array, src: Uint8Array): number;
  /** src as a zstd frame of RLE blocks in dst when each of its 4 KiB pages is one byte repeated; its bytes, or 0 (what
   *  it wrote into dst is then no frame) at the first page that is not. Throws ENOBUFS if dst is smaller than the largest such frame:
   *  9 bytes, and 4 per page, per 128 KiB and one more. */
  zstdUniformFrame?(dst: Uint8Array, src: Uint8Array): number;
  /** zlib.crc32(view, previous) by carry-less multiplication; absent when the CPU has no PCLMULQDQ. */
  crc32?(view: Uint8Array, previous?: number): number;
  /** pread()s into buffer from position until it is full or the file ends, and hashes what it read (crc32), in
   *  libuv's threadpool; absent with crc32. Rejects with an Error with code, errno and syscall. */
  readCrc?(fd: number, buffer: Uint8Array, position: number): Promise<{ bytes: number; crc: number }>;
  /** The receiving end's frame pump (native/addon/pump.c); absent with crc32. `counters` (off-heap): data bytes
   *  taken, credit bytes taken (8 + data per frame), frames taken; the pump adds to them. */
  Pump?: new (counters: Float64Array) => NativePump;
  /** The outgoing half of an SSH connection's AES-GCM cipher (native/addon/seal.c): key 16 or 32 bytes, IV 12. */
  GcmSeal?: GcmSealClass;
}

export type GcmSealClass = (new (key: Uint8Array, iv: Uint8Array) => NativeGcmSeal) & {
  /** Bytes seal() writes for dataLength bytes in packets of packetSize. */
  sealedSize(dataLength: number, packetSize: number): number;
};

/** AES-GCM sealing of SSH packets (RFC 5647); one invocation counter across both methods, in call order. */
export interface NativeGcmSeal {
  /** Seals in place a packet laid out as ssh2 lays it out (length, padding length, payload, padding, tag room). */
  encrypt(packet: Uint8Array): void;
  /** data as SSH_MSG_CHANNEL_DATA packets to recipient, at most packetSize data bytes each, sealed into out one
   *  after another with random padding; returns the bytes written. Throws ENOBUFS if out is too small. */
  seal(recipient: number, data: Uint8Array, packetSize: number, out: Uint8Array): number;
  /** Clears the key; any later call throws. */
  free(): void;
}

/** Splits a stream into frames and writes the raw data frames of registered files itself (native/addon/pump.c). */
export interface NativePump {
  /** Take file id's data frames from now on: written to fd, or through directFd (O_DIRECT, -1: none); expected
   *  size or -1. Throws (EMFILE) when the pump has files enough. */
  open(id: number, fd: number, directFd: number, expected: number): void;
  /** Bytes of file id parsed in JavaScript, appended in order; false (nothing written) past the expected size.
   *  `crc`: their crc32, when known (not hashed again). */
  write(id: number, data: Uint8Array, crc?: number): boolean;
  /** Every byte of file id written (not synced), the file cut to its size; throws a write error (with fileId). */
  finish(id: number): { size: number; crc: number };
  /** Failure path: waits for file id's writes and forgets it. */
  drop(id: number): void;
  /** [bytes consumed, Buffer, stream offset, ...]: the bytes for JavaScript, each with its offset; null when the
   *  chunk was consumed whole and nothing passed on. `fast`: the consumer has nothing pending, so frames may be
   *  taken; a frame to take while not fast stops the feed (consumed < length): feed the rest again once idle.
   *  Throws (code EPROTO, offset) on a taken frame's bad checksum. */
  feed(chunk: Uint8Array, fast: boolean): [number, ...Array<Buffer | number>] | null;
  /** Whether the stream is between frames (an end here is clean). */
  atBoundary(): boolean;
  /** Stream offset of the next byte. */
  offset(): number;
  /** Waits for every write, stops the writer thread; any later call throws. */
  close(): void;
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
