/**
 * Messages over a pair of byte streams: a pull-based reader (reads only when the caller wants the next
 * message, so the source's own buffering bounds memory), a writer that respects backpressure, and the
 * Channel shape every transport (local child process, SSH exec) provides.
 */
import type { Readable, Writable } from 'node:stream';
import { GodwitError } from '../util/errors';
import { encodeMessage, FrameDecoder, Message, PayloadPool, PREAMBLE, ProtocolError, Role } from './frames';
import type { PipeReader } from './pipe-reader';

/** One end of a connection to a peer: the bytes to it, the bytes from it, and (for a remote command) its
 *  stderr and exit status. */
export interface Channel {
  /** Names the peer in messages, e.g. "root@198.18.0.2" or "local receiver". */
  label: string;
  toPeer: Writable;
  fromPeer: Readable;
  /** The peer command's stderr, if it has one (kept for error messages: a missing godwit says so there). */
  stderr?: Readable;
  /** Resolves when the peer command has exited (never rejects). */
  exited?: Promise<{ code: number | null; signal: string | null }>;
  /** Tear the connection down now (the peer sees EOF or a hang-up). Idempotent. */
  close(): void;
  /** fromPeer's bytes come through the native frame pump (transport/pipe-reader.ts): the receiver gives it files. */
  pipe?: PipeReader;
}

/** The connection to the peer is gone (EOF, reset, process exit) before the protocol said it was done. */
export class ConnectionLostError extends GodwitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { ...options, code: 'ECONNLOST' });
  }
}

/** The reader pauses its input once this many bytes wait unparsed: one maximal frame plus the reads around it. */
const READ_AHEAD = 8 << 20;

export class MessageReader {
  private readonly decoder: FrameDecoder;
  private ended = false;
  private paused = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;

  /** `pool`: where large payloads are assembled (the consumer gives them back when done). */
  constructor(private readonly input: Readable, stream: string, from: Role, pool?: PayloadPool) {
    this.decoder = new FrameDecoder(stream, from, pool);
    const poke = () => {
      const w = this.wake;
      this.wake = undefined;
      w?.();
    };
    // Flowing mode, paused when READ_AHEAD bytes wait: each chunk goes to the decoder as it was read (read()
    // in paused mode concatenates whatever accumulated, a copy of every byte).
    input.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk);
      if (this.decoder.pending >= READ_AHEAD && !this.paused) {
        this.paused = true;
        input.pause();
      }
      poke();
    });
    input.on('end', () => {
      this.ended = true;
      poke();
    });
    input.on('close', () => {
      this.ended = true;
      poke();
    });
    input.on('error', (err) => {
      this.error = err;
      poke();
    });
  }

  get offset(): number {
    return this.decoder.offset;
  }

  /** Bytes read but not yet parsed into messages. */
  get pending(): number {
    return this.decoder.pending;
  }

  /** Whether the peer ever sent a byte (to tell "nothing answered" from "the answer was cut"). */
  get sawBytes(): boolean {
    return this.decoder.offset > 0 || this.decoder.pending > 0;
  }

  /** The next message; undefined on EOF at a frame boundary. Throws ProtocolError on bad bytes. */
  async next(): Promise<Message | undefined> {
    for (;;) {
      const m = this.decoder.next();
      if (this.paused && this.decoder.pending < READ_AHEAD / 2) {
        this.paused = false;
        this.input.resume();
      }
      if (m) return m;
      if (this.error) {
        // The native frame pump found a frame it took corrupted: the same error the decoder would give.
        const e = this.error as Error & { code?: string; offset?: number };
        if (e.code === 'EPROTO' && typeof e.offset === 'number') throw new ProtocolError(this.decoder.stream, e.offset, e.message);
        throw new ConnectionLostError(`reading from ${this.decoder.stream} failed`, { cause: this.error });
      }
      if (this.ended || this.input.destroyed || this.input.readableEnded) {
        this.ended = true;
        if (this.decoder.pending > 0) {
          throw new ConnectionLostError(
            `${this.decoder.stream} ended in the middle of a frame at offset ${this.decoder.offset}` +
              ` (${this.decoder.pending} bytes of an incomplete frame)`,
          );
        }
        return undefined;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

export class MessageWriter {
  private error: Error | undefined;
  private closed = false;
  private waiters: Array<() => void> = [];

  constructor(private readonly output: Writable, private readonly peer: string) {
    const wakeAll = () => {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    };
    output.on('error', (err) => {
      this.error ??= err;
      wakeAll();
    });
    output.on('close', () => {
      this.closed = true;
      wakeAll();
    });
    output.on('drain', wakeAll);
  }

  private check(): void {
    if (this.error) throw new ConnectionLostError(`writing to ${this.peer} failed`, { cause: this.error });
    if (this.closed || this.output.destroyed || this.output.writableEnded) {
      throw new ConnectionLostError(`the connection to ${this.peer} is closed`);
    }
  }

  writePreamble(): void {
    this.check();
    this.output.write(PREAMBLE);
  }

  /**
   * Queue one message; resolves once the output can take more (backpressure). `consumed` runs once the output
   * has taken the frame's last buffer (an SSH channel: copied into its packets), so that buffer may be reused.
   */
  async send(m: Message, consumed?: () => void): Promise<void> {
    this.check();
    // All buffers of a frame go out in one synchronous run, so concurrent senders never interleave a frame.
    const bufs = coalesce(encodeMessage(m));
    this.output.cork();
    let ok = true;
    bufs.forEach((b, i) => {
      ok = (i === bufs.length - 1 && consumed ? this.output.write(b, () => consumed()) : this.output.write(b)) && ok;
    });
    this.output.uncork();
    while (!ok && this.output.writableNeedDrain) {
      this.check();
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.check();
  }

  /** Best effort: used on the way out of a failure, so it never throws. */
  trySend(m: Message): void {
    try {
      this.check();
      for (const b of coalesce(encodeMessage(m))) this.output.write(b);
    } catch {
      // the peer is gone already: nothing to tell it
    }
  }

  end(): void {
    if (!this.output.writableEnded && !this.output.destroyed) this.output.end();
  }
}

/** Below this a frame goes out as one buffer. */
const SMALL_FRAME = 64 << 10;

/**
 * One buffer for a frame's header and prefix (and a small payload): an SSH channel turns every write into a
 * packet of its own, and the receiver wakes for each, so a 16-byte header written alone costs a whole packet.
 * A large payload stays a separate write (no copy).
 */
function coalesce(bufs: Buffer[]): Buffer[] {
  if (bufs.length < 2) return bufs;
  const total = bufs.reduce((n, b) => n + b.length, 0);
  if (total <= SMALL_FRAME) return [Buffer.concat(bufs, total)];
  return bufs.length === 2 ? bufs : [Buffer.concat(bufs.slice(0, -1)), bufs[bufs.length - 1]!];
}

/** Collects the last bytes of a stream (a remote command's stderr) for error messages, bounded. */
export class TailBuffer {
  private buf = '';
  constructor(stream: Readable | undefined, private readonly limit = 4096) {
    stream?.on('data', (d: Buffer) => {
      this.buf = (this.buf + d.toString('utf8')).slice(-this.limit);
    });
    stream?.on('error', () => undefined);
  }
  get text(): string {
    return this.buf.trim();
  }
}
