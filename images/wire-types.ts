/**
 * Definitions shared by the decoding (wire.ts) and encoding (wire-encode.ts) halves of the codec.
 */
import type { FieldDef } from './schema';

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

export const WT_VARINT = 0;
export const WT_I64 = 1;
export const WT_LEN = 2;
export const WT_I32 = 5;

export const TWO32 = 4294967296;

/** Protobuf nesting is shallow in CRIU's schemas; a deep chain is garbage (and would blow the stack). */
export const MAX_DEPTH = 64;

export function wireTypeOf(f: FieldDef): number {
  switch (f.kind) {
    case 'fixed64': case 'sfixed64': case 'double': return WT_I64;
    case 'fixed32': case 'sfixed32': case 'float': return WT_I32;
    case 'string': case 'bytes': case 'message': return WT_LEN;
    default: return WT_VARINT;
  }
}
