/**
 * Protocol-buffer wire codec for CRIU image messages, driven by schema.ts.
 *
 * Decoded messages are plain objects keyed by the .proto field names: 64-bit integers are bigint,
 * 32-bit ones and enums are numbers, bytes are Buffers, repeated fields are arrays, and a field that
 * was not on the wire is absent. Encoding (wire-encode.ts) writes fields in field-number order, as
 * protobuf-c does, with fields the schema does not know back in their places, so decode -> encode gives
 * the same bytes for anything CRIU wrote.
 */
import type { FieldDef, MessageDef } from './schema';
import { decodeString } from './strings';

import { MAX_DEPTH, type Msg, TWO32, UNKNOWN_FIELDS, type UnknownField, WT_I32, WT_I64, WT_LEN, WT_VARINT, wireTypeOf } from './wire-types';

export { EncodeError, encodeMessage } from './wire-encode';
export { decodeString, encodeString } from './strings';
export { type Msg, UNKNOWN_FIELDS, type UnknownField } from './wire-types';

/** A problem at `pos` (an offset into the buffer being decoded). */
export class WireError extends Error {
  constructor(readonly pos: number, message: string) {
    super(message);
  }
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

