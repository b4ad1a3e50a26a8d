/**
 * The sending end of an image stream: files go out as framed, checksummed, zstd-compressed chunks under the
 * receiver's credit, so neither a slow link nor a slow disk on the target makes memory grow here.
 *
 * Producers either hand over whole files (sendFile, sendDirectory) or stream a file while they write it
 * (beginFile returns a Writable: a dump pipes its images straight into the stream, no local copy needed).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { Compressor } from 'zstd-napi';
import { loadAddon } from '../native/addon';
import { GodwitError, SysError } from '../util/errors';
import { crc32, crc32Combine } from '../images/crc32';
import { DEFAULT_CHUNK_SIZE, FrameType, MAX_CHUNK_SIZE, Message, checkName } from './frames';
import { handshake } from './handshake';
import { Channel, ConnectionLostError, MessageReader, MessageWriter, TailBuffer } from './wire';

/** The receiver reported an error (its message is the target's own words). */
export class RemoteError extends GodwitError {
  constructor(peer: string, code: string, message: string) {
    super(`${peer}: ${message}`, { code });
  }
}

export class AbortedError extends GodwitError {
  constructor(message: string) {
    super(message, { code: 'EABORTED' });
  }
}

export interface SendOptions {
  /** Raw bytes per chunk (default 1 MiB, at most 4 MiB). */
  chunkSize?: number;
  /** zstd level for data that is not compressed yet (default 1: the link, not the CPU, should be the limit). */
  level?: number;
  /** Aborting it aborts the stream (the receiver removes what it wrote). */
  signal?: AbortSignal;
  onProgress?: (p: SendProgress) => void;
}

export interface SendProgress {
  files: number;
  /** File bytes sent so far (before compression). */
  rawBytes: number;
  /** Bytes written to the connection (frames included). */
  wireBytes: number;
}

export interface SendResult extends SendProgress {
  seconds: number;
}

export interface FileOptions {
  /** Permission bits (informational: the receiver always creates 0600). */
  mode?: number;
  /** Total size if known (the receiver checks it). */
  size?: number;
  /** The content is compressed already (godwit's page container): send it as is. */
  compressed?: boolean;
}

/** A chunk that zstd shrinks by less than this is sent raw; after this many misses in a row the file is
 *  taken as incompressible (already-compressed pages) and not tried again. */
const WORTH_IT = 0.97;
const MISSES_BEFORE_GIVING_UP = 4;
const ZSTD_MAGIC = 0xfd2fb528;
/** Read buffers sendFile keeps for reuse: the one being read, the one being sent, and one the connection holds. */
const READ_BUFFERS = 3;
const PRECOMPRESSED_MAGICS = [Buffer.from('GWZPAGES', 'latin1')];
/** Files known to hold compressed data by their name (godwit's page container). */
export function isPrecompressedName(name: string): boolean {
  return /\.(gwz|zst|zstd|gz|xz)$/.test(name);
}

export interface StreamFile {
  /**
   * `crc`: crc32 of `data` when the producer has it already (the page writer's workers do): not hashed again.
   * `released`: runs once the connection no longer holds `data` (an SSH channel has copied it into its packets),
   * so the producer may reuse the memory; never on a failed stream (see ImageSender.unlessFailed).
   */
  write(data: Buffer, crc?: number, released?: () => void): Promise<void>;
  end(): Promise<{ size: number; crc: number }>;
}

interface FileState {
  id: number;
  name: string;
  size: number;
  crc: number;
  expected?: number;
  tryCompress: boolean;
  misses: number;
  first: boolean;
  ended: boolean;
}

export class ImageSender {
  private readonly reader: MessageReader;
  private readonly writer: MessageWriter;
  private readonly stderr: TailBuffer;
  private credit = 0;
  private waiters: Array<() => void> = [];
  private inbox: Message[] = [];
  private failure: Error | undefined;
  private nextId = 1;
  private open = new Map<number, FileState>();
  private names = new Set<string>();
  private readonly compressor = new Compressor();
  private readonly chunkSize: number;
  /** Set when the handshake is done: `seconds` in results is the streaming time, not the connection set-up. */
  private started = process.hrtime.bigint();
  private finished = false;
  /** The receiver's capabilities (its hello). */
  private peerCaps: string[] = [];
  /** A migration target's Reserved: the bytes it holds for the restore, once it has said. */
  private reservedBytes: number | undefined;
  readonly progress: SendProgress = { files: 0, rawBytes: 0, wireBytes: 0 };

  private constructor(readonly channel: Channel, private readonly opts: SendOptions) {
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    if (!Number.isInteger(this.chunkSize) || this.chunkSize < 4096 || this.chunkSize > MAX_CHUNK_SIZE) {
      throw new GodwitError(`chunk size ${this.chunkSize} is out of range (4096..${MAX_CHUNK_SIZE})`);
    }
    this.compressor.setParameters({ compressionLevel: opts.level ?? 1 });
    this.reader = new MessageReader(channel.fromPeer, `stream from ${channel.label}`, 'receiver');
    this.writer = new MessageWriter(channel.toPeer, channel.label);
    this.stderr = new TailBuffer(channel.stderr);
  }

  /** Connect: handshake with the receiver, then start listening for its credit and control messages. */
  static async open(channel: Channel, opts: SendOptions = {}): Promise<ImageSender> {
    const s = new ImageSender(channel, opts);
    try {
      if (opts.signal?.aborted) throw new AbortedError('interrupted before the stream started');
      const hello = await handshake(channel, s.reader, s.writer, 'sender', s.stderr);
      s.credit = hello.window!;
      s.peerCaps = hello.caps;
      s.started = process.hrtime.bigint();
    } catch (err) {
      channel.close();
      throw err;
    }
    const onAbort = () => s.abort('interrupted on the source (Ctrl-C or signal)');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    s.controlLoop();
    return s;
  }

  /** The first failure of the stream, if any (the connection, the receiver, or a producer). */
  get failed(): Error | undefined {
    return this.failure;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private loopDone: Promise<void> = Promise.resolve();

  /**
   * Write a message; if the connection is gone, the receiver has usually said why just before it closed (a
   * checksum error, a full disk): wait briefly for its last words and report those rather than "closed".
   */
  private async write(m: Message, consumed?: () => void): Promise<void> {
    this.check();
    try {
      await this.writer.send(m, consumed);
    } catch (err) {
      await Promise.race([this.loopDone, new Promise((r) => setTimeout(r, 3000).unref())]);
      if (this.failure instanceof RemoteError) throw this.failure;
      // No last words: say how the receiving command ended, if it did.
      const e = await this.peerGone(err);
      this.fail(e);
      throw this.failure!;
    }
  }

  /** The receiver's end, explained: its exit status if it exited (within a second), and its last stderr. */
  private async peerGone(cause?: unknown): Promise<ConnectionLostError> {
    const exit = this.channel.exited
      ? await Promise.race([this.channel.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000).unref())])
      : undefined;
    const how = exit ? (exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`) : 'closed the connection';
    const when = this.finished ? 'after the end of the stream' : 'in the middle of the stream';
    return new ConnectionLostError(`the receiver on ${this.channel.label} ${how} ${when}` +
      (this.stderr.text ? `; it said: ${this.stderr.text}` : ''), cause !== undefined ? { cause } : undefined);
  }

  private controlLoop(): void {
    this.loopDone = this.runControlLoop();
  }

  private async runControlLoop(): Promise<void> {
    try {
      for (;;) {
        const m = await this.reader.next();
        if (!m) {
          this.fail(await this.peerGone());
          return;
        }
        switch (m.type) {
          case FrameType.Credit:
            this.credit += m.bytes;
            this.wake();
            break;
          case FrameType.Error:
            this.fail(new RemoteError(this.channel.label, m.code, m.message));
            return;
          case FrameType.Abort:
            this.fail(new RemoteError(this.channel.label, 'EABORTED', `aborted the stream: ${m.reason}`));
            return;
          case FrameType.Hello:
            throw new GodwitError(`${this.channel.label} sent a second hello`);
          case FrameType.Reserved:
            this.reservedBytes = m.bytes;
            this.wake();
            break;
          default:
            this.inbox.push(m);
            this.wake();
        }
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  private async waitEvent(): Promise<void> {
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private async acquire(bytes: number): Promise<void> {
    for (;;) {
      this.check();
      if (this.credit >= bytes) {
        this.credit -= bytes;
        return;
      }
      await this.waitEvent();
    }
  }

  /**
   * A migration target's memory reserve: the bytes it holds, once faulted in (FrameType.Reserved). Undefined when
   * the receiver does not say (an older godwit) or has not said within `timeoutMs`; rejects with the stream's failure.
   */
  async targetReserved(timeoutMs: number): Promise<number | undefined> {
    if (!this.peerCaps.includes('reserve')) return undefined;
    const timer = setTimeout(() => this.wake(), timeoutMs);
    const deadline = Date.now() + timeoutMs;
    try {
      while (this.reservedBytes === undefined && Date.now() < deadline) {
        this.check();
        await this.waitEvent();
      }
      return this.reservedBytes;
    } finally {
      clearTimeout(timer);
    }
  }

  /** `p`, or the stream's failure if that comes first (buffers given with `released` are never released then). */
  async unlessFailed<T>(p: Promise<T>): Promise<T> {
    let settled: { value: T } | undefined;
    let error: { err: unknown } | undefined;
    p.then((value) => (settled = { value }), (err) => (error = { err })).finally(() => this.wake());
    for (;;) {
      if (settled) return settled.value;
      if (error) throw error.err;
      this.check();
      await this.waitEvent();
    }
  }

  /** Send a control message (migrate's Commit). */
  async send(m: Message): Promise<void> {
    await this.write(m);
  }

  /**
   * The next control message of one of `types` from the receiver (Complete, Ready, Running). Rejects with the
   * stream's failure, or a timeout naming `what`.
   */
  async waitFor(types: FrameType[], timeoutMs: number, what: string): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      for (;;) {
        const i = this.inbox.findIndex((m) => types.includes(m.type));
        if (i >= 0) return this.inbox.splice(i, 1)[0]!;
        const other = this.inbox.shift();
        if (other) throw new GodwitError(`${this.channel.label} sent ${FrameType[other.type]} while ${what}`);
        this.check();
        const left = deadline - Date.now();
        if (left <= 0) throw new GodwitError(`timed out after ${Math.round(timeoutMs / 1000)} s ${what}`, { code: 'ETIMEDOUT' });
        const woke = this.waitEvent();
        clearTimeout(timer);
        timer = setTimeout(() => this.wake(), left);
        await woke;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Start a file; write its bytes to the returned Writable and end() it (pipeline() into it). */
  beginFile(name: string, opts: FileOptions = {}): Writable {
    const state = this.startFile(name, opts);
    return new FileWriter(this, state, this.chunkSize);
  }

  /**
   * Start a file, promise style: write(buf) resolves once the sender can take more (the buffer must not be
   * modified afterwards: it may still be queued); end() sends the file's end and returns its size and crc32.
   */
  openFile(name: string, opts: FileOptions = {}): StreamFile {
    const state = this.startFile(name, opts);
    return {
      write: async (data: Buffer, crc?: number, released?: () => void) => {
        if (data.length <= this.chunkSize) return this.sendChunk(state, data, crc, released);
        // Frames go out in order: the last one's release means the connection is done with all of them.
        for (let o = 0; o < data.length; o += this.chunkSize) {
          await this.sendChunk(state, data.subarray(o, o + this.chunkSize), undefined, o + this.chunkSize >= data.length ? released : undefined);
        }
      },
      end: async () => {
        await this.endFile(state);
        return { size: state.size, crc: state.crc };
      },
    };
  }

  private startFile(name: string, opts: FileOptions): FileState {
    this.check();
    const bad = checkName(name);
    if (bad) throw new GodwitError(`cannot send "${name}": ${bad}`);
    if (this.names.has(name)) throw new GodwitError(`"${name}" is sent twice`);
    if (this.finished) throw new GodwitError(`"${name}" begun after the stream was finished`);
    this.names.add(name);
    const state: FileState = { id: this.nextId++, name, size: 0, crc: 0, tryCompress: !(opts.compressed ?? isPrecompressedName(name)),
      misses: 0, first: true, ended: false };
    if (opts.size !== undefined) state.expected = opts.size;
    this.open.set(state.id, state);
    const m: Message = { type: FrameType.FileBegin, id: state.id, mode: (opts.mode ?? 0o600) & 0o7777, name };
    if (opts.size !== undefined) m.size = opts.size;
    // FileBegin is tiny and ordered before the file's data by the single writer: no need to await it here.
    this.write(m).catch(() => undefined); // a failure is recorded and reported by the next call
    this.progress.wireBytes += 16 + 16 + Buffer.byteLength(name);
    return state;
  }

  /** The most raw bytes one Data frame carries: a StreamFile write of at most this much is one frame. */
  get maxChunk(): number {
    return this.chunkSize;
  }

  /**
   * @internal one chunk of a file's content; `knownCrc`: its crc32. The caller must not reuse `raw` until
   * `released` runs (if given: once the connection has taken it or no longer needs it; never on a failed stream).
   */
  async sendChunk(state: FileState, raw: Buffer, knownCrc?: number, released?: () => void): Promise<void> {
    this.check();
    if (state.ended) throw new GodwitError(`"${state.name}": data after its end`);
    if (state.first) {
      state.first = false;
      if (raw.length >= 4 && (raw.readUInt32LE(0) === ZSTD_MAGIC || PRECOMPRESSED_MAGICS.some((m) => raw.subarray(0, m.length).equals(m)))) {
        state.tryCompress = false;
      }
    }
    let data = raw;
    let zstd = false;
    if (state.tryCompress) {
      const c = this.compressor.compress(raw);
      if (c.length < raw.length * WORTH_IT) {
        data = c;
        zstd = true;
        state.misses = 0;
      } else if (++state.misses >= MISSES_BEFORE_GIVING_UP) {
        state.tryCompress = false;
      }
    }
    const rawCrc = knownCrc ?? crc32(raw);
    state.crc = crc32Combine(state.crc, rawCrc, raw.length);
    state.size += raw.length;
    if (state.expected !== undefined && state.size > state.expected) {
      throw new GodwitError(`"${state.name}" grew beyond its announced size of ${state.expected} bytes while it was sent`);
    }
    if (zstd) released?.(); // the frame carries the compressed copy
    await this.acquire(8 + data.length);
    const m: Message = { type: FrameType.Data, id: state.id, rawLength: raw.length, zstd, data };
    if (!zstd) m.crc = rawCrc; // the frame's checksum reuses the file's: each byte is hashed once
    await this.write(m, zstd ? undefined : released);
    this.progress.rawBytes += raw.length;
    this.progress.wireBytes += 16 + 8 + data.length;
    this.opts.onProgress?.(this.progress);
  }

  /** @internal */
  async endFile(state: FileState): Promise<void> {
    this.check();
    if (state.expected !== undefined && state.size !== state.expected) {
      throw new GodwitError(`"${state.name}" has ${state.size} bytes, ${state.expected} were announced (changed while sent?)`);
    }
    state.ended = true;
    await this.write({ type: FrameType.FileEnd, id: state.id, size: state.size, crc: state.crc });
    this.open.delete(state.id);
    this.progress.files++;
    this.progress.wireBytes += 32;
    this.opts.onProgress?.(this.progress);
  }

  /** Send one regular file from disk as `name` (symlinks are refused, not followed). */
  async sendFile(file: string, name: string, opts: Omit<FileOptions, 'size' | 'mode'> = {}): Promise<void> {
    let fh: fs.promises.FileHandle;
    try {
      // libuv adds O_CLOEXEC itself.
      fh = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      throw sysError(err, 'open', file, `open ${name} to send it`);
    }
    let next: Promise<{ chunk: Buffer; crc?: number }> | undefined;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new GodwitError(`${file} is not a regular file: image directories hold regular files only`);
      const state = this.startFile(name, { ...opts, size: st.size, mode: st.mode & 0o7777 });
      // Read buffers are reused once the connection has taken their bytes (ssh2 copies them into its packets);
      // one still queued there is never touched. Fresh 1 MiB buffers were faulted in page by page, every chunk.
      const spare: Buffer[] = [];
      // With the addon, each chunk is read and hashed in the threadpool (readCrc): the main thread runs ssh2 and
      // is the stream's bottleneck.
      const readCrc = loadAddon()?.readCrc;
      let position = 0;
      const readChunk = async (): Promise<{ chunk: Buffer; crc?: number }> => {
        const buf = spare.pop() ?? Buffer.allocUnsafe(this.chunkSize);
        if (readCrc) {
          const { bytes, crc } = await readCrc(fh.fd, buf, position).catch((err) => {
            throw sysError(err, 'pread', file, `read ${name}`);
          });
          position += bytes;
          return { chunk: buf.subarray(0, bytes), crc };
        }
        let got = 0;
        while (got < buf.length) {
          const { bytesRead } = await fh.read(buf, got, buf.length - got, null).catch((err) => {
            throw sysError(err, 'read', file, `read ${name}`);
          });
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        return { chunk: buf.subarray(0, got) };
      };
      // One chunk of read-ahead: the next read runs while this chunk waits for the connection.
      next = readChunk();
      for (;;) {
        const read: { chunk: Buffer; crc?: number } = await next;
        const { chunk, crc } = read;
        if (chunk.length === 0) break;
        next = chunk.length === this.chunkSize ? readChunk() : Promise.resolve({ chunk: Buffer.alloc(0) });
        next.catch(() => undefined);
        const whole = Buffer.from(chunk.buffer, chunk.byteOffset, this.chunkSize);
        await this.sendChunk(state, chunk, crc, () => {
          if (spare.length < READ_BUFFERS) spare.push(whole);
        });
      }
      await this.endFile(state);
    } finally {
      await next?.catch(() => undefined); // no read may be in flight when the file is closed
      await fh.close();
    }
  }

  /**
   * Send every regular file under `dir` (relative names; subdirectories recursed), the manifest last so the
   * receiver's directory never looks complete before it is.
   */
  async sendDirectory(dir: string): Promise<void> {
    const files = await listImageFiles(dir);
    for (const f of files) await this.sendFile(path.join(dir, f), f);
  }

  /** End the stream and wait until the receiver has every file verified and synced to disk. */
  async finish(timeoutMs = 120_000): Promise<SendResult> {
    this.check();
    if (this.open.size > 0) {
      const names = [...this.open.values()].map((s) => s.name).join(', ');
      throw new GodwitError(`cannot finish the stream: files still being written: ${names}`);
    }
    this.finished = true;
    await this.write({ type: FrameType.End, files: this.progress.files, bytes: this.progress.rawBytes });
    this.progress.wireBytes += 28;
    const m = await this.waitFor([FrameType.Complete], timeoutMs, `waiting for ${this.channel.label} to confirm the files`);
    if (m.type !== FrameType.Complete || m.files !== this.progress.files || m.bytes !== this.progress.rawBytes) {
      throw new GodwitError(`${this.channel.label} confirmed a different stream than was sent`);
    }
    return { ...this.progress, seconds: Number(process.hrtime.bigint() - this.started) / 1e9 };
  }

  /** Close our side cleanly (after finish) and wait for the peer to exit. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.writer.end();
    if (this.channel.exited) {
      const exit = await Promise.race([this.channel.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), timeoutMs).unref())]);
      this.channel.close();
      if (!exit) throw new GodwitError(`${this.channel.label} did not exit within ${timeoutMs / 1000} s after the stream ended`);
      if (exit.code !== 0) {
        throw new GodwitError(`${this.channel.label} exited with ${exit.code ?? exit.signal}` + (this.stderr.text ? `: ${this.stderr.text}` : ''));
      }
    } else {
      this.channel.close();
    }
  }

  /** Give up: tell the receiver (best effort; it removes everything it wrote) and drop the connection. */
  abort(reason: string): void {
    if (!this.failure) this.fail(new AbortedError(`stream aborted: ${reason}`));
    this.writer.trySend({ type: FrameType.Abort, reason });
    this.writer.end();
    // Give the Abort a moment to leave before tearing down, without holding the process open.
    setTimeout(() => this.channel.close(), 200).unref();
  }

  /** Stderr of the receiving command (for reports). */
  get peerStderr(): string {
    return this.stderr.text;
  }
}

class FileWriter extends Writable {
  private parts: Buffer[] = [];
  private length = 0;

  constructor(private readonly sender: ImageSender, private readonly state: FileState, private readonly chunkSize: number) {
    // A small buffer of its own: the chunk being assembled is the memory this file holds.
    super({ highWaterMark: 64 << 10 });
  }

  private take(n: number): Buffer {
    if (this.parts.length === 1 && this.parts[0]!.length === n) {
      const b = this.parts[0]!;
      this.parts = [];
      this.length = 0;
      return b;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const p = this.parts[0]!;
      const k = Math.min(p.length, n - got);
      p.copy(out, got, 0, k);
      got += k;
      if (k === p.length) this.parts.shift();
      else this.parts[0] = p.subarray(k);
    }
    this.length -= n;
    return out;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    // Like every Node stream, the producer must not modify a buffer it has written: no copy needed.
    this.parts.push(chunk);
    this.length += chunk.length;
    void (async () => {
      while (this.length >= this.chunkSize) await this.sender.sendChunk(this.state, this.take(this.chunkSize));
    })().then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    void (async () => {
      if (this.length > 0) await this.sender.sendChunk(this.state, this.take(this.length));
      await this.sender.endFile(this.state);
    })().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // A producer that fails half-way makes the whole stream bad: abort it so the receiver cleans up.
    if (err && !this.state.ended) this.sender.abort(`the producer of "${this.state.name}" failed: ${err.message}`);
    cb(err);
  }
}

function sysError(err: unknown, syscall: string, file: string, what: string): Error {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.errno === 'number') return new SysError({ errno: Math.abs(e.errno), syscall: e.syscall ?? syscall, path: file, what });
  return err instanceof Error ? err : new Error(String(err));
}

/** Names a directory's manifest could have: sent last. */
const MANIFEST_RE = /^manifest(\.[a-z]+)?$|^godwit-manifest/;

/** Every regular file under dir, relative, sorted, manifest last; anything else is an error. */
export async function listImageFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const st = await fs.promises.lstat(dir).catch((err) => {
    throw sysError(err, 'lstat', dir, 'read the image directory');
  });
  if (!st.isDirectory()) throw new GodwitError(`${dir} is not a directory`);
  async function walk(rel: string): Promise<void> {
    const abs = rel ? path.join(dir, rel) : dir;
    const entries = await fs.promises.readdir(abs, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) out.push(r);
      else throw new GodwitError(`${path.join(dir, r)} is not a regular file (symlink, device or socket): an image directory holds regular files only`);
    }
  }
  await walk('');
  const last = out.filter((n) => MANIFEST_RE.test(path.basename(n)));
  return [...out.filter((n) => !MANIFEST_RE.test(path.basename(n))), ...last];
}
