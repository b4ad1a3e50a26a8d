/**
 * The encoding half of the wire codec (see wire.ts): fields in field-number order, unknown fields back
 * in their places, every value checked against its field's type with an error naming the field path.
 */
import { GodwitError } from '../util/errors';
import type { FieldDef, MessageDef } from './schema';
import { encodeString } from './strings';
import { MAX_DEPTH, type Msg, TWO32, UNKNOWN_FIELDS, type UnknownField, WT_LEN, wireTypeOf } from './wire-types';


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
