/**
 * On-disk layout of godwit's page container (pages-N.gwz), the compressed sibling of CRIU's pages-N.img.
 *
 * A container holds exactly the byte stream CRIU would write to pages-N.img (pages in pagemap order), cut into
 * chunks of at most `chunkSize` bytes, each compressed as its own zstd frame, so any page range can be read by
 * decompressing only the chunks that cover it. All integers are little-endian.
 *
 *   header   32 B   "GWZPAGES", version u16, codec u16, chunkSize u32, level i32, flags u32, reserved u32, crc32 u32
 *   chunk*   32 B   "GWCK", index u32, uncompressed offset u64, uncompressed len u32, compressed len u32,
 *                   crc32 of the compressed bytes u32, crc32 of this header u32
 *            ...    the compressed bytes (one zstd frame)
 *   index    8 B    "GWIX", count u32
 *            32 B × count: file offset u64, uncompressed offset u64, uncompressed len u32, compressed len u32,
 *                   crc32 u32, reserved u32
 *   trailer  32 B   "GWZTRAIL", index offset u64, uncompressed total u64, crc32 of the index u32, crc32 of this u32
 *
 * Every chunk carries its own header so a stream (a pipe, a transfer) can be checked without the index; the index
 * and trailer at the end give random access and prove the file is complete: a truncated file has no trailer.
 * Checksums: each header its own crc32, and each chunk's compressed bytes a crc32, checked before decompressing. A
 * frame may also carry zstd's content checksum (XXH64 of the uncompressed bytes, which zstd then checks); godwit's
 * writers no longer ask for it (images/container-worker.ts says why), and readers accept frames with or without.
 */
import { ImageError } from '../util/errors';
import { crc32 } from './crc32';

export const CONTAINER_MAGIC = Buffer.from('GWZPAGES', 'latin1');
export const TRAILER_MAGIC = Buffer.from('GWZTRAIL', 'latin1');
export const CHUNK_MAGIC = 0x4b435747; // "GWCK" read as u32 LE
export const INDEX_MAGIC = 0x58495747; // "GWIX" read as u32 LE
export const CONTAINER_VERSION = 1;
export const CODEC_ZSTD = 1;

export const HEADER_SIZE = 32;
export const CHUNK_HEADER_SIZE = 32;
export const INDEX_HEAD_SIZE = 8;
export const INDEX_ENTRY_SIZE = 32;
export const TRAILER_SIZE = 32;

/** Largest chunk a reader accepts: bounds every allocation a damaged length field could ask for. */
export const MAX_CHUNK_SIZE = 64 << 20;

/** File name suffix of a container beside CRIU's pages-N.img. */
export const CONTAINER_SUFFIX = '.gwz';

export function containerName(pagesId: number): string {
  return `pages-${pagesId}${CONTAINER_SUFFIX}`;
}

export function plainPagesName(pagesId: number): string {
  return `pages-${pagesId}.img`;
}

export interface ContainerHeader {
  version: number;
  codec: number;
  chunkSize: number;
  level: number;
  flags: number;
}

export interface ChunkInfo {
  /** Position of the chunk's header in the file. */
  fileOffset: number;
  /** Position of the chunk's bytes in the uncompressed stream. */
  offset: number;
  length: number;
  compressedLength: number;
  crc: number;
}

export interface ContainerTrailer {
  indexOffset: number;
  totalLength: number;
  indexCrc: number;
}

/** u64 field read as a number; image sizes stay far below 2^53, a larger value is damage. */
function readU64(buf: Buffer, at: number, file: string, fileOffset: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ImageError(file, fileOffset + at, `${what} is ${v}, larger than any image can be (damaged field)`);
  }
  return Number(v);
}

export function encodeHeader(h: ContainerHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  CONTAINER_MAGIC.copy(b, 0);
  b.writeUInt16LE(h.version, 8);
  b.writeUInt16LE(h.codec, 10);
  b.writeUInt32LE(h.chunkSize, 12);
  b.writeInt32LE(h.level, 16);
  b.writeUInt32LE(h.flags, 20);
  b.writeUInt32LE(0, 24);
  b.writeUInt32LE(crc32(b.subarray(0, 28)), 28);
  return b;
}

export function decodeHeader(b: Buffer, file: string): ContainerHeader {
  if (b.length < HEADER_SIZE) {
    throw new ImageError(file, b.length, `file is ${b.length} bytes, shorter than the ${HEADER_SIZE}-byte container header (truncated)`);
  }
  if (!b.subarray(0, 8).equals(CONTAINER_MAGIC)) {
    throw new ImageError(file, 0, `expected container magic "GWZPAGES", found ${JSON.stringify(b.subarray(0, 8).toString('latin1'))} (not a godwit page container)`);
  }
  const want = b.readUInt32LE(28);
  const got = crc32(b.subarray(0, 28));
  if (want !== got) throw new ImageError(file, 28, `container header checksum mismatch: stored ${hex(want)}, computed ${hex(got)}`);
  const h: ContainerHeader = {
    version: b.readUInt16LE(8),
    codec: b.readUInt16LE(10),
    chunkSize: b.readUInt32LE(12),
    level: b.readInt32LE(16),
    flags: b.readUInt32LE(20),
  };
  if (h.version !== CONTAINER_VERSION) {
    throw new ImageError(file, 8, `container version ${h.version} is not supported (this godwit reads version ${CONTAINER_VERSION})`);
  }
  if (h.codec !== CODEC_ZSTD) throw new ImageError(file, 10, `unknown codec ${h.codec} (expected ${CODEC_ZSTD}: zstd)`);
  if (h.chunkSize === 0 || h.chunkSize > MAX_CHUNK_SIZE) {
    throw new ImageError(file, 12, `chunk size ${h.chunkSize} outside 1..${MAX_CHUNK_SIZE}`);
  }
  return h;
}

export function encodeChunkHeader(index: number, c: Omit<ChunkInfo, 'fileOffset'>, into?: Buffer): Buffer {
  const b = into ?? Buffer.alloc(CHUNK_HEADER_SIZE);
  b.writeUInt32LE(CHUNK_MAGIC, 0);
  b.writeUInt32LE(index, 4);
  b.writeBigUInt64LE(BigInt(c.offset), 8);
  b.writeUInt32LE(c.length, 16);
  b.writeUInt32LE(c.compressedLength, 20);
  b.writeUInt32LE(c.crc >>> 0, 24);
  b.writeUInt32LE(crc32(b.subarray(0, 28)), 28);
  return b;
}

export interface DecodedChunkHeader extends Omit<ChunkInfo, 'fileOffset'> {
  index: number;
}

/** Decodes and self-checks a chunk header found at `fileOffset`; does not compare it with any index. */
export function decodeChunkHeader(b: Buffer, file: string, fileOffset: number, chunkSize: number): DecodedChunkHeader {
  if (b.length < CHUNK_HEADER_SIZE) {
    throw new ImageError(file, fileOffset + b.length, `file ends inside a chunk header (${b.length} of ${CHUNK_HEADER_SIZE} bytes): truncated`);
  }
  const magic = b.readUInt32LE(0);
  if (magic !== CHUNK_MAGIC) {
    throw new ImageError(file, fileOffset, `expected chunk header magic "GWCK", found 0x${hex(magic)}`);
  }
  const want = b.readUInt32LE(28);
  const got = crc32(b.subarray(0, 28));
  if (want !== got) {
    throw new ImageError(file, fileOffset + 28, `chunk header checksum mismatch: stored ${hex(want)}, computed ${hex(got)}`);
  }
  const h: DecodedChunkHeader = {
    index: b.readUInt32LE(4),
    offset: readU64(b, 8, file, fileOffset, 'chunk offset'),
    length: b.readUInt32LE(16),
    compressedLength: b.readUInt32LE(20),
    crc: b.readUInt32LE(24),
  };
  checkChunkLengths(h, file, fileOffset + 16, chunkSize);
  return h;
}

/** zstd's worst case for `n` input bytes (ZSTD_COMPRESSBOUND), so a reader can reject absurd lengths. */
export function compressBound(n: number): number {
  return n + (n >>> 8) + (n < 128 << 10 ? ((128 << 10) - n) >>> 11 : 0);
}

function checkChunkLengths(c: { length: number; compressedLength: number }, file: string, at: number, chunkSize: number): void {
  if (c.length === 0 || c.length > chunkSize) {
    throw new ImageError(file, at, `chunk length ${c.length} outside 1..${chunkSize} (the container's chunk size)`);
  }
  // A zstd frame has at least a few bytes of header; at most compressBound plus the frame's 4-byte checksum.
  if (c.compressedLength === 0 || c.compressedLength > compressBound(chunkSize) + 4) {
    throw new ImageError(file, at + 4, `compressed chunk length ${c.compressedLength} outside 1..${compressBound(chunkSize) + 4}`);
  }
}

export function encodeIndex(chunks: ChunkInfo[]): Buffer {
  const b = Buffer.alloc(INDEX_HEAD_SIZE + chunks.length * INDEX_ENTRY_SIZE);
  b.writeUInt32LE(INDEX_MAGIC, 0);
  b.writeUInt32LE(chunks.length, 4);
  let at = INDEX_HEAD_SIZE;
  for (const c of chunks) {
    b.writeBigUInt64LE(BigInt(c.fileOffset), at);
    b.writeBigUInt64LE(BigInt(c.offset), at + 8);
    b.writeUInt32LE(c.length, at + 16);
    b.writeUInt32LE(c.compressedLength, at + 20);
    b.writeUInt32LE(c.crc >>> 0, at + 24);
    b.writeUInt32LE(0, at + 28);
    at += INDEX_ENTRY_SIZE;
  }
  return b;
}

/**
 * Decodes the index found at `indexOffset` and checks that it describes a gapless sequence of chunks that starts
 * right after the header and ends right at the index, with offsets that add up to the trailer's total.
 */
export function decodeIndex(b: Buffer, file: string, indexOffset: number, header: ContainerHeader, trailer: ContainerTrailer): ChunkInfo[] {
  if (b.readUInt32LE(0) !== INDEX_MAGIC) {
    throw new ImageError(file, indexOffset, `expected index magic "GWIX" where the trailer says the index starts, found 0x${hex(b.readUInt32LE(0))}`);
  }
  const count = b.readUInt32LE(4);
  const expected = (b.length - INDEX_HEAD_SIZE) / INDEX_ENTRY_SIZE;
  if (count !== expected) {
    throw new ImageError(file, indexOffset + 4, `index says ${count} chunks but the space between index and trailer holds ${expected}`);
  }
  const chunks: ChunkInfo[] = [];
  let fileOffset = HEADER_SIZE;
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const at = INDEX_HEAD_SIZE + i * INDEX_ENTRY_SIZE;
    const pos = indexOffset + at;
    const c: ChunkInfo = {
      fileOffset: readU64(b, at, file, indexOffset, 'chunk file offset'),
      offset: readU64(b, at + 8, file, indexOffset, 'chunk offset'),
      length: b.readUInt32LE(at + 16),
      compressedLength: b.readUInt32LE(at + 20),
      crc: b.readUInt32LE(at + 24),
    };
    if (c.fileOffset !== fileOffset) {
      throw new ImageError(file, pos, `index entry ${i}: chunk at file offset ${c.fileOffset}, expected ${fileOffset} (end of the previous chunk)`);
    }
    if (c.offset !== offset) {
      throw new ImageError(file, pos + 8, `index entry ${i}: chunk covers data offset ${c.offset}, expected ${offset} (end of the previous chunk)`);
    }
    checkChunkLengths(c, file, pos + 16, header.chunkSize);
    chunks.push(c);
    fileOffset += CHUNK_HEADER_SIZE + c.compressedLength;
    offset += c.length;
  }
  if (fileOffset !== indexOffset) {
    throw new ImageError(file, indexOffset, `chunks end at ${fileOffset} but the index starts at ${indexOffset}`);
  }
  if (offset !== trailer.totalLength) {
    throw new ImageError(file, indexOffset, `chunks hold ${offset} bytes but the trailer says ${trailer.totalLength}`);
  }
  return chunks;
}

export function encodeTrailer(t: ContainerTrailer): Buffer {
  const b = Buffer.alloc(TRAILER_SIZE);
  TRAILER_MAGIC.copy(b, 0);
  b.writeBigUInt64LE(BigInt(t.indexOffset), 8);
  b.writeBigUInt64LE(BigInt(t.totalLength), 16);
  b.writeUInt32LE(t.indexCrc >>> 0, 24);
  b.writeUInt32LE(crc32(b.subarray(0, 28)), 28);
  return b;
}

export function decodeTrailer(b: Buffer, file: string, fileSize: number): ContainerTrailer {
  const at = fileSize - TRAILER_SIZE;
  if (!b.subarray(0, 8).equals(TRAILER_MAGIC)) {
    throw new ImageError(file, at, `expected trailer magic "GWZTRAIL" in the last ${TRAILER_SIZE} bytes: the file is truncated or was not finished`);
  }
  const want = b.readUInt32LE(28);
  const got = crc32(b.subarray(0, 28));
  if (want !== got) throw new ImageError(file, at + 28, `trailer checksum mismatch: stored ${hex(want)}, computed ${hex(got)}`);
  const t: ContainerTrailer = {
    indexOffset: readU64(b, 8, file, at, 'index offset'),
    totalLength: readU64(b, 16, file, at, 'uncompressed total'),
    indexCrc: b.readUInt32LE(24),
  };
  const indexBytes = at - t.indexOffset;
  if (t.indexOffset < HEADER_SIZE || indexBytes < INDEX_HEAD_SIZE || (indexBytes - INDEX_HEAD_SIZE) % INDEX_ENTRY_SIZE !== 0) {
    throw new ImageError(file, at + 8, `index offset ${t.indexOffset} does not leave room for an index between the header and the trailer at ${at}`);
  }
  return t;
}

export function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}
