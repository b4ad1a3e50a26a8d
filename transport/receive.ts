/**
 * The receiving end of an image stream (`godwit receive`): writes the files into a directory it owns and
 * answers with credit, errors and completion.
 *
 * Safety: names are checked (relative, no "." or "..", no reserved prefix); the directory is new (created 0700)
 * or empty and not a symlink; every subdirectory is created by this stream (mkdir fails on anything existing,
 * so no path component can be a planted symlink); files are opened O_CREAT|O_EXCL|O_NOFOLLOW 0600 under a
 * temporary name, checked (size, crc32), fsynced (unless not `durable`) and then linked to their final name (link
 * never replaces anything). On any failure everything this stream created is removed.
 *
 * Speed: when the channel comes through the native frame pump (pipe-reader.ts, `godwit receive` on a pipe), large
 * files are given to it at FileBegin and it writes their raw data frames itself while this receiver is idle; the
 * receiver still parses every other frame, checks every file at FileEnd with the pump's size and crc, and returns
 * credit for what the pump took (taken()).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import * as zstd from 'zstd-napi/binding';
import { GodwitError, SysError } from '../util/errors';
import { crc32, crc32Combine } from '../images/crc32';
import { FrameType, HelloInfo, MARKER_NAME, MAX_CHUNK_SIZE, Message, PayloadPool, ProtocolError, RESERVED_PREFIX, TEMP_PREFIX, checkName, dataBytes } from './frames';
import { BlockPool, FileAppender } from './direct-appender';
import type { PipeReader } from './pipe-reader';
import { handshake } from './handshake';
import { Channel, ConnectionLostError, MessageReader, MessageWriter, TailBuffer } from './wire';

/** Initial credit: bytes of data the sender may have in flight. 16 MiB covers a fast LAN's bandwidth-delay
 *  product many times over and keeps the worst case per stream (queue + pipe buffers) small. */
export const DEFAULT_WINDOW = 16 << 20;
/** Messages read ahead of the disk writer: bounds the queue even for a flood of tiny frames. */
const MAX_QUEUED = 256;
const MAX_OPEN_FILES = 64;
/** Start writing a file's data out (fdatasync, not awaited) every this many bytes: the disk works while the
 *  stream goes on, and the fsync before Complete finds little left to do (it had to write the whole file). */
const FLUSH_BEHIND = 32 << 20;
const MAX_FILES = 1_000_000;
/** Files of at least this announced size (or of no announced size) go to the native frame pump when there is one,
 *  written O_DIRECT unless the receiver writes buffered: smaller ones are few bytes, a file opened and finished by
 *  the pump costs a few syscalls more, and an O_DIRECT file waits for a padded write of its own at the end. */
const PUMP_MIN_SIZE = 4 << 20;
/** Files the pump writes at once (native/addon/pump.c MAX_FILES): a stream sends one large file at a time. */
const PUMP_FILES = 2;

export interface ReceiveOptions {
  dir: string;
  channel: Channel;
  window?: number;
  log?: (line: string) => void;
  /**
   * Large files bypass the page cache (O_DIRECT, default true): less CPU while receiving (on these VMs a buffered
   * write of 538 MB cost the receiver 1.5-1.75 s of CPU, the copy into freshly allocated page cache, against
   * ~0.1 s direct). A migration's target passes false for images that arrive while the workload still runs (a
   * streamed pre-copy), which its restore then reads from memory (migrate-channel.ts cacheImages).
   */
  directIo?: boolean;
  /**
   * Make the files durable before Complete (default true): each is fsynced before it is linked into place, and the
   * directories at the end. A migration's target passes false unless it keeps the images: its restore reads them
   * at once and removes them after, and until the target runs the workload the source holds it (frozen), so a crash
   * of the target loses nothing an fsync would have kept. Each fsync costs a journal commit (0.5-11 ms measured
   * here), in the receiver's frame loop: the eleven small image files of a migration, which go before the pages,
   * took the receiver 26 ms with their fsyncs and 12 ms without.
   * The checks (size, crc32) and the link into place are the same either way.
   */
  durable?: boolean;
  /** Called once the handshake is done, with the sender's hello (its capabilities). */
  onHandshake?: (peer: HelloInfo) => void;
}

export interface ReceiveResult {
  dir: string;
  files: number;
  bytes: number;
  wireBytes: number;
  seconds: number;
}

interface OpenFile {
  id: number;
  name: string;
  tmp: string;
  final: string;
  fh: fs.promises.FileHandle;
  /** Writes the content: page cache first, O_DIRECT once the file is large (direct-appender.ts); unset when the
   *  native pump writes it (its size and crc are then the pump's until endFile). */
  out?: FileAppender;
  /** The pump writes it; with directFh, through O_DIRECT. */
  pumped?: boolean;
  directFh?: fs.promises.FileHandle;
  size: number;
  crc: number;
  expected?: number;
  /** Bytes written since the last background flush started. */
  unflushed: number;
  /** The background fdatasync in flight, if any (it never rejects: a failure is kept in flushError). */
  flushing?: Promise<void>;
  flushError?: unknown;
}

export function toSysError(err: unknown, syscall: string, file: string, what: string): Error {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.errno === 'number' && typeof e.code === 'string') {
    return new SysError({ errno: Math.abs(e.errno), syscall: e.syscall ?? syscall, path: file, what });
  }
  return err instanceof Error ? err : new Error(String(err));
}

export class ImageReceiver {
  readonly dir: string;
  private readonly reader: MessageReader;
  private readonly writer: MessageWriter;
  private readonly window: number;
  private readonly dctx = new zstd.DCtx();
  /** Data payloads and decompressed chunks are assembled in reused buffers, given back once on disk. */
  private readonly pool = new PayloadPool();
  /** Aligned staging blocks for the O_DIRECT writes of large files. */
  private readonly blocks: BlockPool;
  private createdRoot = false;
  private prepared = false;
  private readonly createdDirs: string[] = [];
  private readonly createdDirSet = new Set<string>();
  private readonly createdFiles: string[] = [];
  private readonly names = new Set<string>();
  private readonly open = new Map<number, OpenFile>();
  private files = 0;
  private bytes = 0;
  private wireBytes = 0;
  /** Data payload bytes read from the sender, credit returned to it, and credit earned but not yet returned. */
  private received = 0;
  private granted = 0;
  private owed = 0;
  private readonly started = process.hrtime.bigint();
  private queue: Message[] = [];
  private pumpDone = false;
  private pumpError: Error | undefined;
  private wakeConsumer: (() => void) | undefined;
  private wakePump: (() => void) | undefined;
  /** The consumer waits for a message (it has processed every one before). */
  private consumerWaiting = false;
  /** The native frame pump under the channel, if any (pipe-reader.ts). */
  private readonly pipe: PipeReader | undefined;
  private pumpedFiles = 0;
  private readonly label: string;
  private readonly durable: boolean;

  constructor(private readonly opts: ReceiveOptions) {
    this.dir = path.resolve(opts.dir);
    this.window = opts.window ?? DEFAULT_WINDOW;
    this.blocks = opts.directIo === false ? new BlockPool(0) : new BlockPool();
    this.label = opts.channel.label;
    this.durable = opts.durable ?? true;
    this.reader = new MessageReader(opts.channel.fromPeer, `stream from ${opts.channel.label}`, 'sender', this.pool);
    this.writer = new MessageWriter(opts.channel.toPeer, opts.channel.label);
    this.pipe = opts.channel.pipe;
    if (this.pipe) {
      this.pipe.idle = () => this.idle();
      this.pipe.onTaken = (data, credit, frames) => this.taken(data, credit, frames);
    }
  }

  /** Nothing read is waiting to be processed: the pump may write data frames itself (they come next in order). */
  private idle(): boolean {
    const input = this.opts.channel.fromPeer as Readable & { writableLength?: number };
    return this.consumerWaiting && this.queue.length === 0 && this.reader.pending === 0 &&
      input.readableLength === 0 && !input.writableLength && this.pipe!.readableLength === 0;
  }

  /** The pump wrote data frames of pumped files: the same accounting as data() does for one. */
  private taken(data: number, credit: number, frames: number): void {
    this.received += credit;
    this.wireBytes += credit + 16 * frames;
    this.bytes += data;
    if (this.received > this.window + this.granted) {
      this.pumpError ??= new ProtocolError(`stream from ${this.label}`, this.reader.offset,
        `the sender exceeded its flow-control window (${this.received - this.granted} bytes in flight, window ${this.window})`);
      this.wakeConsumer?.();
      return;
    }
    this.owed += credit;
    // Only in quarter windows: the sender has three quarters left meanwhile, and a Credit frame per read would be
    // a packet back through both sshd and ssh2 for every 256 KiB.
    if (this.owed >= Math.min(this.window / 4, this.window - (8 + MAX_CHUNK_SIZE))) {
      this.returnCredit().catch((err) => {
        this.pumpError ??= err instanceof Error ? err : new Error(String(err));
        this.wakeConsumer?.();
      });
    }
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  /** Handshake, then take files until the sender's End; answers Complete once all is verified (and synced, if durable). */
  async receive(): Promise<ReceiveResult> {
    const peer = await handshake(this.opts.channel, this.reader, this.writer, 'receiver', new TailBuffer(undefined), this.window);
    this.opts.onHandshake?.(peer);
    await this.prepareDir();
    void this.pump();
    for (;;) {
      const m = await this.nextQueued();
      if (!m) throw new ConnectionLostError(`the stream from ${this.label} ended before all files were sent (connection lost or sender killed)`);
      switch (m.type) {
        case FrameType.FileBegin:
          await this.beginFile(m);
          break;
        case FrameType.Data:
          await this.data(m);
          break;
        case FrameType.FileEnd:
          await this.endFile(m);
          break;
        case FrameType.End:
          await this.end(m);
          return { dir: this.dir, files: this.files, bytes: this.bytes, wireBytes: this.wireBytes,
            seconds: Number(process.hrtime.bigint() - this.started) / 1e9 };
        case FrameType.Abort:
          throw new GodwitError(`the sender aborted the stream: ${m.reason}`, { code: 'EABORTED' });
        default:
          throw new ProtocolError(`stream from ${this.label}`, this.reader.offset, `unexpected ${FrameType[m.type]} before the end of the files`);
      }
    }
  }

  /** After receive(): the sender's next control message (migrate's Commit), undefined on EOF. */
  async next(): Promise<Message | undefined> {
    return this.nextQueued();
  }

  async send(m: Message): Promise<void> {
    await this.writer.send(m);
  }

  /** Report a failure to the sender (best effort). */
  reportError(err: unknown): void {
    const e = err as { code?: string };
    this.writer.trySend({ type: FrameType.Error, code: typeof e?.code === 'string' ? e.code : 'EFAIL', message: describe(err) });
  }

  endOutput(): void {
    this.writer.end();
  }

  // ------------------------------------------------------------------------------------------- read-ahead

  /** Reads messages ahead of the disk writer, within the credit window and MAX_QUEUED. */
  private async pump(): Promise<void> {
    try {
      for (;;) {
        while (this.queue.length >= MAX_QUEUED) await new Promise<void>((r) => (this.wakePump = r));
        const m = await this.reader.next();
        if (!m) break;
        if (m.type === FrameType.Data) {
          // A sender may have sent at most the window plus every credit we returned: more is a broken or
          // hostile sender, which would otherwise make this queue grow without bound.
          const bytes = dataBytes(m);
          this.received += 8 + bytes;
          if (this.received > this.window + this.granted) {
            throw new ProtocolError(`stream from ${this.label}`, this.reader.offset,
              `the sender exceeded its flow-control window (${this.received - this.granted} bytes in flight, window ${this.window})`);
          }
          this.wireBytes += 24 + bytes;
        }
        this.queue.push(m);
        this.wakeConsumer?.();
      }
    } catch (err) {
      this.pumpError = err instanceof Error ? err : new Error(String(err));
    }
    this.pumpDone = true;
    this.wakeConsumer?.();
  }

  private async nextQueued(): Promise<Message | undefined> {
    for (;;) {
      const m = this.queue.shift();
      if (m) {
        this.wakePump?.();
        return m;
      }
      if (this.pumpError) throw this.pumpError;
      if (this.pumpDone) return undefined;
      this.consumerWaiting = true;
      // Idle now: the pump may go on with what it held back for us.
      this.pipe?.kick();
      if (this.queue.length > 0 || this.pumpError || this.pumpDone) {
        this.consumerWaiting = false;
        continue;
      }
      try {
        await new Promise<void>((r) => (this.wakeConsumer = r));
      } finally {
        this.consumerWaiting = false;
      }
      this.wakeConsumer = undefined;
    }
  }

  private async grant(n: number): Promise<void> {
    this.owed += n;
    // Return credit in batches, but always before the sender could be starved: it is blocked only when less
    // than one maximal chunk of credit is left, so a quarter window (>= one chunk by construction) is safe.
    if (this.owed >= Math.min(this.window / 4, this.window - (8 + MAX_CHUNK_SIZE)) || this.queue.length === 0) {
      await this.returnCredit();
    }
  }

  private async returnCredit(): Promise<void> {
    const bytes = this.owed;
    this.owed = 0;
    this.granted += bytes;
    await this.writer.send({ type: FrameType.Credit, bytes });
  }

  // ------------------------------------------------------------------------------------------- files

  private async prepareDir(): Promise<void> {
    const dir = this.dir;
    let st: fs.Stats | undefined;
    try {
      st = await fs.promises.lstat(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toSysError(err, 'lstat', dir, 'check the target directory');
    }
    if (!st) {
      try {
        await fs.promises.mkdir(dir, { mode: 0o700 });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const hint = code === 'ENOENT' ? ` (its parent ${path.dirname(dir)} does not exist: create it first)` : '';
        throw new GodwitError(`cannot create the target directory ${dir}${hint}`, { cause: toSysError(err, 'mkdir', dir, 'create the target directory') });
      }
      this.createdRoot = true;
    } else if (st.isSymbolicLink()) {
      throw new GodwitError(`the target directory ${dir} is a symlink: refusing to follow it (give the real path)`, { code: 'ESYMLINK' });
    } else if (!st.isDirectory()) {
      throw new GodwitError(`the target ${dir} exists and is not a directory: give a new or empty directory`, { code: 'ENOTDIR' });
    } else if ((await fs.promises.readdir(dir)).length > 0) {
      throw new GodwitError(`the target directory ${dir} is not empty: give a new or empty directory`, { code: 'ENOTEMPTY' });
    }
    this.prepared = true;
    const marker = path.join(dir, MARKER_NAME);
    const fh = await fs.promises.open(marker, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    this.createdFiles.push(marker);
    try {
      await fh.writeFile(JSON.stringify({ pid: process.pid, start: processStartTime(process.pid), createdRoot: this.createdRoot }));
    } finally {
      await fh.close();
    }
    this.log(`receiving into ${dir}`);
  }

  private bad(problem: string): never {
    throw new ProtocolError(`stream from ${this.label}`, this.reader.offset, problem);
  }

  private async beginFile(m: Extract<Message, { type: FrameType.FileBegin }>): Promise<void> {
    const problem = checkName(m.name);
    if (problem) this.bad(`file name ${JSON.stringify(m.name)} is refused: ${problem}`);
    if (this.names.has(m.name)) this.bad(`"${m.name}" is sent twice`);
    if (this.open.has(m.id)) this.bad(`file id ${m.id} is already open`);
    if (this.open.size >= MAX_OPEN_FILES) this.bad(`more than ${MAX_OPEN_FILES} files open at once`);
    if (this.names.size >= MAX_FILES) this.bad(`more than ${MAX_FILES} files in one stream`);
    this.names.add(m.name);
    const parts = m.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (this.createdDirSet.has(rel)) continue;
      const abs = path.join(this.dir, rel);
      try {
        await fs.promises.mkdir(abs, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          this.bad(`"${m.name}": its directory "${rel}" exists already and was not created by this stream (a file, or planted)`);
        }
        throw toSysError(err, 'mkdir', abs, `create directory for ${m.name}`);
      }
      this.createdDirs.push(abs);
      this.createdDirSet.add(rel);
    }
    const final = path.join(this.dir, ...parts);
    const tmp = path.join(path.dirname(final), `${TEMP_PREFIX}${m.id}`);
    let fh: fs.promises.FileHandle;
    try {
      const c = fs.constants;
      // libuv adds O_CLOEXEC itself.
      fh = await fs.promises.open(tmp, c.O_WRONLY | c.O_CREAT | c.O_EXCL | c.O_NOFOLLOW, 0o600);
    } catch (err) {
      throw toSysError(err, 'open', tmp, `create ${m.name}`);
    }
    this.createdFiles.push(tmp);
    const f: OpenFile = { id: m.id, name: m.name, tmp, final, fh, size: 0, crc: 0, unflushed: 0 };
    if (m.size !== undefined) f.expected = m.size;
    this.open.set(m.id, f);
    if (!(await this.toPump(f))) f.out = new FileAppender(fh, this.blocks);
  }

  /** Gives a large file (or one of unknown size) to the native pump, if there is one with room; false if not. */
  private async toPump(f: OpenFile): Promise<boolean> {
    const pump = this.pipe?.pump;
    if (!pump || this.pumpedFiles >= PUMP_FILES || (f.expected !== undefined && f.expected < PUMP_MIN_SIZE)) return false;
    // O_DIRECT also for a file of unknown size: a page container, compressed as it is sent, is large as a rule.
    if (this.opts.directIo !== false) {
      // The same inode again, through /proc/self/fd (never a path someone could swap); EINVAL: no O_DIRECT here.
      f.directFh = await fs.promises.open(`/proc/self/fd/${f.fh.fd}`, fs.constants.O_WRONLY | fs.constants.O_DIRECT).catch(() => undefined);
    }
    try {
      pump.open(f.id, f.fh.fd, f.directFh?.fd ?? -1, f.expected ?? -1);
    } catch {
      await f.directFh?.close();
      delete f.directFh;
      return false;
    }
    f.pumped = true;
    this.pumpedFiles++;
    return true;
  }

  private async data(m: Extract<Message, { type: FrameType.Data }>): Promise<void> {
    const f = this.open.get(m.id);
    if (!f) this.bad(`data for file id ${m.id}, which is not open`);
    const wire = dataBytes(m);
    // Raw data is written in the pieces it arrived in; only compressed data is joined (zstd wants it whole).
    let raw: Buffer | Buffer[] = m.parts ?? m.data;
    let input: Buffer | undefined;
    let decompressed: Buffer | undefined;
    if (m.zstd) {
      input = m.parts ? joinInto(this.pool.take(wire), m.parts) : m.data;
      decompressed = this.pool.take(m.rawLength);
      let n: number;
      try {
        n = this.dctx.decompress(decompressed, input);
      } catch (err) {
        this.bad(`a chunk of "${f.name}" at file offset ${f.size} does not decompress: ${(err as Error).message}`);
      }
      if (n !== m.rawLength) this.bad(`a chunk of "${f.name}" decompressed to ${n} bytes, ${m.rawLength} announced`);
      raw = decompressed;
    }
    if (f.expected !== undefined && f.size + m.rawLength > f.expected) {
      this.bad(`"${f.name}" is longer than its announced ${f.expected} bytes`);
    }
    if (f.pumped) {
      // In order behind what the pump took itself; the pump keeps the file's size and crc. A raw chunk in one piece
      // (every frame the pump hands over is one) comes with the crc its frame check computed.
      const pieces = Buffer.isBuffer(raw) ? [raw] : raw;
      const crc = pieces.length === 1 && !decompressed ? m.crc : undefined;
      try {
        for (const piece of pieces) {
          if (!this.pipe!.pump.write(f.id, piece, crc)) this.bad(`"${f.name}" is longer than its announced ${f.expected} bytes`);
        }
      } catch (err) {
        if (err instanceof ProtocolError) throw err;
        throw this.writeError(f, err);
      }
    } else {
      try {
        await f.out!.append(raw);
      } catch (err) {
        throw this.writeError(f, err);
      }
      // A raw chunk's crc was computed (once) when its frame was checked; a decompressed one is hashed here.
      f.crc = crc32Combine(f.crc, decompressed ? crc32(decompressed) : m.crc ?? crcOf(raw), m.rawLength);
      f.size += m.rawLength;
    }
    this.bytes += m.rawLength;
    const credit = 8 + wire;
    // On disk now (the page cache): pooled buffers serve the next frames.
    if (input) this.pool.give(input);
    else if (!m.parts) this.pool.give(m.data);
    if (decompressed) this.pool.give(decompressed);
    f.unflushed += m.rawLength;
    if (f.out && f.unflushed >= FLUSH_BEHIND && !f.flushing && !f.out.isDirect && this.durable) {
      f.unflushed = 0;
      f.flushing = f.fh.datasync().then(
        () => undefined,
        (err) => void (f.flushError ??= err),
      ).finally(() => (f.flushing = undefined));
    }
    await this.grant(credit);
  }

  private writeError(f: OpenFile, err: unknown): Error {
    const cause = toSysError(err, 'write', f.tmp, `write ${f.name}`);
    const hint = (err as NodeJS.ErrnoException).code === 'ENOSPC' ? `: the target's disk is full (${this.dir})` : '';
    return new GodwitError(`writing "${f.name}" on ${this.hostName()} failed${hint}`, { cause, code: (err as NodeJS.ErrnoException).code ?? 'EIO' });
  }

  private hostName(): string {
    return require('node:os').hostname();
  }

  private async endFile(m: Extract<Message, { type: FrameType.FileEnd }>): Promise<void> {
    const f = this.open.get(m.id);
    if (!f) this.bad(`end of file id ${m.id}, which is not open`);
    if (f.pumped) {
      // Every byte of it written (the pump's last block included): its size and crc, for the checks below.
      let done: { size: number; crc: number };
      try {
        done = this.pipe!.pump.finish(f.id);
      } catch (err) {
        throw this.writeError(f, err);
      } finally {
        f.pumped = false;
        this.pumpedFiles--;
      }
      f.size = done.size;
      f.crc = done.crc;
      await f.directFh?.close();
      delete f.directFh;
    }
    if (m.size !== f.size) this.bad(`"${f.name}" ended with ${f.size} bytes received, the sender says ${m.size}`);
    if (f.expected !== undefined && f.expected !== f.size) this.bad(`"${f.name}" has ${f.size} bytes, ${f.expected} were announced`);
    if ((m.crc >>> 0) !== (f.crc >>> 0)) {
      this.bad(`"${f.name}" checksum mismatch (crc32 ${hex(f.crc)} received, ${hex(m.crc)} sent): the data was corrupted`);
    }
    try {
      await f.out?.finish();
    } catch (err) {
      throw this.writeError(f, err);
    }
    await f.flushing;
    try {
      if (f.flushError !== undefined) throw f.flushError;
      if (this.durable) await f.fh.sync();
    } catch (err) {
      throw toSysError(err, 'fsync', f.tmp, `sync ${f.name}`);
    }
    await f.fh.close();
    this.open.delete(m.id);
    try {
      // link() never replaces an existing name (rename would): a planted file or symlink makes this fail.
      await fs.promises.link(f.tmp, f.final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') this.bad(`"${f.name}" already exists in the target directory (planted?)`);
      throw toSysError(err, 'link', f.final, `put ${f.name} in place`);
    }
    this.createdFiles.push(f.final);
    await fs.promises.unlink(f.tmp);
    this.createdFiles.splice(this.createdFiles.indexOf(f.tmp), 1);
    this.files++;
  }

  private async end(m: Extract<Message, { type: FrameType.End }>): Promise<void> {
    if (this.open.size > 0) this.bad(`the stream ended with files still open: ${[...this.open.values()].map((f) => f.name).join(', ')}`);
    if (m.files !== this.files || m.bytes !== this.bytes) {
      this.bad(`the sender says ${m.files} files / ${m.bytes} bytes, ${this.files} files / ${this.bytes} bytes arrived`);
    }
    const marker = path.join(this.dir, MARKER_NAME);
    await fs.promises.unlink(marker);
    this.createdFiles.splice(this.createdFiles.indexOf(marker), 1);
    // Directory entries (the links above) are durable only once their directories are synced.
    for (const d of this.durable ? [this.dir, ...this.createdDirs] : []) {
      const fh = await fs.promises.open(d, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    if (this.owed > 0) await this.returnCredit();
    await this.writer.send({ type: FrameType.Complete, files: this.files, bytes: this.bytes });
    this.log(`received ${this.files} files, ${this.bytes} bytes into ${this.dir}`);
  }

  /** Remove everything this stream created (files, subdirectories, and the directory if it made it). */
  async discard(): Promise<void> {
    for (const f of this.open.values()) {
      if (f.pumped) {
        try {
          this.pipe!.pump.drop(f.id);
        } catch {
          // the pump is closed already (the input was torn down): nothing of this file is written any more
        }
        f.pumped = false;
        this.pumpedFiles--;
      }
      await f.directFh?.close().catch(() => undefined);
      await f.out?.abandon();
      await f.flushing;
      await f.fh.close().catch(() => undefined);
    }
    this.open.clear();
    if (!this.prepared) return;
    if (this.createdRoot) {
      // Only this stream wrote into a directory it created 0700: remove it whole (rm does not follow symlinks).
      await fs.promises.rm(this.dir, { recursive: true, force: true });
      return;
    }
    for (const f of this.createdFiles.splice(0)) await fs.promises.unlink(f).catch(() => undefined);
    for (const d of this.createdDirs.splice(0).reverse()) await fs.promises.rm(d, { recursive: true, force: true });
  }
}

/** Start time of a process in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names one
 *  process for good (a pid alone may be reused). undefined if there is no such process. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

export type DiscardOutcome = 'removed' | 'busy' | 'none';

/**
 * Clean up after a receiver that died without cleaning up (SIGKILL, OOM): if `dir` carries the marker of a
 * receiver that no longer runs, or holds nothing but godwit's own names, remove what it wrote. A live
 * receiver's directory and a complete image set (no marker) are left alone. Run only once the receiver is gone.
 */
export async function discardStale(dir: string): Promise<DiscardOutcome> {
  dir = path.resolve(dir);
  const st = await fs.promises.lstat(dir).catch(() => undefined);
  if (!st || !st.isDirectory()) return 'none';
  let marker: { pid?: unknown; start?: unknown; createdRoot?: unknown } | undefined;
  try {
    const fh = await fs.promises.open(path.join(dir, MARKER_NAME), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const { bytesRead, buffer } = await fh.read(Buffer.alloc(4096), 0, 4096, 0);
      marker = JSON.parse(buffer.subarray(0, bytesRead).toString('utf8'));
    } finally {
      await fh.close();
    }
  } catch {
    marker = undefined;
  }
  if (marker && typeof marker.pid === 'number' && processStartTime(marker.pid) === marker.start) return 'busy';
  if (!marker) {
    // No (readable) marker: a receiver killed between making the directory and finishing its marker leaves
    // only godwit's own names (or nothing). Anything else (a complete image set) is not ours to remove.
    const entries = await fs.promises.readdir(dir);
    if (!entries.every((e) => e.startsWith(RESERVED_PREFIX))) return 'none';
    if (entries.length === 0) {
      await fs.promises.rmdir(dir);
      return 'removed';
    }
    marker = { createdRoot: true };
  }
  if (marker.createdRoot === true) {
    await fs.promises.rm(dir, { recursive: true, force: true });
  } else {
    for (const e of await fs.promises.readdir(dir)) await fs.promises.rm(path.join(dir, e), { recursive: true, force: true });
  }
  return 'removed';
}

/** parts copied one after another into dst (which has room for them all); returns the filled view. */
function joinInto(dst: Buffer, parts: readonly Buffer[]): Buffer {
  let at = 0;
  for (const p of parts) at += p.copy(dst, at);
  return dst.subarray(0, at);
}

function crcOf(data: Buffer | readonly Buffer[]): number {
  if (Buffer.isBuffer(data)) return crc32(data);
  let c = 0;
  for (const p of data) c = crc32(p, c);
  return c;
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function describe(err: unknown): string {
  const lines: string[] = [];
  let e: unknown = err;
  for (let i = 0; e && i < 6; i++) {
    lines.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? (e as { cause?: unknown }).cause : undefined;
  }
  return lines.join(': ');
}

/**
 * Receive one stream into opts.dir: the whole of `godwit receive`. On any failure the sender is told why,
 * everything written is removed, and the error is thrown.
 */
export async function receiveImages(opts: ReceiveOptions): Promise<ReceiveResult> {
  const r = new ImageReceiver(opts);
  let result: ReceiveResult;
  try {
    result = await r.receive();
  } catch (err) {
    r.reportError(err);
    await r.discard();
    r.endOutput();
    throw err;
  }
  // Complete was sent: the files are verified and durable, and stay whatever happens to the connection now.
  // The sender closes its side once it has read our Complete.
  try {
    const m = await r.next();
    if (m) opts.log?.(`ignoring ${FrameType[m.type]} after the end of the stream`);
  } catch (err) {
    opts.log?.(`the connection failed after the stream was complete (files kept): ${describe(err)}`);
  }
  r.endOutput();
  return result;
}
