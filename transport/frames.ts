/**
 * godwit's image stream: the wire format between `godwit send` (or migrate's source) and `godwit receive`.
 *
 * Each direction starts with an 8-byte preamble and is then a sequence of frames:
 *
 *   preamble  89 'G' 'O' 'D' 'W' 'I' 'T' 0a      (a high byte and a newline: text mangling and a
 *                                                  shell's "command not found" are caught at once)
 *   frame     u8 type | u8 flags | u16 zero | u32 payload length | u32 crc32(payload) | u32 crc32(bytes 0..11)
 *             payload (length bytes)              all integers little-endian
 *
 * The header has its own checksum so that a damaged length is caught before it is trusted. Every payload is
 * checksummed (crc32: 2.9 GB/s here against 1.4 GB/s for sha256 with SHA-NI; SSH already authenticates the
 * stream, so the checksums guard against bugs, memory and disk errors, not against an adversary).
 *
 * The parser treats its input as untrusted: lengths are bounded per frame type before anything is allocated,
 * every field is validated, and any problem is a ProtocolError naming the stream, the byte offset and the frame.
 */
import { ImageError } from '../util/errors';
import { crc32, crc32Combine } from '../images/crc32';

export const PREAMBLE = Buffer.from([0x89, 0x47, 0x4f, 0x44, 0x57, 0x49, 0x54, 0x0a]);
/** Bumped on any incompatible change of the frames below; a peer must speak exactly this version. */
export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 16;

/** Raw (uncompressed) bytes per data chunk the sender cuts: large enough to amortise the per-frame cost
 *  (one zstd call, one crc, one write), small enough that a file in flight holds little memory. */
export const DEFAULT_CHUNK_SIZE = 1 << 20;
/** The most raw bytes a receiver accepts in one chunk (and so the most it ever allocates for one). */
export const MAX_CHUNK_SIZE = 4 << 20;
/** zstd's worst case for MAX_CHUNK_SIZE is +0.4%; a chunk that would grow is sent raw instead. */
const MAX_DATA_PAYLOAD = 8 + MAX_CHUNK_SIZE;
const MAX_NAME_BYTES = 4096;
const MAX_COMPONENT_BYTES = 255;
const MAX_NAME_DEPTH = 32;
const MAX_TEXT_PAYLOAD = 16 << 10;

export enum FrameType {
  // both directions
  Hello = 1,
  Abort = 6,
  // sender -> receiver
  FileBegin = 2,
  Data = 3,
  FileEnd = 4,
  End = 5,
  Commit = 7,
  // receiver -> sender
  Credit = 16,
  Error = 17,
  Complete = 18,
  Ready = 19,
  Running = 20,
  /** A migration's target holds its memory reserve (bytes), faulted in: the source may freeze. Only to a sender
   *  whose hello lists the 'reserve' capability. */
  Reserved = 21,
}

export const DATA_ZSTD = 1;
const SIZE_KNOWN = 1;

/** Who writes a stream: the sender writes files, the receiver writes control messages back. */
export type Role = 'sender' | 'receiver';

const allowed: Record<Role, Set<FrameType>> = {
  sender: new Set([FrameType.Hello, FrameType.Abort, FrameType.FileBegin, FrameType.Data, FrameType.FileEnd,
    FrameType.End, FrameType.Commit]),
  receiver: new Set([FrameType.Hello, FrameType.Abort, FrameType.Credit, FrameType.Error, FrameType.Complete,
    FrameType.Ready, FrameType.Running, FrameType.Reserved]),
};

const maxPayload: Record<FrameType, number> = {
  [FrameType.Hello]: 4096,
  [FrameType.Abort]: MAX_TEXT_PAYLOAD,
  [FrameType.FileBegin]: 16 + MAX_NAME_BYTES,
  [FrameType.Data]: MAX_DATA_PAYLOAD,
  [FrameType.FileEnd]: 16,
  [FrameType.End]: 12,
  [FrameType.Commit]: 0,
  [FrameType.Credit]: 4,
  [FrameType.Error]: MAX_TEXT_PAYLOAD,
  [FrameType.Complete]: 12,
  [FrameType.Ready]: MAX_TEXT_PAYLOAD,
  [FrameType.Running]: MAX_TEXT_PAYLOAD,
  [FrameType.Reserved]: 8,
};

export interface HelloInfo {
  protocol: number;
  godwit: string;
  role: Role;
  caps: string[];
  /** Receiver only: the initial credit (bytes of data payload the sender may have in flight). */
  window?: number;
}

export type Message =
  | { type: FrameType.Hello; hello: HelloInfo }
  | { type: FrameType.Abort; reason: string }
  | { type: FrameType.FileBegin; id: number; mode: number; size?: number; name: string }
  /** `crc`: crc32 of `data` when known (the decoder sets it, having checked the frame; the encoder uses it rather
   *  than hashing the data again): lets each end hash each byte once. `parts`: set by the decoder when the data
   *  arrived in several reads: its pieces, in order, uncopied (`data` then joins them, a copy, on first use). */
  | { type: FrameType.Data; id: number; rawLength: number; zstd: boolean; data: Buffer; crc?: number; parts?: Buffer[] }
  | { type: FrameType.FileEnd; id: number; size: number; crc: number }
  | { type: FrameType.End; files: number; bytes: number }
  | { type: FrameType.Commit }
  | { type: FrameType.Credit; bytes: number }
  | { type: FrameType.Error; code: string; message: string }
  | { type: FrameType.Complete; files: number; bytes: number }
  | { type: FrameType.Ready; info: Record<string, unknown> }
  | { type: FrameType.Running; info: Record<string, unknown> }
  | { type: FrameType.Reserved; bytes: number };

/** Bad bytes on the wire. `file` names the stream (e.g. "stream from 198.18.0.2"). */
export class ProtocolError extends ImageError {
  constructor(stream: string, offset: number, problem: string, options?: { cause?: unknown }) {
    super(stream, offset, problem, options);
    this.code = 'EPROTO';
  }
}

// ---------------------------------------------------------------------------------------------- encoding

/** Header + payload as two buffers, so that large payloads are never copied. */
export function encodeFrame(type: FrameType, payload: Buffer, flags = 0): [Buffer, Buffer] {
  const h = Buffer.allocUnsafe(HEADER_SIZE);
  h.writeUInt8(type, 0);
  h.writeUInt8(flags, 1);
  h.writeUInt16LE(0, 2);
  h.writeUInt32LE(payload.length, 4);
  h.writeUInt32LE(crc32(payload), 8);
  h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
  return [h, payload];
}

function u64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

function text(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  // Truncate on a character boundary rather than refuse: a long error message must still get through.
  return b.length <= max ? b : Buffer.from(b.subarray(0, max).toString('utf8').replace(/\uFFFD$/, ''), 'utf8');
}

export function encodeMessage(m: Message): Buffer[] {
  switch (m.type) {
    case FrameType.Hello: {
      const json = Buffer.from(JSON.stringify({ godwit: m.hello.godwit, role: m.hello.role, caps: m.hello.caps,
        window: m.hello.window }));
      const p = Buffer.allocUnsafe(2);
      p.writeUInt16LE(m.hello.protocol);
      return encodeFrame(m.type, Buffer.concat([p, json]));
    }
    case FrameType.Abort:
      return encodeFrame(m.type, text(m.reason, MAX_TEXT_PAYLOAD));
    case FrameType.FileBegin: {
      const name = Buffer.from(m.name, 'utf8');
      const p = Buffer.allocUnsafe(16 + name.length);
      p.writeUInt32LE(m.id, 0);
      p.writeUInt32LE(m.mode, 4);
      p.writeBigUInt64LE(BigInt(m.size ?? 0), 8);
      name.copy(p, 16);
      return encodeFrame(m.type, p, m.size !== undefined ? SIZE_KNOWN : 0);
    }
    case FrameType.Data: {
      const p = Buffer.allocUnsafe(8);
      p.writeUInt32LE(m.id, 0);
      p.writeUInt32LE(m.rawLength, 4);
      // The data is appended without a copy: the header's crc covers the 8-byte prefix and the data.
      const h = Buffer.allocUnsafe(HEADER_SIZE);
      h.writeUInt8(m.type, 0);
      h.writeUInt8(m.zstd ? DATA_ZSTD : 0, 1);
      h.writeUInt16LE(0, 2);
      h.writeUInt32LE(8 + m.data.length, 4);
      h.writeUInt32LE(crc32Combine(crc32(p), m.crc ?? crc32(m.data), m.data.length), 8);
      h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
      return [h, p, m.data];
    }
    case FrameType.FileEnd: {
      const p = Buffer.allocUnsafe(16);
      p.writeUInt32LE(m.id, 0);
      p.writeBigUInt64LE(BigInt(m.size), 4);
      p.writeUInt32LE(m.crc >>> 0, 12);
      return encodeFrame(m.type, p);
    }
    case FrameType.End:
    case FrameType.Complete: {
      const p = Buffer.allocUnsafe(12);
      p.writeUInt32LE(m.files, 0);
      p.writeBigUInt64LE(BigInt(m.bytes), 4);
      return encodeFrame(m.type, p);
    }
    case FrameType.Commit:
      return encodeFrame(m.type, Buffer.alloc(0));
    case FrameType.Reserved: {
      const p = Buffer.allocUnsafe(8);
      p.writeBigUInt64LE(BigInt(m.bytes), 0);
      return encodeFrame(m.type, p);
    }
    case FrameType.Credit: {
      const p = Buffer.allocUnsafe(4);
      p.writeUInt32LE(m.bytes, 0);
      return encodeFrame(m.type, p);
    }
    case FrameType.Error:
      return encodeFrame(m.type, text(JSON.stringify({ code: m.code, message: m.message.slice(0, 8000) }),
        MAX_TEXT_PAYLOAD));
    case FrameType.Ready:
    case FrameType.Running:
      return encodeFrame(m.type, text(JSON.stringify(m.info), MAX_TEXT_PAYLOAD));
  }
}

// ---------------------------------------------------------------------------------------------- names

/**
 * A received file name must be relative, without "." or ".." components, without empty components, NUL or
 * backslash tricks, and without godwit's own temporary prefix. Returns the problem, or undefined if it is fine.
 */
export function checkName(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `the name is longer than ${MAX_NAME_BYTES} bytes`;
  if (name.startsWith('/')) return 'absolute paths are not allowed';
  if (name.includes('\0')) return 'the name contains a NUL byte';
  if (name.includes('\uFFFD')) return 'the name is not valid UTF-8';
  const parts = name.split('/');
  if (parts.length > MAX_NAME_DEPTH) return `the name is nested deeper than ${MAX_NAME_DEPTH} directories`;
  for (const p of parts) {
    if (p === '') return 'the name has an empty component ("//" or a trailing "/")';
    if (p === '.' || p === '..') return `"${p}" components are not allowed`;
    if (Buffer.byteLength(p) > MAX_COMPONENT_BYTES) return `a component is longer than ${MAX_COMPONENT_BYTES} bytes`;
    if (p.startsWith(RESERVED_PREFIX)) return `names starting with "${RESERVED_PREFIX}" are reserved for godwit's own use`;
  }
  return undefined;
}

/** The receiver's own files (temporary names, its marker) start with this; no received name may. */
export const RESERVED_PREFIX = '.godwit-';
export const TEMP_PREFIX = '.godwit-part-';
/** Present in a directory while a receiver writes it: names the receiver (pid and start time) so that a
 *  receiver killed outright (SIGKILL) can be cleaned up after by `godwit receive --discard`. */
export const MARKER_NAME = '.godwit-receiving';

// ---------------------------------------------------------------------------------------------- decoding

/**
 * Reusable buffers for payloads that arrive in pieces (a pipe delivers 64 KiB at a time, a data frame is up to
 * 4 MiB and must be contiguous): a fresh allocation per frame is first-touched memory, slow to fault in on this
 * machine kind (0.3-0.5 GB/s), and was most of the receiver's copying time plus GC work. A consumer gives a payload
 * back once it is done with it; one it keeps is left to the GC. Sizes are rounded up to 64 KiB so that the
 * frames of a stream (all the same chunk size) share buffers; at most `maxFreeBytes` wait for reuse.
 */
export class PayloadPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private freeBytes = 0;
  /** Buffers handed out and not yet given back: give() accepts only these, once each. */
  private readonly lent = new WeakSet<ArrayBuffer>();

  constructor(private readonly maxFreeBytes = 32 << 20) {}

  take(n: number): Buffer {
    const size = Math.ceil(n / POOL_GRAIN) * POOL_GRAIN;
    let ab = this.free.get(size)?.pop();
    if (ab) this.freeBytes -= size;
    else ab = new ArrayBuffer(size);
    this.lent.add(ab);
    return Buffer.from(ab, 0, n);
  }

  /** Give back a buffer from take() (or a view into one): the caller must not touch it afterwards. */
  give(b: Buffer): void {
    const ab = b.buffer as ArrayBuffer;
    if (!this.lent.has(ab)) return;
    this.lent.delete(ab);
    if (this.freeBytes + ab.byteLength > this.maxFreeBytes) return;
    let list = this.free.get(ab.byteLength);
    if (!list) this.free.set(ab.byteLength, (list = []));
    list.push(ab);
    this.freeBytes += ab.byteLength;
  }
}

const POOL_GRAIN = 64 << 10;

export interface RawFrame {
  type: FrameType;
  flags: number;
  /** The whole payload; for a Data frame with `parts`, only its 8-byte prefix. */
  payload: Buffer;
  /** Data frames read in pieces: the data after the prefix, as the pieces it arrived in (never copied). */
  parts?: Buffer[];
  /** Byte offset of the frame's header in the stream (preamble included). */
  offset: number;
  /** 0-based index of the frame in the stream. */
  index: number;
  /** Data frames: crc32 of the data after the 8-byte prefix (hashed once, for the frame check and the file's). */
  dataCrc?: number;
}

/**
 * Stream offsets of chunks that do not follow on from the previous one: the native frame pump
 * (transport/pipe-reader.ts) passes on whole frames and keeps the data frames it wrote itself, so the decoder sets
 * its offset from the chunk's own when a frame starts there.
 */
export const frameOffsets = new WeakMap<Buffer, number>();

/**
 * Incremental parser of one direction of the stream. push() bytes as they come; next() returns a complete,
 * validated message or undefined when more bytes are needed. Never holds more than one frame's bytes plus
 * whatever was pushed beyond it (the caller bounds that with flow control).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private consumed = 0;
  private frames = 0;
  private sawPreamble = false;
  private failed: ProtocolError | undefined;
  /** Pushed chunks with a stream offset of their own (frameOffsets), in order. */
  private marks: Array<{ chunk: Buffer; at: number }> = [];

  /** `stream` names the stream in errors; `from` is the role of the peer that writes it; payloads that must be
   *  assembled from several pushed chunks are copied into buffers from `pool` when one is given. */
  constructor(readonly stream: string, readonly from: Role, private readonly pool?: PayloadPool) {}

  /** Total bytes consumed so far (the offset of the next frame). */
  get offset(): number {
    return this.consumed;
  }

  /** Bytes received but not yet parsed into messages. */
  get pending(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const at = frameOffsets.get(chunk);
    if (at !== undefined) this.marks.push({ chunk, at });
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The first chunk is being consumed: a frame that starts later in it is not at the chunk's own offset. */
  private unmark(first: Buffer): void {
    if (this.marks.length > 0 && this.marks[0]!.chunk === first) this.marks.shift();
  }

  private fail(offset: number, problem: string): never {
    this.failed = new ProtocolError(this.stream, offset, problem);
    throw this.failed;
  }

  /** Copy out (or slice, when it lies in one chunk) the first n buffered bytes without consuming them. */
  private peek(n: number, pooled = false): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = pooled && this.pool ? this.pool.take(n) : Buffer.allocUnsafe(n);
    let got = 0;
    for (const c of this.chunks) {
      const take = Math.min(c.length, n - got);
      c.copy(out, got, 0, take);
      got += take;
      if (got === n) break;
    }
    return out;
  }

  private skip(n: number): void {
    this.buffered -= n;
    this.consumed += n;
    while (n > 0) {
      const first = this.chunks[0]!;
      this.unmark(first);
      if (first.length <= n) {
        this.chunks.shift();
        n -= first.length;
      } else {
        this.chunks[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  /** The first n buffered bytes as views of the chunks they arrived in, consumed. */
  private slices(n: number): Buffer[] {
    const out: Buffer[] = [];
    this.buffered -= n;
    this.consumed += n;
    while (n > 0) {
      const first = this.chunks[0]!;
      this.unmark(first);
      if (first.length <= n) {
        out.push(first);
        this.chunks.shift();
        n -= first.length;
      } else {
        out.push(first.subarray(0, n));
        this.chunks[0] = first.subarray(n);
        n = 0;
      }
    }
    return out;
  }

  /** The next raw frame, checked for type, direction, size and checksums; undefined if incomplete. */
  nextFrame(): RawFrame | undefined {
    if (this.failed) throw this.failed;
    if (!this.sawPreamble) {
      if (this.buffered < PREAMBLE.length) {
        // A shell or an old godwit answers with text: say so as soon as the first bytes differ.
        if (this.buffered > 0 && !PREAMBLE.subarray(0, this.buffered).equals(this.peek(this.buffered))) this.badPreamble();
        return undefined;
      }
      if (!this.peek(PREAMBLE.length).equals(PREAMBLE)) this.badPreamble();
      this.skip(PREAMBLE.length);
      this.sawPreamble = true;
    }
    if (this.buffered < HEADER_SIZE) return undefined;
    // A chunk that starts where this frame starts says where that is in the stream.
    if (this.marks.length > 0 && this.marks[0]!.chunk === this.chunks[0]) this.consumed = this.marks.shift()!.at;
    const at = this.consumed;
    const h = this.peek(HEADER_SIZE);
    if (crc32(h.subarray(0, 12)) !== h.readUInt32LE(12)) {
      this.fail(at, `frame ${this.frames}: header checksum mismatch (the stream is corrupted)`);
    }
    const type = h.readUInt8(0) as FrameType;
    const flags = h.readUInt8(1);
    const length = h.readUInt32LE(4);
    if (!(type in maxPayload)) this.fail(at, `frame ${this.frames}: unknown frame type ${type}`);
    if (!allowed[this.from].has(type)) {
      this.fail(at, `frame ${this.frames}: a ${FrameType[type]} frame cannot come from the ${this.from}`);
    }
    if (h.readUInt16LE(2) !== 0) this.fail(at, `frame ${this.frames}: reserved header bytes are not zero`);
    if (length > maxPayload[type]) {
      this.fail(at, `frame ${this.frames}: ${FrameType[type]} payload of ${length} bytes exceeds the limit of ${maxPayload[type]}`);
    }
    if (this.buffered < HEADER_SIZE + length) return undefined;
    this.skip(HEADER_SIZE);
    let payload: Buffer;
    let parts: Buffer[] | undefined;
    let sum: number;
    let dataCrc: number | undefined;
    if (type === FrameType.Data && length > 8 && this.chunks[0]!.length < length) {
      // Data spread over several reads (a pipe delivers 64 KiB at a time): leave it in the pieces it came in; the
      // receiver writes them as they are, and assembling would copy every byte of the stream once more.
      payload = this.peek(8);
      this.skip(8);
      parts = this.slices(length - 8);
      dataCrc = 0;
      for (const part of parts) dataCrc = crc32(part, dataCrc);
      sum = crc32Combine(crc32(payload), dataCrc, length - 8);
    } else {
      payload = length === 0 ? Buffer.alloc(0) : this.peek(length, true);
      // A slice of a pushed chunk must not pin that chunk's memory beyond this frame's life only when the caller
      // keeps it; data frames are written out and dropped, so slicing is fine.
      this.skip(length);
      if (type === FrameType.Data && length >= 8) {
        dataCrc = crc32(payload.subarray(8));
        sum = crc32Combine(crc32(payload.subarray(0, 8)), dataCrc, length - 8);
      } else {
        sum = crc32(payload);
      }
    }
    if (sum !== h.readUInt32LE(8)) {
      this.fail(at, `frame ${this.frames} (${FrameType[type]}): payload checksum mismatch (the stream is corrupted)`);
    }
    const f: RawFrame = { type, flags, payload, offset: at, index: this.frames++ };
    if (dataCrc !== undefined) f.dataCrc = dataCrc;
    if (parts) f.parts = parts;
    return f;
  }

  private badPreamble(): never {
    const got = this.peek(Math.min(this.buffered, 64));
    const printable = got.toString('latin1').replace(/[^\x20-\x7e]/g, '.');
    this.fail(0, `not a godwit stream: expected the godwit preamble, got "${printable}"`);
  }

  /** The next validated message, or undefined when more bytes are needed. */
  next(): Message | undefined {
    const f = this.nextFrame();
    if (!f) return undefined;
    try {
      return parsePayload(f);
    } catch (err) {
      if (err instanceof FieldError) this.fail(f.offset, `frame ${f.index} (${FrameType[f.type]}): ${err.message}`);
      throw err;
    }
  }
}

class FieldError extends Error {}

const EMPTY = Buffer.alloc(0);

function partsLength(parts: readonly Buffer[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

/** The data bytes a Data message carries on the wire (compressed, if it is), without joining its parts. */
export function dataBytes(m: { data: Buffer; parts?: Buffer[] }): number {
  return m.parts ? partsLength(m.parts) : m.data.length;
}

function need(p: Buffer, n: number, exact = true): void {
  if (exact ? p.length !== n : p.length < n) {
    throw new FieldError(`payload is ${p.length} bytes, expected ${exact ? '' : 'at least '}${n}`);
  }
}

function safeU64(p: Buffer, at: number, what: string): number {
  const v = p.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FieldError(`${what} ${v} is out of range`);
  return Number(v);
}

function utf8(p: Buffer, what: string): string {
  const s = p.toString('utf8');
  if (!Buffer.from(s, 'utf8').equals(p)) throw new FieldError(`${what} is not valid UTF-8`);
  return s;
}

function json(p: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(utf8(p, what));
  } catch (err) {
    if (err instanceof FieldError) throw err;
    throw new FieldError(`${what} is not valid JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FieldError(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function parsePayload(f: RawFrame): Message {
  const p = f.payload;
  switch (f.type) {
    case FrameType.Hello: {
      need(p, 2, false);
      const protocol = p.readUInt16LE(0);
      const o = json(p.subarray(2), 'hello');
      const godwit = typeof o.godwit === 'string' ? o.godwit.slice(0, 64) : 'unknown';
      const role = o.role === 'sender' || o.role === 'receiver' ? o.role : undefined;
      if (!role) throw new FieldError('hello has no valid role');
      const caps = Array.isArray(o.caps) ? o.caps.filter((c): c is string => typeof c === 'string').slice(0, 64) : [];
      const hello: HelloInfo = { protocol, godwit, role, caps };
      if (o.window !== undefined) {
        if (typeof o.window !== 'number' || !Number.isInteger(o.window) || o.window < MAX_DATA_PAYLOAD ||
          o.window > 1 << 30) {
          throw new FieldError(`hello window ${String(o.window)} is out of range`);
        }
        hello.window = o.window;
      }
      return { type: f.type, hello };
    }
    case FrameType.Abort:
      return { type: f.type, reason: utf8(p, 'abort reason') };
    case FrameType.FileBegin: {
      need(p, 17, false);
      const name = utf8(p.subarray(16), 'file name');
      const m: Message = { type: f.type, id: p.readUInt32LE(0), mode: p.readUInt32LE(4), name };
      if (m.mode > 0o7777) throw new FieldError(`file mode 0${m.mode.toString(8)} is out of range`);
      if (f.flags & SIZE_KNOWN) m.size = safeU64(p, 8, 'file size');
      return m;
    }
    case FrameType.Data: {
      need(p, 8, false);
      const rawLength = p.readUInt32LE(4);
      const zstd = (f.flags & DATA_ZSTD) !== 0;
      if (f.flags & ~DATA_ZSTD) throw new FieldError(`unknown data flags 0x${f.flags.toString(16)}`);
      if (rawLength > MAX_CHUNK_SIZE) throw new FieldError(`chunk of ${rawLength} raw bytes exceeds ${MAX_CHUNK_SIZE}`);
      const carried = f.parts ? partsLength(f.parts) : p.length - 8;
      if (!zstd && rawLength !== carried) throw new FieldError(`raw chunk says ${rawLength} bytes but carries ${carried}`);
      const m: Message = { type: f.type, id: p.readUInt32LE(0), rawLength, zstd, data: EMPTY };
      if (f.parts) {
        const parts = f.parts;
        let joined: Buffer | undefined;
        Object.defineProperty(m, 'data', { enumerable: true, get: () => (joined ??= Buffer.concat(parts)) });
        m.parts = parts;
      } else {
        m.data = p.subarray(8);
      }
      if (f.dataCrc !== undefined) m.crc = f.dataCrc;
      return m;
    }
    case FrameType.FileEnd:
      need(p, 16);
      return { type: f.type, id: p.readUInt32LE(0), size: safeU64(p, 4, 'file size'), crc: p.readUInt32LE(12) };
    case FrameType.End:
    case FrameType.Complete:
      need(p, 12);
      return { type: f.type, files: p.readUInt32LE(0), bytes: safeU64(p, 4, 'byte count') };
    case FrameType.Commit:
      need(p, 0);
      return { type: f.type };
    case FrameType.Reserved:
      need(p, 8);
      return { type: f.type, bytes: safeU64(p, 0, 'reserved bytes') };
    case FrameType.Credit: {
      need(p, 4);
      const bytes = p.readUInt32LE(0);
      if (bytes === 0 || bytes > 1 << 30) throw new FieldError(`credit of ${bytes} bytes is out of range`);
      return { type: f.type, bytes };
    }
    case FrameType.Error: {
      const o = json(p, 'error');
      return { type: f.type, code: typeof o.code === 'string' ? o.code.slice(0, 64) : 'EREMOTE',
        message: typeof o.message === 'string' ? o.message : 'unknown error' };
    }
    case FrameType.Ready:
    case FrameType.Running:
      return { type: f.type, info: json(p, FrameType[f.type].toLowerCase() + ' info') };
  }
}
