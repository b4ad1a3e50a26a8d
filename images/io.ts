/**
 * Streaming image reader and writer: entries one at a time from a file or any byte stream (pipe,
 * socket, SSH channel), never the whole file in memory (a payload is read whole, bounded by its
 * length field and by the bytes actually there).
 */
import * as fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { once } from 'node:events';
import { ImageError } from '../util/errors';
import type { Extra, ImageEntry, Need, Parser } from './entry';
import { EntryEncoder, encodeHeader, parseImage, type ParseOptions } from './framing';
import { type ImageKind, kindByFileName, kindByName } from './registry';
import { EncodeError, type Msg } from './wire';

/** Pulls bytes from an async chunk source; keeps only what has not been consumed yet. */
class ChunkReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private done = false;
  offset = 0;

  constructor(private readonly source: AsyncIterator<Buffer | string>, private readonly file: string) {}

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.source.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    if (b.length > 0) {
      this.chunks.push(b);
      this.have += b.length;
    }
    return true;
  }

  async atEof(): Promise<boolean> {
    while (this.have === 0) if (!(await this.fill())) return true;
    return false;
  }

  async read(n: number, what: string): Promise<Buffer> {
    while (this.have < n) {
      if (!(await this.fill())) {
        throw new ImageError(this.file, this.offset, `expected ${what}, but the file ends after ${this.have} more bytes (truncated, or a wrong length field)`);
      }
    }
    return this.take(n);
  }

  async rest(): Promise<Buffer> {
    while (await this.fill()) { /* read to the end */ }
    return this.take(this.have);
  }

  private take(n: number): Buffer {
    let out: Buffer;
    if (this.chunks.length > 0 && this.chunks[0].length >= n) {
      out = this.chunks[0].subarray(0, n);
      this.chunks[0] = this.chunks[0].subarray(n);
      if (this.chunks[0].length === 0) this.chunks.shift();
    } else {
      out = Buffer.allocUnsafe(n);
      let pos = 0;
      while (pos < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - pos);
        c.copy(out, pos, 0, k);
        pos += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.have -= n;
    this.offset += n;
    return out;
  }
}

export interface OpenOptions {
  /** Expect this kind (registry name); default: from the file name. */
  kind?: string;
  /** Read buffer size. 256 KiB: large enough that pipe/queue payloads come in few reads. */
  chunkSize?: number;
}

/** Reads one image: `kind` is known after open(); iterate for the entries. */
export class ImageReader implements AsyncIterable<ImageEntry> {
  kind!: ImageKind;
  private pending?: ImageEntry;
  private finished = false;

  private constructor(private readonly parser: Parser, private readonly reader: ChunkReader, private readonly release: () => void) {}

  /** Stop reading early and release the file (iterating to the end, or an error, does this too). */
  close(): void {
    this.finished = true;
    this.pending = undefined;
    this.release();
  }

  /** Open a file, or read from a stream (then `name` names it in errors and picks the kind). */
  static async open(source: string | Readable, opts: OpenOptions & { name?: string } = {}): Promise<ImageReader> {
    const name = typeof source === 'string' ? source : opts.name ?? '<stream>';
    const stream = typeof source === 'string' ? fs.createReadStream(source, { highWaterMark: opts.chunkSize ?? 256 * 1024 }) : source;
    const it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    const reader = new ChunkReader(it, name);
    const parseOpts: ParseOptions = { file: name, ...(opts.kind !== undefined ? { kind: opts.kind } : {}) };
    let kind: ImageKind | undefined;
    const parser = parseImage(parseOpts, (k) => (kind = k));
    const r = new ImageReader(parser, reader, () => {
      if (typeof source === 'string') stream.destroy();
    });
    try {
      // run the parser until it has read the header (or produced the first entry)
      await r.step(() => kind !== undefined);
    } catch (e) {
      r.close();
      throw e;
    }
    r.kind = kind!;
    return r;
  }

  /** Offset in the file of the next unread byte. */
  get offset(): number {
    return this.reader.offset;
  }

  private answer: unknown;

  /** Drive the parser until `stop()` or an entry is ready. */
  private async step(stop: () => boolean): Promise<void> {
    for (;;) {
      if (stop()) return;
      const r = this.parser.next(this.answer);
      if (r.done) {
        this.finished = true;
        return;
      }
      const need: Need = r.value;
      switch (need.op) {
        case 'eof': this.answer = await this.reader.atEof(); break;
        case 'read': this.answer = await this.reader.read(need.n, need.what); break;
        case 'rest': this.answer = await this.reader.rest(); break;
        case 'entry':
          this.answer = undefined;
          this.pending = need.entry;
          return;
      }
    }
  }

  /** The next entry, or undefined at the end. */
  async next(): Promise<ImageEntry | undefined> {
    if (this.pending === undefined && !this.finished) {
      try {
        await this.step(() => false);
      } catch (e) {
        this.close();
        this.finished = true;
        throw e;
      }
    }
    const e = this.pending;
    this.pending = undefined;
    if (e === undefined) this.close();
    return e;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ImageEntry> {
    try {
      for (let e = await this.next(); e !== undefined; e = await this.next()) yield e;
    } finally {
      this.close();
    }
  }

  /** All remaining entries (for small images). */
  async readAll(): Promise<ImageEntry[]> {
    const out: ImageEntry[] = [];
    for await (const e of this) out.push(e);
    return out;
  }
}

/**
 * Writes one image entry by entry. Small writes are gathered into 256 KiB blocks; payload Buffers of
 * that size or more go straight through.
 */
export class ImageWriter {
  private buf: Buffer[] = [];
  private buffered = 0;
  private closed = false;
  private readonly encoder: EntryEncoder;
  bytesWritten = 0;

  private constructor(
    readonly kind: ImageKind,
    readonly name: string,
    private readonly sink: { write(b: Buffer): Promise<void>; end(): Promise<void> },
  ) {
    this.encoder = new EntryEncoder(kind, name);
    this.push(encodeHeader(kind));
  }

  /** Create (truncate) a file; the kind comes from `kind` or from the file name. */
  static async create(file: string, kind?: string): Promise<ImageWriter> {
    const k = resolveKind(file, kind);
    // libuv opens every file with O_CLOEXEC
    const fh = await fs.promises.open(file, 'w', 0o600);
    return new ImageWriter(k, file, {
      write: async (b) => { await fh.write(b); },
      end: async () => { await fh.close(); },
    });
  }

  /** Write into a stream (the stream is ended by close()). */
  static toStream(stream: Writable, kind: string, name = '<stream>'): ImageWriter {
    const k = resolveKind(name, kind);
    return new ImageWriter(k, name, {
      write: async (b) => { if (!stream.write(b)) await once(stream, 'drain'); },
      end: async () => { stream.end(); await once(stream, 'finish'); },
    });
  }

  private push(b: Buffer): void {
    this.buf.push(b);
    this.buffered += b.length;
    this.bytesWritten += b.length;
  }

  private async flushIfFull(): Promise<void> {
    if (this.buffered >= 256 * 1024) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.buffered === 0) return;
    const b = this.buf.length === 1 ? this.buf[0] : Buffer.concat(this.buf);
    this.buf = [];
    this.buffered = 0;
    await this.sink.write(b);
  }

  /** Write one entry (and the payload its kind carries after it). */
  async write(msg: Msg, extra?: Extra): Promise<void> {
    if (this.closed) throw new EncodeError(`${this.name}: image writer is closed`);
    for (const part of this.encoder.encode(msg, extra)) this.push(part);
    await this.flushIfFull();
  }

  async writeEntry(e: ImageEntry): Promise<void> {
    if (this.closed) throw new EncodeError(`${this.name}: image writer is closed`);
    for (const part of this.encoder.encode(e.msg, e.extra, e.type)) this.push(part);
    await this.flushIfFull();
  }

  /** Raw bytes straight into the file (for payloads streamed by the caller after write()). */
  async writeRaw(b: Buffer): Promise<void> {
    if (this.closed) throw new EncodeError(`${this.name}: image writer is closed`);
    this.push(b);
    await this.flushIfFull();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flush();
    } finally {
      await this.sink.end();
    }
  }
}

function resolveKind(file: string, kind?: string): ImageKind {
  const k = kind !== undefined ? kindByName(kind) : kindByFileName(file);
  if (!k) throw new EncodeError(kind !== undefined ? `unknown image kind '${kind}'` : `${file}: cannot tell the image kind from the name; pass one`);
  if (k.magic === 0) throw new EncodeError(`${k.kind} images are raw data; write them as plain files`);
  return k;
}

/** Read every entry of an image file (streaming under the hood). */
export async function readImageFile(file: string, opts: OpenOptions = {}): Promise<{ kind: ImageKind; entries: ImageEntry[] }> {
  const r = await ImageReader.open(file, opts);
  return { kind: r.kind, entries: await r.readAll() };
}

/** Write a whole image file. */
export async function writeImageFile(file: string, kind: string, entries: Array<ImageEntry>): Promise<void> {
  const w = await ImageWriter.create(file, kind);
  try {
    for (const e of entries) await w.writeEntry(e);
  } finally {
    await w.close();
  }
}
