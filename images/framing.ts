/**
 * CRIU image framing: magic header(s), then entries (u32 little-endian length + protobuf message),
 * each optionally followed by a raw payload. One parser (a generator asking for bytes) serves the
 * sync Buffer helpers here and the streaming reader in io.ts; one encoder serves both writers.
 */
import { ImageError } from '../util/errors';
import { type Extra, type ImageEntry, MAX_ENTRY_SIZE, type Need, type Parser } from './entry';
import { encodePayload, readPayload } from './payloads';
import {
  headerMagics, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, type ImageKind, kindByFileName, kindByMagic, kindByName,
} from './registry';
import { schema } from './schema';
import { decodeMessage, encodeMessage, EncodeError, type Msg, WireError } from './wire';

export interface DecodedImage {
  kind: ImageKind;
  entries: ImageEntry[];
}

export interface ParseOptions {
  /** Name used in errors; also picks the expected kind when it matches a CRIU file name. */
  file: string;
  /** Expect this kind (registry name); a different magic is an error. Default: from the file name. */
  kind?: string;
}

const hex = (n: number): string => '0x' + (n >>> 0).toString(16).padStart(8, '0');

/** The kind a file is expected to be, from options or its name (undefined: accept any known magic). */
export function expectedKind(opts: ParseOptions): ImageKind | undefined {
  if (opts.kind !== undefined) {
    const k = kindByName(opts.kind);
    if (!k) throw new ImageError(opts.file, 0, `unknown image kind '${opts.kind}'`);
    return k;
  }
  return kindByFileName(opts.file);
}

/**
 * The image parser. First yields nothing but reads the header; `onKind` hears which kind the file is
 * before any entry is produced.
 */
export function* parseImage(opts: ParseOptions, onKind: (k: ImageKind) => void): Parser {
  const file = opts.file;
  const expected = expectedKind(opts);
  if (expected && expected.magic === 0) {
    throw new ImageError(file, 0, `${expected.kind} images are raw data without entries (${expected.template}); nothing to decode`);
  }
  let offset = 0;
  if ((yield { op: 'eof' }) as boolean) throw new ImageError(file, 0, 'empty file: expected a CRIU image magic number');
  let magic = ((yield { op: 'read', n: 4, what: 'image magic' }) as Buffer).readUInt32LE(0);
  offset = 4;
  let prefix: number | undefined;
  if (magic === IMG_COMMON_MAGIC || magic === IMG_SERVICE_MAGIC) {
    prefix = magic;
    magic = ((yield { op: 'read', n: 4, what: 'image magic after the common header' }) as Buffer).readUInt32LE(0);
    offset = 8;
  }
  const kind = kindByMagic(magic);
  if (!kind) {
    throw new ImageError(file, offset - 4, `unknown image magic ${hex(magic)}` +
      (expected ? ` (expected ${hex(expected.magic)} for ${expected.kind})` : ' (not a CRIU image, or a kind godwit does not know)'));
  }
  if (expected && expected.magic !== kind.magic) {
    throw new ImageError(file, offset - 4, `wrong magic ${hex(magic)} (${kind.kind}); expected ${hex(expected.magic)} for ${expected.kind}`);
  }
  const want = headerMagics(kind);
  if (want.length === 2 && prefix !== want[0]) {
    throw new ImageError(file, 0, `${kind.kind} image must start with ${hex(want[0])}, found ${prefix === undefined ? 'none' : hex(prefix)}`);
  }
  if (want.length === 1 && prefix !== undefined) {
    throw new ImageError(file, 0, `${kind.kind} image must not carry the ${hex(prefix)} header`);
  }
  const k = expected && expected.magic === kind.magic ? expected : kind;
  onKind(k);
  const types = schema();
  const mainDef = types.message(k.message!);
  const firstDef = k.firstMessage ? types.message(k.firstMessage) : mainDef;
  let index = 0;
  let ghostChunks = false;
  while (!((yield { op: 'eof' }) as boolean)) {
    const at = offset;
    const len = ((yield { op: 'read', n: 4, what: `length of entry ${index}` }) as Buffer).readUInt32LE(0);
    if (len > MAX_ENTRY_SIZE) {
      throw new ImageError(file, at, `entry ${index} claims ${len} bytes; no CRIU entry is larger than ${MAX_ENTRY_SIZE} (corrupt length field?)`);
    }
    const body = (yield { op: 'read', n: len, what: `entry ${index} (${len} bytes)` }) as Buffer;
    offset += 4 + len;
    const def = index === 0 ? firstDef : mainDef;
    let msg: Msg;
    try {
      msg = decodeMessage(def, body);
    } catch (e) {
      if (e instanceof WireError) throw new ImageError(file, at + 4 + e.pos, `entry ${index} (${def.name}): ${e.message}`);
      throw e;
    }
    const entry: ImageEntry = { type: def.name, msg };
    if (k.payload === 'ghost-file') {
      if (index === 0) {
        ghostChunks = msg.chunks === true;
        if (!ghostChunks) {
          entry.extra = (yield { op: 'rest', what: 'ghost file content' }) as Buffer;
          yield { op: 'entry', entry };
          return;
        }
      } else {
        const n = Number(msg.len as bigint);
        if (!Number.isSafeInteger(n)) throw new ImageError(file, at, `ghost chunk length ${String(msg.len)} is not usable`);
        entry.extra = (yield { op: 'read', n, what: `${n} bytes of ghost file chunk ${index}` }) as Buffer;
        offset += n;
      }
    } else if (k.payload) {
      const p = yield* readPayload(k.payload, msg, file, offset);
      if (p.extra !== undefined) entry.extra = p.extra;
      offset += p.size;
    }
    yield { op: 'entry', entry };
    index++;
  }
}

/** Decode a whole image held in memory. Throws ImageError on any defect. */
export function decodeImage(buf: Buffer, file: string, opts: Omit<ParseOptions, 'file'> = {}): DecodedImage {
  let kind: ImageKind | undefined;
  const entries: ImageEntry[] = [];
  const gen = parseImage({ ...opts, file }, (k) => (kind = k));
  let pos = 0;
  let answer: unknown;
  for (;;) {
    const r = gen.next(answer);
    if (r.done) break;
    const need: Need = r.value;
    switch (need.op) {
      case 'eof':
        answer = pos >= buf.length;
        break;
      case 'read':
        if (need.n > buf.length - pos) {
          throw new ImageError(file, pos, `expected ${need.what}, but the file ends after ${buf.length - pos} more bytes (truncated, or a wrong length field)`);
        }
        answer = buf.subarray(pos, pos + need.n);
        pos += need.n;
        break;
      case 'rest':
        answer = buf.subarray(pos);
        pos = buf.length;
        break;
      case 'entry':
        entries.push(need.entry);
        answer = undefined;
        break;
    }
  }
  return { kind: kind!, entries };
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** The header bytes of a `kind` image. */
export function encodeHeader(kind: ImageKind): Buffer {
  const magics = headerMagics(kind);
  const b = Buffer.alloc(magics.length * 4);
  magics.forEach((m, i) => b.writeUInt32LE(m >>> 0, i * 4));
  return b;
}

/**
 * Encoder state for one image: knows which message type entry N has and what payload follows.
 * `encode` returns the bytes of one entry (length, message, payload).
 */
export class EntryEncoder {
  private index = 0;
  private ghostDone = false;

  constructor(readonly kind: ImageKind, readonly file: string) {
    if (kind.magic === 0 || !kind.message) throw new EncodeError(`${kind.kind} images are raw data; they have no entries to encode`);
  }

  encode(msg: Msg, extra?: Extra, type?: string): Buffer[] {
    const k = this.kind;
    const what = `${this.file}: entry ${this.index}`;
    if (this.ghostDone) throw new EncodeError(`${what}: a ghost file without chunks has exactly one entry`);
    const typeName = this.index === 0 && k.firstMessage ? k.firstMessage : k.message!;
    if (type !== undefined && type !== typeName) throw new EncodeError(`${what}: expected a ${typeName}, got ${type}`);

    const body = encodeMessage(schema().message(typeName), msg, `${what} (${typeName})`);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length);
    const out = [len, body];
    if (k.payload === 'ghost-file') {
      if (this.index === 0 && msg.chunks !== true) {
        this.ghostDone = true;
        out.push(extra === undefined ? Buffer.alloc(0) : asBuffer(extra, what));
      } else if (this.index > 0) {
        const b = extra === undefined ? Buffer.alloc(0) : asBuffer(extra, what);
        if (BigInt(b.length) !== BigInt(msg.len as bigint)) throw new EncodeError(`${what}: chunk has ${b.length} bytes but len says ${String(msg.len)}`);
        out.push(b);
      } else if (extra !== undefined) {
        throw new EncodeError(`${what}: a chunked ghost file carries its data after each chunk entry, not after the header`);
      }
    } else if (k.payload) {
      out.push(...encodePayload(k.payload, msg, extra, what));
    } else if (extra !== undefined) {
      throw new EncodeError(`${what}: ${k.kind} entries carry no payload`);
    }
    this.index++;
    return out;
  }
}

function asBuffer(x: unknown, what: string): Buffer {
  if (!Buffer.isBuffer(x)) throw new EncodeError(`${what}: payload must be a Buffer`);
  return x;
}

/** Encode a whole image: header and entries. `kind` is a registry name, e.g. 'CORE'. */
export function encodeImage(kind: string | ImageKind, entries: Array<ImageEntry | Msg>, file = '<image>'): Buffer {
  const k = typeof kind === 'string' ? kindByName(kind) : kind;
  if (!k) throw new EncodeError(`unknown image kind '${String(kind)}'`);
  const enc = new EntryEncoder(k, file);
  const parts: Buffer[] = [encodeHeader(k)];
  for (const e of entries) {
    if (isImageEntry(e)) parts.push(...enc.encode(e.msg, e.extra, e.type));
    else parts.push(...enc.encode(e));
  }
  return Buffer.concat(parts);
}

export function isImageEntry(e: unknown): e is ImageEntry {
  return typeof e === 'object' && e !== null && 'msg' in e && 'type' in e && typeof (e as ImageEntry).type === 'string';
}
