/**
 * Protocol-buffer wire codec for CRIU image messages, driven by schema.ts.
 *
 * Decoded messages are plain objects keyed by the .proto field names: 64-bit integers are bigint,
 * 32-bit ones and enums are numbers, bytes are Buffers, repeated fields are arrays, and a field that
 * was not on the wire is absent. Encoding writes fields in field-number order (what protobuf-c does),
 * then any fields the schema does not know, exactly as they were read, so decode -> encode gives the
 * same bytes for anything CRIU wrote.
 */
import { GodwitError } from '../util/errors';
import type { FieldDef, MessageDef } from './schema';

export type Msg = { [field: string]: unknown };

/**
 * Fields the schema does not know, kept (non-enumerable, under this symbol) with their field numbers
 * so they are written back unchanged and in field-number order among the known ones, as protobuf-c
 * wrote them: an image from a newer CRIU re-encodes byte for byte.
 */
export const UNKNOWN_FIELDS: unique symbol = Symbol('godwit.unknownFields');

export interface UnknownField {
  id: number;
  raw: Buffer;
}

/** A problem at `pos` (an offset into the buffer being decoded). */
export class WireError extends Error {
  constructor(readonly pos: number, message: string) {
    super(message);
  }
}

const WT_VARINT = 0;
const WT_I64 = 1;
const WT_LEN = 2;
const WT_I32 = 5;

const TWO32 = 4294967296;

// ---------------------------------------------------------------------------------------------
// Strings. CRIU copies kernel strings (file names!) verbatim, and those need not be UTF-8. Invalid
// bytes are kept the way Python's "surrogateescape" does (byte 0xXY -> U+DCXY), so they survive a
// round trip through a JS string and through JSON.

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeString(buf: Buffer): string {
  try {
    return strictUtf8.decode(buf);
  } catch {
    return decodeUtf8Escaped(buf);
  }
}

function decodeUtf8Escaped(buf: Buffer): string {
  let out = '';
  let i = 0;
  while (i < buf.length) {
    const b = buf[i];
    const len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len > 0 && i + len <= buf.length) {
      try {
        out += strictUtf8.decode(buf.subarray(i, i + len));
        i += len;
        continue;
      } catch {
        /* fall through: escape this byte */
      }
    }
    out += String.fromCharCode(0xdc00 + b);
    i++;
  }
  return out;
}

const LONE_ESCAPE = /[\udc80-\udcff]/;

export function encodeString(s: string): Buffer {
  if (!LONE_ESCAPE.test(s)) return Buffer.from(s, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xdc80 && c <= 0xdcff && !(i > 0 && s.charCodeAt(i - 1) >= 0xd800 && s.charCodeAt(i - 1) <= 0xdbff)) {
      parts.push(Buffer.from(s.slice(start, i), 'utf8'), Buffer.from([c - 0xdc00]));
      start = i + 1;
    }
  }
  parts.push(Buffer.from(s.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// Decoding

class Cursor {
  pos: number;
  constructor(readonly buf: Buffer, start: number, readonly end: number) {
    this.pos = start;
  }

  /** A varint as two 32-bit halves [lo, hi] (unsigned). */
  varint(): [number, number] {
    const { buf, end } = this;
    let lo = 0;
    let hi = 0;
    const at = this.pos;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw new WireError(at, 'varint runs past the end of the message');
      const b = buf[this.pos++];
      if (i < 4) lo |= (b & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else hi |= (b & 0x7f) << (7 * i - 32);
      if (b < 0x80) return [lo >>> 0, hi >>> 0];
    }
    throw new WireError(at, 'varint longer than 10 bytes');
  }

  /** A varint that must fit a JS number (tags and lengths). */
  smallVarint(what: string): number {
    const at = this.pos;
    const [lo, hi] = this.varint();
    if (hi > 0x1fffff) throw new WireError(at, `${what} ${hi * TWO32 + lo} is out of range`);
    return hi * TWO32 + lo;
  }

  take(n: number, what: string): Buffer {
    if (n > this.end - this.pos) {
      throw new WireError(this.pos, `${what} of ${n} bytes runs past the end of the message (${this.end - this.pos} left)`);
    }
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
}

function bigOf(lo: number, hi: number): bigint {
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

function zigzag32(lo: number): number {
  return (lo >>> 1) ^ -(lo & 1);
}

function zigzag64(lo: number, hi: number): bigint {
  const u = bigOf(lo, hi);
  return (u >> 1n) ^ -(u & 1n);
}

function wireTypeOf(f: FieldDef): number {
  switch (f.kind) {
    case 'fixed64': case 'sfixed64': case 'double': return WT_I64;
    case 'fixed32': case 'sfixed32': case 'float': return WT_I32;
    case 'string': case 'bytes': case 'message': return WT_LEN;
    default: return WT_VARINT;
  }
}

/** One scalar (or enum) value of field `f` whose wire type is `wt`. */
function readScalar(c: Cursor, f: FieldDef): unknown {
  switch (f.kind) {
    case 'int32': case 'enum': { const [lo] = c.varint(); return lo | 0; }
    case 'uint32': { const [lo] = c.varint(); return lo; }
    case 'sint32': { const [lo] = c.varint(); return zigzag32(lo); }
    case 'bool': { const [lo, hi] = c.varint(); return lo !== 0 || hi !== 0; }
    case 'int64': { const [lo, hi] = c.varint(); return BigInt.asIntN(64, bigOf(lo, hi)); }
    case 'uint64': { const [lo, hi] = c.varint(); return bigOf(lo, hi); }
    case 'sint64': { const [lo, hi] = c.varint(); return zigzag64(lo, hi); }
    case 'fixed32': return c.take(4, f.name).readUInt32LE(0);
    case 'sfixed32': return c.take(4, f.name).readInt32LE(0);
    case 'float': return c.take(4, f.name).readFloatLE(0);
    case 'fixed64': return c.take(8, f.name).readBigUInt64LE(0);
    case 'sfixed64': return c.take(8, f.name).readBigInt64LE(0);
    case 'double': return c.take(8, f.name).readDoubleLE(0);
    default: throw new WireError(c.pos, `${f.name}: not a scalar`);
  }
}

function skipField(c: Cursor, wt: number, at: number): void {
  switch (wt) {
    case WT_VARINT: c.varint(); return;
    case WT_I64: c.take(8, 'fixed64 field'); return;
    case WT_I32: c.take(4, 'fixed32 field'); return;
    case WT_LEN: c.take(c.smallVarint('length'), 'length-delimited field'); return;
    default: throw new WireError(at, `unsupported wire type ${wt} (groups are not used by CRIU images)`);
  }
}

/** Protobuf nesting is shallow in CRIU's schemas; a deep chain is garbage (and would blow the stack). */
const MAX_DEPTH = 64;

export function decodeMessage(def: MessageDef, buf: Buffer, start = 0, end = buf.length, depth = 0): Msg {
  if (depth > MAX_DEPTH) throw new WireError(start, `messages nested deeper than ${MAX_DEPTH}`);
  const c = new Cursor(buf, start, end);
  const out: Msg = {};
  let unknown: UnknownField[] | undefined;
  while (c.pos < end) {
    const at = c.pos;
    const tag = c.smallVarint('field tag');
    const id = Math.floor(tag / 8);
    const wt = tag & 7;
    if (id === 0) throw new WireError(at, 'field number 0 is invalid');
    const f = def.byId.get(id);
    // A field the schema does not know, or one on the wire with another type than the schema says
    // (as Google's parsers do), is kept as raw bytes and written back unchanged.
    const packedRun = f !== undefined && f.repeated && wt === WT_LEN && wireTypeOf(f) !== WT_LEN;
    if (!f || (wt !== wireTypeOf(f) && !packedRun)) {
      skipField(c, wt, at);
      (unknown ??= []).push({ id, raw: Buffer.from(buf.subarray(at, c.pos)) });
      continue;
    }
    if (f.kind === 'message') {
      const len = c.smallVarint('length');
      const body = c.take(len, `${def.name}.${f.name}`);
      const sub = decodeMessage(f.message!, buf, body.byteOffset - buf.byteOffset, body.byteOffset - buf.byteOffset + len, depth + 1);
      if (f.repeated) ((out[f.name] ??= []) as Msg[]).push(sub);
      else out[f.name] = sub; // a repeated occurrence replaces (CRIU never writes one twice)
      continue;
    }
    if (f.kind === 'string' || f.kind === 'bytes') {
      const data = c.take(c.smallVarint('length'), `${def.name}.${f.name}`);
      const v = f.kind === 'string' ? decodeString(data) : Buffer.from(data);
      if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(v);
      else out[f.name] = v;
      continue;
    }
    if (packedRun) {
      // packed run of scalars (accepted whatever the schema says, as protobuf parsers do)
      const len = c.smallVarint('length');
      const body = c.take(len, `${def.name}.${f.name}`);
      const off = body.byteOffset - buf.byteOffset;
      const inner = new Cursor(buf, off, off + len);
      const arr = (out[f.name] ??= []) as unknown[];
      while (inner.pos < inner.end) arr.push(readScalar(inner, f));
      continue;
    }
    const v = readScalar(c, f);
    if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(v);
    else out[f.name] = v;
  }
  for (const f of def.fields) {
    if (f.required && out[f.name] === undefined) {
      throw new WireError(start, `${def.name}: required field '${f.name}' (${f.id}) is missing`);
    }
  }
  if (unknown) Object.defineProperty(out, UNKNOWN_FIELDS, { value: unknown, enumerable: false, writable: true });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** An object could not be encoded: names the image, entry and field path and what was wrong. */
export class EncodeError extends GodwitError {
  constructor(message: string) {
    super(message, { code: 'EIMAGEENCODE' });
  }
}

class Writer {
  private chunks: Buffer[] = [];
  private cur = Buffer.allocUnsafe(256);
  private pos = 0;
  length = 0;

  private room(n: number): void {
    if (this.pos + n <= this.cur.length) return;
    if (this.pos > 0) this.chunks.push(this.cur.subarray(0, this.pos));
    this.cur = Buffer.allocUnsafe(Math.max(n, 4096));
    this.pos = 0;
  }

  byte(b: number): void {
    this.room(1);
    this.cur[this.pos++] = b;
    this.length++;
  }

  varint(lo: number, hi: number): void {
    this.room(10);
    while (hi !== 0 || lo > 0x7f) {
      this.cur[this.pos++] = (lo & 0x7f) | 0x80;
      this.length++;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.cur[this.pos++] = lo;
    this.length++;
  }

  uint(n: number): void {
    this.varint(n % TWO32 >>> 0, Math.floor(n / TWO32) >>> 0);
  }

  bytes(b: Buffer): void {
    if (b.length > 1024) {
      if (this.pos > 0) this.chunks.push(this.cur.subarray(0, this.pos));
      this.chunks.push(b);
      this.cur = Buffer.allocUnsafe(256);
      this.pos = 0;
    } else {
      this.room(b.length);
      b.copy(this.cur, this.pos);
      this.pos += b.length;
    }
    this.length += b.length;
  }

  finish(): Buffer {
    if (this.pos > 0) this.chunks.push(this.cur.subarray(0, this.pos));
    const out = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = [];
    this.pos = 0;
    return out;
  }
}

const MAX_U64 = (1n << 64n) - 1n;
const MIN_I64 = -(1n << 63n);
const MAX_I64 = (1n << 63n) - 1n;

function toBig(v: unknown, where: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  throw new EncodeError(`${where}: expected an integer (bigint), got ${describe(v)}`);
}

function toInt(v: unknown, where: string, min: number, max: number): number {
  let n: number;
  if (typeof v === 'number' && Number.isInteger(v)) n = v;
  else if (typeof v === 'bigint' && v >= BigInt(min) && v <= BigInt(max)) n = Number(v);
  else throw new EncodeError(`${where}: expected an integer, got ${describe(v)}`);
  if (n < min || n > max) throw new EncodeError(`${where}: ${n} is out of range ${min}..${max}`);
  return n;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Buffer.isBuffer(v)) return `Buffer(${v.length})`;
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  return `${typeof v} ${String(v)}`;
}

function writeBig64(w: Writer, u: bigint): void {
  if (u >= 0n && u <= 0xffffffffn) {
    w.varint(Number(u), 0);
    return;
  }
  const x = BigInt.asUintN(64, u);
  w.varint(Number(x & 0xffffffffn), Number(x >> 32n));
}

function writeScalar(w: Writer, f: FieldDef, v: unknown, where: string): void {
  switch (f.kind) {
    case 'int32': case 'enum': {
      const n = toInt(v, where, -2147483648, 2147483647);
      if (n >= 0) w.varint(n, 0);
      else w.varint(n >>> 0, 0xffffffff); // negative int32 is sign-extended to 10 bytes
      return;
    }
    case 'uint32': w.varint(toInt(v, where, 0, 0xffffffff), 0); return;
    case 'sint32': { const n = toInt(v, where, -2147483648, 2147483647); w.varint(((n << 1) ^ (n >> 31)) >>> 0, 0); return; }
    case 'bool':
      if (typeof v !== 'boolean') throw new EncodeError(`${where}: expected a boolean, got ${describe(v)}`);
      w.byte(v ? 1 : 0);
      return;
    case 'uint64': case 'fixed64': {
      const b = toBig(v, where);
      if (b < 0n || b > MAX_U64) throw new EncodeError(`${where}: ${b} is out of range for ${f.kind}`);
      if (f.kind === 'uint64') writeBig64(w, b);
      else { const t = Buffer.allocUnsafe(8); t.writeBigUInt64LE(b); w.bytes(t); }
      return;
    }
    case 'int64': case 'sfixed64': case 'sint64': {
      const b = toBig(v, where);
      if (b < MIN_I64 || b > MAX_I64) throw new EncodeError(`${where}: ${b} is out of range for ${f.kind}`);
      if (f.kind === 'int64') writeBig64(w, b);
      else if (f.kind === 'sint64') writeBig64(w, (b << 1n) ^ (b >> 63n));
      else { const t = Buffer.allocUnsafe(8); t.writeBigInt64LE(b); w.bytes(t); }
      return;
    }
    case 'fixed32': { const t = Buffer.allocUnsafe(4); t.writeUInt32LE(toInt(v, where, 0, 0xffffffff)); w.bytes(t); return; }
    case 'sfixed32': { const t = Buffer.allocUnsafe(4); t.writeInt32LE(toInt(v, where, -2147483648, 2147483647)); w.bytes(t); return; }
    case 'float': case 'double': {
      if (typeof v !== 'number') throw new EncodeError(`${where}: expected a number, got ${describe(v)}`);
      const t = Buffer.allocUnsafe(f.kind === 'float' ? 4 : 8);
      if (f.kind === 'float') t.writeFloatLE(v); else t.writeDoubleLE(v);
      w.bytes(t);
      return;
    }
    default:
      throw new EncodeError(`${where}: cannot encode kind ${f.kind}`);
  }
}

function writeLenValue(w: Writer, f: FieldDef, v: unknown, where: string, depth: number): void {
  let body: Buffer;
  if (f.kind === 'message') {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || Buffer.isBuffer(v)) {
      throw new EncodeError(`${where}: expected an object (${f.message!.name}), got ${describe(v)}`);
    }
    body = encodeMessageInner(f.message!, v as Msg, where, depth + 1);
  } else if (f.kind === 'string') {
    if (typeof v !== 'string') throw new EncodeError(`${where}: expected a string, got ${describe(v)}`);
    body = encodeString(v);
  } else {
    if (!(v instanceof Uint8Array)) throw new EncodeError(`${where}: expected a Buffer, got ${describe(v)}`);
    body = Buffer.isBuffer(v) ? v : Buffer.from(v);
  }
  w.uint(body.length);
  w.bytes(body);
}

function encodeMessageInner(def: MessageDef, msg: Msg, path: string, depth: number): Buffer {
  if (depth > MAX_DEPTH) throw new EncodeError(`${path}: nested deeper than ${MAX_DEPTH}`);
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg) || Buffer.isBuffer(msg)) {
    throw new EncodeError(`${path}: expected an object (${def.name}), got ${describe(msg)}`);
  }
  const w = new Writer();
  for (const key of Object.keys(msg)) {
    if (!def.byName.has(key) && msg[key] !== undefined) {
      throw new EncodeError(`${path}: ${def.name} has no field '${key}'`);
    }
  }
  const unknown = (msg as { [UNKNOWN_FIELDS]?: UnknownField[] })[UNKNOWN_FIELDS];
  const pending = unknown ? unknown.slice().sort((a, b) => a.id - b.id) : [];
  let u = 0;
  for (const f of def.fields) {
    while (u < pending.length && pending[u].id <= f.id) w.bytes(pending[u++].raw);
    const v = msg[f.name];
    const where = `${path}.${f.name}`;
    if (v === undefined) {
      if (f.required) throw new EncodeError(`${where}: required field is missing`);
      continue;
    }
    const wt = wireTypeOf(f);
    if (f.repeated) {
      if (!Array.isArray(v)) throw new EncodeError(`${where}: expected an array, got ${describe(v)}`);
      if (f.packed && wt !== WT_LEN) {
        if (v.length === 0) continue;
        const inner = new Writer();
        v.forEach((x, i) => writeScalar(inner, f, x, `${where}[${i}]`));
        const body = inner.finish();
        w.uint(f.id * 8 + WT_LEN);
        w.uint(body.length);
        w.bytes(body);
        continue;
      }
      v.forEach((x, i) => {
        w.uint(f.id * 8 + wt);
        if (wt === WT_LEN) writeLenValue(w, f, x, `${where}[${i}]`, depth);
        else writeScalar(w, f, x, `${where}[${i}]`);
      });
      continue;
    }
    w.uint(f.id * 8 + wt);
    if (wt === WT_LEN) writeLenValue(w, f, v, where, depth);
    else writeScalar(w, f, v, where);
  }
  while (u < pending.length) w.bytes(pending[u++].raw);
  return w.finish();
}

/** Encode `msg` as a `def` message; throws EncodeError naming the field path on bad input. */
export function encodeMessage(def: MessageDef, msg: Msg, path: string = def.name): Buffer {
  return encodeMessageInner(def, msg, path, 0);
}
