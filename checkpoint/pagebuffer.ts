/**
 * Read-ahead between the target and the page writer, so the tree is frozen only while its pages are *read*,
 * not while they are compressed and written: page bytes from the helper are copied into slots of one
 * SharedArrayBuffer, and each full slot goes to the writer zero-copy (the compression workers read it in
 * place); a slot is reused once the writer is done with it. With a buffer as large as the dump, reading never
 * waits for compression.
 *
 * The buffer is touched (page-faulted) before the tree is frozen: first touch of fresh memory is the slow part
 * on these machines (0.2-0.5 GB/s), several times slower than copying into memory that is already mapped.
 */
import * as fs from 'node:fs';
import { MemReader, Piece, readPieces } from './memreader';

/** 4 MiB slots: a multiple of the container's 256 KiB chunks (so the writer takes them without copying), and
 *  large enough that the per-write bookkeeping stays negligible. */
export const SLOT_SIZE = 4 << 20;
/** The read-ahead never takes more than this share of the memory the kernel reports available. */
const MAX_SHARE_OF_AVAILABLE = 0.25;
const MIN_BUFFER = 2 * SLOT_SIZE;
export const DEFAULT_MAX_BUFFER = 1 << 30;

export interface ChunkWriter {
  write(data: Uint8Array): Promise<void>;
}

function memAvailable(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(fs.readFileSync('/proc/meminfo', 'latin1'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The buffer size for an estimated dump of `bytes`: the whole dump if memory allows, within [MIN, max]. */
export function bufferSizeFor(bytes: number, max = DEFAULT_MAX_BUFFER): number {
  const avail = memAvailable();
  let size = Math.min(bytes + SLOT_SIZE, max, avail ? avail * MAX_SHARE_OF_AVAILABLE : max);
  size = Math.max(MIN_BUFFER, Math.ceil(size / SLOT_SIZE) * SLOT_SIZE);
  return size;
}

export class PageBuffer {
  private readonly buf: Buffer;
  private readonly sab: SharedArrayBuffer;
  private readonly free: number[] = [];
  private readonly waiters: Array<() => void> = [];
  private failed: unknown;
  readonly size: number;

  constructor(size: number) {
    this.size = Math.max(MIN_BUFFER, Math.ceil(size / SLOT_SIZE) * SLOT_SIZE);
    this.sab = new SharedArrayBuffer(this.size);
    this.buf = Buffer.from(this.sab);
    // Fault every page in now, outside the frozen window.
    this.buf.fill(0);
    for (let i = this.size / SLOT_SIZE - 1; i >= 0; i--) this.free.push(i);
  }

  /**
   * Full slots not yet given to their writer. They wait until every page is read (or the buffer runs out of
   * free slots): compressing while reading takes CPU from the reader and lengthens the freeze.
   */
  private held: { slot: number; fill: number; writer: ChunkWriter; inFlight: Promise<void>[] }[] = [];
  private submitAll!: () => void;
  private readonly done = new Promise<void>((r) => (this.submitAll = r));

  /** Gives every held slot to its writer (in order). */
  private submitHeld(): void {
    for (const h of this.held.splice(0)) {
      const p = h.writer.write(this.buf.subarray(h.slot * SLOT_SIZE, h.slot * SLOT_SIZE + h.fill)).then(
        () => this.release(h.slot),
        (err) => {
          this.failed ??= err;
          this.release(h.slot);
          throw err;
        },
      );
      p.catch(() => undefined);
      h.inFlight.push(p);
    }
  }

  /** Reading is over: compression of everything read may start. */
  startWriting(): void {
    this.submitHeld();
    this.submitAll();
  }

  private async takeSlot(): Promise<number> {
    while (this.free.length === 0) {
      if (this.failed !== undefined) throw this.failed;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.failed !== undefined) throw this.failed;
    return this.free.pop()!;
  }

  private release(slot: number): void {
    this.free.push(slot);
    this.waiters.shift()?.();
  }

  /**
   * Reads `ranges` of `pid`'s memory straight into the buffer's slots (readPieces: process_vm_readv, else pread
   * of /proc/PID/mem; one call per slot, no pipe and no extra copy) and hands each full slot to `writer`. Resolves
   * once every byte has been read from the target; `flushed` settles when the writer is done with all of them.
   */
  async readInto(
    pid: number,
    ranges: { start: bigint; bytes: number }[],
    writer: ChunkWriter,
    reader?: MemReader,
  ): Promise<{ bytes: number; flushed: Promise<void> }> {
    const need = ranges.reduce((n, r) => n + r.bytes, 0);
    if (reader && need > 0 && Math.ceil(need / SLOT_SIZE) <= this.free.length) return this.readParallel(pid, ranges, writer, reader, need);
    const inFlight: Promise<void>[] = [];
    let slot = -1;
    let fill = 0;
    let total = 0;
    let pieces: Piece[] = [];
    const handOver = (): void => {
      total += readPieces(pid, this.buf, pieces);
      pieces = [];
      this.held.push({ slot, fill, writer, inFlight });
      slot = -1;
      fill = 0;
    };
    const nextSlot = async (): Promise<number> => {
      if (this.free.length === 0) this.submitHeld();
      return this.takeSlot();
    };
    try {
      for (const r of ranges) {
        let addr = Number(r.start);
        let left = r.bytes;
        while (left > 0) {
          if (slot < 0) {
            slot = await nextSlot();
            fill = 0;
          }
          const n = Math.min(left, SLOT_SIZE - fill);
          const last = pieces[pieces.length - 1];
          if (last && last.addr + last.len === addr) last.len += n;
          else pieces.push({ addr, len: n, at: slot * SLOT_SIZE + fill });
          fill += n;
          addr += n;
          left -= n;
          if (fill === SLOT_SIZE) handOver();
        }
      }
      if (slot >= 0 && fill > 0) handOver();
      else if (slot >= 0) this.release(slot);
    } catch (err) {
      if (slot >= 0) this.release(slot);
      this.held = this.held.filter((h) => (h.writer === writer ? (this.release(h.slot), false) : true));
      throw err;
    }
    // Slots stay held until submitHeld(): the caller starts compression once the whole tree has been read.
    const done = this.done.then(() => Promise.all(inFlight)).then(() => undefined);
    return { bytes: total, flushed: done };
  }

  /** The whole process fits in free slots: map every byte to its place, then read with all threads at once. */
  private async readParallel(
    pid: number,
    ranges: { start: bigint; bytes: number }[],
    writer: ChunkWriter,
    reader: MemReader,
    need: number,
  ): Promise<{ bytes: number; flushed: Promise<void> }> {
    const slots: number[] = [];
    for (let i = 0; i < Math.ceil(need / SLOT_SIZE); i++) slots.push(this.free.pop()!);
    const pieces: Piece[] = [];
    let pos = 0; // position in the process's page stream
    for (const r of ranges) {
      let addr = Number(r.start);
      let left = r.bytes;
      while (left > 0) {
        const slot = slots[Math.floor(pos / SLOT_SIZE)]!;
        const inSlot = pos % SLOT_SIZE;
        const n = Math.min(left, SLOT_SIZE - inSlot);
        const at = slot * SLOT_SIZE + inSlot;
        const last = pieces[pieces.length - 1];
        if (last && last.addr + last.len === addr && last.at + last.len === at) last.len += n;
        else pieces.push({ addr, len: n, at });
        addr += n;
        left -= n;
        pos += n;
      }
    }
    let bytes: number;
    try {
      bytes = await reader.read(pid, this.sab, pieces);
    } catch (err) {
      for (const sl of slots) this.release(sl);
      throw err;
    }
    const inFlight: Promise<void>[] = [];
    slots.forEach((slot, i) => this.held.push({ slot, fill: Math.min(SLOT_SIZE, need - i * SLOT_SIZE), writer, inFlight }));
    const flushed = this.done.then(() => Promise.all(inFlight)).then(() => undefined);
    return { bytes, flushed };
  }

  /**
   * A sink for one pages file: copy chunks in, hand full slots to `writer`. After the last chunk call end():
   * it hands over the partial slot at once and returns a promise of the writer being done with every slot.
   */
  stream(writer: ChunkWriter): { sink: (chunk: Buffer) => Promise<void> | void; end: () => Promise<void> } {
    let slot = -1;
    let fill = 0;
    const inFlight = new Set<Promise<void>>();
    const flush = (): void => {
      if (slot < 0 || fill === 0) return;
      const s = slot;
      const p = writer.write(this.buf.subarray(s * SLOT_SIZE, s * SLOT_SIZE + fill)).then(
        () => this.release(s),
        (err) => {
          this.failed ??= err;
          this.release(s);
          throw err;
        },
      );
      inFlight.add(p);
      p.then(() => inFlight.delete(p), () => undefined);
      slot = -1;
      fill = 0;
    };
    const sink = async (chunk: Buffer): Promise<void> => {
      let pos = 0;
      while (pos < chunk.length) {
        if (slot < 0) {
          slot = await this.takeSlot();
          fill = 0;
        }
        const n = Math.min(chunk.length - pos, SLOT_SIZE - fill);
        chunk.copy(this.buf, slot * SLOT_SIZE + fill, pos, pos + n);
        fill += n;
        pos += n;
        if (fill === SLOT_SIZE) flush();
      }
    };
    const end = (): Promise<void> => {
      flush();
      return Promise.all([...inFlight]).then(() => undefined);
    };
    return { sink, end };
  }
}
