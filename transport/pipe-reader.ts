/**
 * How `godwit receive` reads the stream from its stdin (the pipe sshd feeds): reads of up to 256 KiB into one
 * reused buffer, each handed to the native frame pump (native/addon/pump.c), which writes the data frames of the
 * large files it was given (open()) itself and passes every other frame on, whole, as this Readable's chunks.
 *
 * Why: in JavaScript the receiver used 0.6-0.7 s of CPU per 542 MB against `cat`'s 0.09 s (64 KiB reads into fresh
 * memory, and per frame a parse, a queue entry, crc calls and a file write through libuv), and on two cores that is
 * CPU the SSH stream needs. One buffer the size of a core's cache: the kernel copies into memory that is hot.
 *
 * The consumer keeps the order: `idle()` says whether it has nothing pending (every chunk this reader gave it is
 * processed); only then may the pump take frames, and within one read only until it has passed a frame on. A frame
 * to take while the consumer is busy stops the read there: the rest waits (the socket paused) until the consumer,
 * idle again, calls kick(). What the pump took is reported through `onTaken` (for credit and byte counts); each
 * file's size and crc come from finish(). A chunk carries its stream offset in frameOffsets (for error messages
 * that say where). Every read emits 'bytes' (its length): what the pump takes never shows as 'data'.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Readable } from 'node:stream';
import { loadAddon, type NativePump } from '../native/addon';
import { frameOffsets } from './frames';
import { ConnectionLostError } from './wire';

/** One read: 256 KiB stays in a core's L2 cache between the kernel's copy in and the pump's copy out. */
const READ_BYTES = 256 << 10;

export class PipeReader extends Readable {
  readonly pump: NativePump;
  /** Set by the consumer: true when it has processed every chunk it was given. */
  idle: () => boolean = () => false;
  /** Set by the consumer: what the pump took in one read (data bytes, credit bytes, frames). */
  onTaken: ((data: number, credit: number, frames: number) => void) | undefined;
  private readonly socket: net.Socket;
  private readonly counters = new Float64Array(new ArrayBuffer(3 * 8));
  /** What the pump left of the last read (a frame to take once the consumer is idle); the socket is paused. */
  private rest: Buffer | undefined;
  private pumpClosed = false;
  /** The socket saw its end; the stream ends once what the pump left is fed too. */
  private inputEnded = false;

  constructor(fd: number, Pump: new (counters: Float64Array) => NativePump) {
    super({ highWaterMark: READ_BYTES });
    this.pump = new Pump(this.counters);
    const buffer = Buffer.allocUnsafeSlow(READ_BYTES);
    const onread: net.OnReadOpts = { buffer, callback: (n) => this.onRead(buffer.subarray(0, n)) };
    // Node takes onread in the constructor too (its types list it for connect() only).
    this.socket = new net.Socket({ fd, readable: true, writable: false, onread } as net.SocketConstructorOpts);
    this.socket.on('end', () => {
      this.inputEnded = true;
      if (!this.rest) this.finishInput();
    });
    this.socket.on('error', (err) => this.destroy(err));
  }

  override _read(): void {
    if (!this.rest) this.socket.resume();
  }

  /** The consumer is idle: feed what the pump left, and read on once it is all consumed. */
  kick(): void {
    const rest = this.rest;
    if (!rest || this.destroyed || !this.idle()) return;
    this.rest = undefined;
    const more = this.onRead(rest, false);
    if (this.rest) return;
    if (this.inputEnded) this.finishInput();
    else if (more) this.socket.resume();
  }

  /** Everything read is fed: a clean end between frames, or an error saying where the stream was cut. */
  private finishInput(): void {
    if (this.destroyed) return;
    if (!this.pump.atBoundary()) {
      this.destroy(new ConnectionLostError(`the stream ended in the middle of a frame at offset ${this.pump.offset()}`));
      return;
    }
    this.push(null);
  }

  /** The stream ends (or fails) before its consumer is done with the files: the pump stays until release(). */
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }

  /** Done with it all: stop reading, and stop the pump's writer thread (files still open are abandoned). */
  release(): void {
    this.destroy();
    if (this.pumpClosed) return;
    this.pumpClosed = true;
    this.pump.close();
  }

  /** false pauses the socket until _read() asks for more. */
  private onRead(chunk: Buffer, fresh = true): boolean {
    if (this.destroyed) return false;
    // Bytes arrived, whoever ends up with them (an idle watchdog listens: the pump's data never reaches 'data').
    if (fresh) this.emit('bytes', chunk.length);
    const c = this.counters;
    c[0] = c[1] = c[2] = 0;
    let out: Array<Buffer | number> | null;
    try {
      out = this.pump.feed(chunk, this.idle());
    } catch (err) {
      this.destroy(err as Error);
      return false;
    }
    if (c[2]! > 0) this.onTaken?.(c[0]!, c[1]!, c[2]!);
    if (out === null) return true;
    if (!Array.isArray(out)) {
      // Never silently: bytes the pump consumed and did not hand over would be lost.
      this.destroy(new Error('the frame pump returned nothing for a read'));
      return false;
    }
    let more = true;
    for (let i = 1; i < out.length; i += 2) {
      const b = out[i] as Buffer;
      frameOffsets.set(b, out[i + 1] as number);
      more = this.push(b);
    }
    const consumed = out[0] as number;
    if (consumed < chunk.length) {
      // The read buffer is reused by the next read: keep the rest in memory of its own (a few KiB to 256 KiB, once
      // per file start or so), and read no more until it is fed.
      this.rest = Buffer.from(chunk.subarray(consumed));
      return false;
    }
    return more;
  }
}

/**
 * A PipeReader on fd when it is a pipe or a socket and the addon has the pump; undefined otherwise (read it as
 * usual). GODWIT_NO_PUMP=1 keeps the receiver in JavaScript (to compare, or should the pump misbehave).
 */
export function readPipe(fd: number): PipeReader | undefined {
  const Pump = loadAddon()?.Pump;
  if (!Pump || process.env.GODWIT_NO_PUMP === '1') return undefined;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFIFO() && !st.isSocket()) return undefined;
    return new PipeReader(fd, Pump);
  } catch {
    return undefined;
  }
}
