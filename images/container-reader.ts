/**
 * Readers of page data: godwit's container (pages-N.gwz) and CRIU's plain pages-N.img behind one interface, with
 * random access ("bytes X..Y of the page stream") and an in-order stream.
 *
 * The container reader trusts nothing it has not checked: the trailer proves the file is complete, the index is
 * checked to describe a gapless run of chunks, each chunk header must match its index entry (a reordered or
 * missing chunk shows up here), and its bytes their crc32 (and zstd checks a content checksum where a frame has one). No
 * allocation is larger than the file or than the container's chunk size (itself capped at MAX_CHUNK_SIZE).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as binding from 'zstd-napi/binding';
import { GodwitError, ImageError } from '../util/errors';
import { toSysError } from './atomic-file';
import { crc32 } from './crc32';
import {
  CHUNK_HEADER_SIZE,
  ChunkInfo,
  ContainerHeader,
  ContainerTrailer,
  HEADER_SIZE,
  INDEX_HEAD_SIZE,
  TRAILER_SIZE,
  containerName,
  decodeChunkHeader,
  decodeHeader,
  decodeIndex,
  decodeTrailer,
  hex,
  plainPagesName,
} from './container-format';

/** Page data of one pages file, whatever its on-disk form. Offsets are in the uncompressed page stream. */
export interface PageDataReader {
  /** File name (for messages). */
  readonly name: string;
  /** Bytes of page data. */
  readonly size: number;
  /** Reads `length` bytes at `offset` of the page stream; an ImageError if that is beyond the data. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Copies page data at `offset` into `dst` (fills it entirely). */
  readInto(dst: Uint8Array, offset: number): Promise<void>;
  /** The page data from `start` to `end`, in order, in pieces of at most a chunk (or 1 MiB for plain files). */
  stream(start?: number, end?: number): AsyncIterableIterator<Buffer>;
  close(): Promise<void>;
}

/** Chunks kept decompressed for page-by-page random reads (4 × 256 KiB by default). */
const CACHE_CHUNKS = 4;
/** Compressed bytes per read of the container stream (about 16 chunks of page data). */
const STREAM_SPAN = 2 << 20;
/** Read size of the plain reader's stream: large reads, few syscalls. */
const PLAIN_STREAM_PIECE = 1 << 20;

async function readExactly(fh: fsp.FileHandle, buf: Buffer, position: number, file: string): Promise<number> {
  let got = 0;
  try {
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
  } catch (err) {
    throw toSysError(err, `read ${path.basename(file)}`, file);
  }
  return got;
}

function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new GodwitError(`${name}: bad read range offset ${offset} length ${length}`);
  }
  if (offset + length > size) {
    throw new ImageError(name, offset, `page data ends at ${size} but bytes ${offset}..${offset + length} were asked for (pagemap and pages file disagree)`);
  }
}

export class ContainerReader implements PageDataReader {
  readonly name: string;
  readonly size: number;
  readonly header: ContainerHeader;
  readonly chunks: readonly ChunkInfo[];
  readonly fileSize: number;
  private readonly cache = new Map<number, Buffer>();
  private readonly dctx = new binding.DCtx();

  private constructor(
    private readonly fh: fsp.FileHandle,
    readonly filePath: string,
    fileSize: number,
    header: ContainerHeader,
    trailer: ContainerTrailer,
    chunks: ChunkInfo[],
  ) {
    this.name = path.basename(filePath);
    this.fileSize = fileSize;
    this.header = header;
    this.size = trailer.totalLength;
    this.chunks = chunks;
  }

  static async open(filePath: string): Promise<ContainerReader> {
    const name = path.basename(filePath);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(filePath, fs.constants.O_RDONLY);
    } catch (err) {
      throw toSysError(err, `open page container ${name}`, filePath);
    }
    try {
      const { size: fileSize } = await fh.stat();
      const hb = Buffer.alloc(HEADER_SIZE);
      const hn = await readExactly(fh, hb, 0, filePath);
      const header = decodeHeader(hb.subarray(0, hn), name);
      const minSize = HEADER_SIZE + INDEX_HEAD_SIZE + TRAILER_SIZE;
      if (fileSize < minSize) {
        throw new ImageError(name, fileSize, `file is ${fileSize} bytes, less than the ${minSize} an empty container has: truncated`);
      }
      const tb = Buffer.alloc(TRAILER_SIZE);
      await readExactly(fh, tb, fileSize - TRAILER_SIZE, filePath);
      const trailer = decodeTrailer(tb, name, fileSize);
      // Bounded by the file size: the trailer was checked to point inside the file.
      const ib = Buffer.alloc(fileSize - TRAILER_SIZE - trailer.indexOffset);
      await readExactly(fh, ib, trailer.indexOffset, filePath);
      const icrc = crc32(ib);
      if (icrc !== trailer.indexCrc) {
        throw new ImageError(name, trailer.indexOffset, `index checksum mismatch: trailer says ${hex(trailer.indexCrc)}, index has ${hex(icrc)}`);
      }
      const chunks = decodeIndex(ib, name, trailer.indexOffset, header, trailer);
      return new ContainerReader(fh, filePath, fileSize, header, trailer, chunks);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** Index of the chunk holding byte `offset` of the page stream. */
  chunkAt(offset: number): number {
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.chunks[mid]!.offset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Reads, checks and decompresses chunk `i` (uncached). */
  async loadChunk(i: number): Promise<Buffer> {
    const c = this.chunks[i];
    if (!c) throw new GodwitError(`${this.name}: no chunk ${i} (the container has ${this.chunks.length})`);
    const raw = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + c.compressedLength);
    const got = await readExactly(this.fh, raw, c.fileOffset, this.filePath);
    if (got < raw.length) {
      throw new ImageError(this.name, c.fileOffset + got, `file ends inside chunk ${i} (the file changed since it was opened?)`);
    }
    return this.decodeChunk(i, raw);
  }

  /** Checks chunk `i` given its header and bytes as read from the file, and decompresses it. */
  decodeChunk(i: number, raw: Buffer): Buffer {
    const c = this.chunks[i]!;
    const h = decodeChunkHeader(raw.subarray(0, CHUNK_HEADER_SIZE), this.name, c.fileOffset, this.header.chunkSize);
    if (h.index !== i) {
      throw new ImageError(this.name, c.fileOffset, `found chunk ${h.index} where the index has chunk ${i} (chunks reordered, missing or duplicated)`);
    }
    if (h.offset !== c.offset || h.length !== c.length || h.compressedLength !== c.compressedLength || h.crc !== c.crc) {
      throw new ImageError(
        this.name,
        c.fileOffset,
        `chunk ${i} header (data offset ${h.offset}, ${h.length} bytes, ${h.compressedLength} compressed, crc ${hex(h.crc)}) does not match its index entry (${c.offset}, ${c.length}, ${c.compressedLength}, ${hex(c.crc)})`,
      );
    }
    const data = raw.subarray(CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + c.compressedLength);
    const got = crc32(data);
    if (got !== c.crc) {
      throw new ImageError(this.name, c.fileOffset + CHUNK_HEADER_SIZE, `chunk ${i} checksum mismatch: expected crc32 ${hex(c.crc)}, the ${c.compressedLength} bytes give ${hex(got)}`);
    }
    const out = Buffer.allocUnsafe(c.length);
    let n: number;
    try {
      n = this.dctx.decompress(out, data);
    } catch (err) {
      throw new ImageError(this.name, c.fileOffset + CHUNK_HEADER_SIZE, `chunk ${i} does not decompress (expected a zstd frame of ${c.length} bytes): ${(err as Error).message}`, { cause: err });
    }
    if (n !== c.length) {
      throw new ImageError(this.name, c.fileOffset + CHUNK_HEADER_SIZE, `chunk ${i} decompresses to ${n} bytes, expected ${c.length}`);
    }
    return out;
  }

  private async chunk(i: number): Promise<Buffer> {
    const hit = this.cache.get(i);
    if (hit) {
      this.cache.delete(i);
      this.cache.set(i, hit); // most recently used last
      return hit;
    }
    const data = await this.loadChunk(i);
    this.cache.set(i, data);
    if (this.cache.size > CACHE_CHUNKS) this.cache.delete(this.cache.keys().next().value!);
    return data;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.name, this.size, offset, length);
    const dst = Buffer.allocUnsafe(length);
    await this.readInto(dst, offset);
    return dst;
  }

  async readInto(dst: Uint8Array, offset: number): Promise<void> {
    checkRange(this.name, this.size, offset, dst.length);
    let done = 0;
    while (done < dst.length) {
      const at = offset + done;
      const i = this.chunkAt(at);
      const c = this.chunks[i]!;
      const data = await this.chunk(i);
      const from = at - c.offset;
      const n = Math.min(c.length - from, dst.length - done);
      dst.set(data.subarray(from, from + n), done);
      done += n;
    }
  }

  /** Raw bytes (headers + frames) of chunks first..last, in one read. */
  private async readSpan(first: number, last: number): Promise<Buffer> {
    const a = this.chunks[first]!;
    const b = this.chunks[last]!;
    const buf = Buffer.allocUnsafe(b.fileOffset + CHUNK_HEADER_SIZE + b.compressedLength - a.fileOffset);
    const got = await readExactly(this.fh, buf, a.fileOffset, this.filePath);
    if (got < buf.length) throw new ImageError(this.name, a.fileOffset + got, `file ends inside chunk ${first}..${last} (the file changed since it was opened?)`);
    return buf;
  }

  /**
   * In order, checking every chunk. Chunks are read in spans of about STREAM_SPAN bytes, the next span's read
   * in flight while this one is decompressed, so I/O and decompression overlap.
   */
  async *stream(start = 0, end = this.size): AsyncIterableIterator<Buffer> {
    checkRange(this.name, this.size, start, end - start);
    if (start === end) return;
    const first = this.chunkAt(start);
    const last = this.chunkAt(end - 1);
    const spans: Array<[number, number]> = [];
    for (let i = first; i <= last; ) {
      let j = i;
      let bytes = this.chunks[i]!.compressedLength;
      while (j < last && bytes < STREAM_SPAN) bytes += this.chunks[++j]!.compressedLength;
      spans.push([i, j]);
      i = j + 1;
    }
    let next: Promise<Buffer> | undefined = this.readSpan(...spans[0]!);
    for (let s = 0; s < spans.length; s++) {
      const raw = await next!;
      next = s + 1 < spans.length ? this.readSpan(...spans[s + 1]!) : undefined;
      next?.catch(() => undefined); // awaited on the next turn; a failure surfaces there
      const [i0, i1] = spans[s]!;
      const base = this.chunks[i0]!.fileOffset;
      for (let i = i0; i <= i1; i++) {
        const c = this.chunks[i]!;
        const at = c.fileOffset - base;
        const data = this.decodeChunk(i, raw.subarray(at, at + CHUNK_HEADER_SIZE + c.compressedLength));
        const from = Math.max(start - c.offset, 0);
        const to = Math.min(end - c.offset, c.length);
        yield from === 0 && to === c.length ? data : data.subarray(from, to);
      }
    }
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.fh.close().catch(() => undefined);
  }
}

export class PlainPagesReader implements PageDataReader {
  readonly name: string;
  private constructor(
    private readonly fh: fsp.FileHandle,
    readonly filePath: string,
    readonly size: number,
  ) {
    this.name = path.basename(filePath);
  }

  static async open(filePath: string): Promise<PlainPagesReader> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(filePath, fs.constants.O_RDONLY);
    } catch (err) {
      throw toSysError(err, `open pages file ${path.basename(filePath)}`, filePath);
    }
    const { size } = await fh.stat();
    return new PlainPagesReader(fh, filePath, size);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.name, this.size, offset, length);
    const dst = Buffer.allocUnsafe(length);
    await this.readInto(dst, offset);
    return dst;
  }

  async readInto(dst: Uint8Array, offset: number): Promise<void> {
    checkRange(this.name, this.size, offset, dst.length);
    const b = Buffer.from(dst.buffer, dst.byteOffset, dst.length);
    const got = await readExactly(this.fh, b, offset, this.filePath);
    if (got < dst.length) throw new ImageError(this.name, offset + got, `file ends at ${offset + got}, expected ${dst.length - got} more bytes (truncated while open?)`);
  }

  async *stream(start = 0, end = this.size): AsyncIterableIterator<Buffer> {
    checkRange(this.name, this.size, start, end - start);
    for (let at = start; at < end; at += PLAIN_STREAM_PIECE) {
      yield await this.read(at, Math.min(PLAIN_STREAM_PIECE, end - at));
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

/** Opens a pages file by path, by its name: *.gwz is a container, anything else plain CRIU pages. */
export function openPagesFile(filePath: string): Promise<PageDataReader> {
  return filePath.endsWith('.gwz') ? ContainerReader.open(filePath) : PlainPagesReader.open(filePath);
}

/**
 * Opens the page data of `pages-<pagesId>` in an image directory: CRIU's pages-N.img when present (no
 * decompression needed), else godwit's pages-N.gwz.
 */
export async function openPages(dir: string, pagesId: number): Promise<PageDataReader> {
  const plain = path.join(dir, plainPagesName(pagesId));
  const packed = path.join(dir, containerName(pagesId));
  if (fs.existsSync(plain)) return PlainPagesReader.open(plain);
  if (fs.existsSync(packed)) return ContainerReader.open(packed);
  throw new ImageError(plainPagesName(pagesId), 0, `neither ${plainPagesName(pagesId)} nor ${containerName(pagesId)} exists in ${dir} (a pagemap refers to pages id ${pagesId})`);
}
