/**
 * The JSON form of an image exactly as CRIU's `crit decode --pretty` prints it, and its inverse
 * (what `crit encode` accepts). Rules, per field, in crit's order of precedence:
 *   enums -> value name; bytes -> base64 with a newline every 76 characters ((criu).conv "unix_name":
 *   quoted-printable); bools as is; integers: (criu).hex (inherited by nested messages) -> "0x..",
 *   (criu).dev -> "major:minor", (criu).flags -> "A | B | 0x..", (criu).dict -> a name; repeated
 *   (criu).ipadd -> ["address"]. The payload after an entry goes into "extra".
 * Inverse: strings in integer fields are read like Python's int(s, 0) unless a dev/flags/dict rule
 * applies, so both pretty and plain JSON encode.
 */
import { ImageError } from '../util/errors';
import type { Extra, ImageEntry, IpcMsgItem } from './entry';
import { critIpAddress, parseIpAddress } from './critip';
import { decodeDev, encodeDev, mapFlags, unmapFlags, dictName, dictValue, parsePyInt } from './critconv';
import { qpDecode, qpEncode } from './quopri';
import type { DecodedImage } from './framing';
import { critMagicName, type ImageKind, IMAGE_KINDS, kindByName } from './registry';
import { type FieldDef, type MessageDef, schema } from './schema';
import type { JsonValue } from './pyjson';
import { EncodeError, type Msg } from './wire';

type JObj = { [k: string]: JsonValue };

/** base64.encodebytes: lines of 76 characters, each ending in "\n". */
export function base64Lines(b: Buffer): string {
  const s = b.toString('base64');
  let out = '';
  for (let i = 0; i < s.length; i += 76) out += s.slice(i, i + 76) + '\n';
  return out;
}

function fromBase64(v: JsonValue, where: string): Buffer {
  if (typeof v !== 'string') throw new EncodeError(`${where}: expected a base64 string, got ${typeof v}`);
  return Buffer.from(v.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
}

// ---------------------------------------------------------------------------------------------
// message -> JSON

function intToJson(f: FieldDef, v: number | bigint, hex: boolean): JsonValue {
  if (hex) return (v < 0 ? '-0x' : '0x') + (v < 0 ? -BigInt(v) : BigInt(v)).toString(16);
  if (f.opts.dev) return decodeDev(BigInt(v), f.opts.odev === true);
  if (f.opts.flags) {
    const s = mapFlags(BigInt(v), f.opts.flags);
    if (s !== undefined) return s;
    return (v < 0 ? '-0x' : '0x') + (v < 0 ? -BigInt(v) : BigInt(v)).toString(16);
  }
  if (f.opts.dict) {
    const name = dictName(f.opts.dict, f.name, Number(v));
    if (name !== undefined) return name;
  }
  return v;
}

function valueToJson(f: FieldDef, v: unknown, hex: boolean): JsonValue {
  switch (f.kind) {
    case 'message': return messageToCrit(f.message!, v as Msg, hex);
    case 'bytes': return f.opts.conv === 'unix_name' ? qpEncode(v as Buffer) : base64Lines(v as Buffer);
    case 'enum': return f.enumDef!.byNumber.get(v as number) ?? (v as number);
    case 'bool': return v as boolean;
    case 'string': return v as string;
    case 'float': case 'double': return v as number;
    default: return intToJson(f, v as number | bigint, hex);
  }
}

/** One message as crit's pb2dict(pretty=True) makes it. */
export function messageToCrit(def: MessageDef, msg: Msg, inheritedHex = false): JObj {
  const out: JObj = {};
  for (const f of def.fields) {
    const v = msg[f.name];
    if (v === undefined) continue;
    const hex = inheritedHex || f.opts.hex === true;
    if (f.repeated) {
      const arr = v as unknown[];
      if (arr.length === 0) continue; // an empty repeated field is not "set" in protobuf
      if (f.opts.ipadd && (arr.length === 1 || arr.length === 4) && f.kind !== 'message') {
        out[f.name] = [critIpAddress(arr as number[])];
      } else {
        out[f.name] = arr.map((x) => valueToJson(f, x, hex));
      }
    } else {
      out[f.name] = valueToJson(f, v, hex);
    }
  }
  return out;
}

function extraToCrit(kind: ImageKind, extra: Extra | undefined): JsonValue | undefined {
  if (kind.payload === undefined) return undefined;
  switch (kind.payload) {
    case 'tcp-stream': {
      const q = extra as { inq: Buffer; outq: Buffer };
      return { inq: base64Lines(q.inq), outq: base64Lines(q.outq) };
    }
    case 'ipc-sem': return extra as number[];
    case 'ipc-msg': {
      // crit lists message and text alternately, the message in plain (not pretty) form
      const out: JsonValue[] = [];
      for (const it of extra as IpcMsgItem[]) {
        out.push({ mtype: it.msg.mtype as bigint, msize: it.msg.msize as number });
        out.push(base64Lines(it.data));
      }
      return out;
    }
    default:
      return extra === undefined ? undefined : base64Lines(extra as Buffer);
  }
}

/** A decoded image in crit's form: { magic, entries }. */
export function imageToCrit(img: DecodedImage): JObj {
  const types = schema();
  const entries = img.entries.map((e) => {
    const o = messageToCrit(types.message(e.type), e.msg);
    if (img.kind.payload === 'ghost-file') {
      if (e.extra !== undefined) o.extra = base64Lines(e.extra as Buffer);
    } else {
      const x = extraToCrit(img.kind, e.extra);
      if (x !== undefined) o.extra = x;
      else if (img.kind.payload === 'pipe-data' || img.kind.payload === 'sk-queue' || img.kind.payload === 'bpfmap-data') o.extra = '';
    }
    return o;
  });
  return { magic: critMagicName(img.kind), entries };
}

// ---------------------------------------------------------------------------------------------
// JSON -> message

function intFromJson(f: FieldDef, v: JsonValue, where: string): number | bigint {
  let n: bigint;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new EncodeError(`${where}: ${v} is not an integer`);
    n = BigInt(v);
  } else if (typeof v === 'bigint') {
    n = v;
  } else if (typeof v === 'boolean') {
    n = v ? 1n : 0n;
  } else if (typeof v === 'string') {
    if (f.opts.dev) n = encodeDev(v, f.opts.odev === true, where);
    else if (f.opts.flags && unmapFlags(v, f.opts.flags, where) !== undefined) n = unmapFlags(v, f.opts.flags, where)!;
    else if (f.opts.dict && dictValue(f.opts.dict, f.name, v) !== undefined) n = BigInt(dictValue(f.opts.dict, f.name, v)!);
    else n = parsePyInt(v, where);
  } else {
    throw new EncodeError(`${where}: expected an integer, got ${v === null ? 'null' : typeof v}`);
  }
  const is64 = f.kind.endsWith('64');
  if (is64) return n;
  if (n < -(1n << 63n) || n > (1n << 64n)) throw new EncodeError(`${where}: ${n} is out of range`);
  return Number(n);
}

function valueFromJson(f: FieldDef, v: JsonValue, where: string): unknown {
  switch (f.kind) {
    case 'message':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new EncodeError(`${where}: expected an object`);
      return messageFromCrit(f.message!, v as JObj, where);
    case 'bytes':
      if (f.opts.conv === 'unix_name') {
        if (typeof v !== 'string') throw new EncodeError(`${where}: expected a quoted-printable string`);
        return qpDecode(v);
      }
      return fromBase64(v, where);
    case 'enum': {
      if (typeof v === 'string') {
        const n = f.enumDef!.byName.get(v);
        if (n === undefined) throw new EncodeError(`${where}: '${v}' is not a value of enum ${f.enumDef!.name}`);
        return n;
      }
      if (typeof v === 'number' && Number.isInteger(v)) return v;
      throw new EncodeError(`${where}: expected an enum name, got ${typeof v}`);
    }
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (v === 0 || v === 1) return v === 1;
      throw new EncodeError(`${where}: expected true or false`);
    case 'string':
      if (typeof v !== 'string') throw new EncodeError(`${where}: expected a string`);
      return v;
    case 'float': case 'double':
      if (typeof v !== 'number') throw new EncodeError(`${where}: expected a number`);
      return v;
    default:
      return intFromJson(f, v, where);
  }
}

/** Inverse of messageToCrit (also accepts crit's non-pretty output). */
export function messageFromCrit(def: MessageDef, obj: JObj, where: string = def.name): Msg {
  const out: Msg = {};
  for (const key of Object.keys(obj)) {
    if (!def.byName.has(key)) throw new EncodeError(`${where}: ${def.name} has no field '${key}'`);
  }
  for (const f of def.fields) {
    const v = obj[f.name];
    if (v === undefined) continue;
    const at = `${where}.${f.name}`;
    if (f.repeated) {
      if (!Array.isArray(v)) throw new EncodeError(`${at}: expected an array`);
      if (f.opts.ipadd && v.length > 0 && typeof v[0] === 'string') {
        out[f.name] = parseIpAddress(v[0], at);
        continue;
      }
      out[f.name] = v.map((x, i) => valueFromJson(f, x, `${at}[${i}]`));
    } else {
      out[f.name] = valueFromJson(f, v, at);
    }
  }
  return out;
}

function extraFromCrit(kind: ImageKind, v: JsonValue | undefined, where: string): Extra | undefined {
  if (v === undefined) return undefined;
  switch (kind.payload) {
    case undefined:
      throw new EncodeError(`${where}: ${kind.kind} entries have no "extra"`);
    case 'tcp-stream': {
      const o = v as JObj;
      if (typeof o !== 'object' || o === null) throw new EncodeError(`${where}: expected { inq, outq }`);
      return { inq: fromBase64(o.inq ?? '', `${where}.inq`), outq: fromBase64(o.outq ?? '', `${where}.outq`) };
    }
    case 'ipc-sem':
      if (!Array.isArray(v)) throw new EncodeError(`${where}: expected an array of semaphore values`);
      return v.map((x) => Number(x));
    case 'ipc-msg': {
      if (!Array.isArray(v) || v.length % 2 !== 0) throw new EncodeError(`${where}: expected [message, data, message, data, ...]`);
      const def = schema().message('ipc_msg');
      const items: IpcMsgItem[] = [];
      for (let i = 0; i < v.length; i += 2) {
        items.push({ msg: messageFromCrit(def, v[i] as JObj, `${where}[${i}]`), data: fromBase64(v[i + 1], `${where}[${i + 1}]`) });
      }
      return items;
    }
    default:
      return fromBase64(v, where);
  }
}

/** crit's { magic, entries } back to entries ready for encodeImage(). */
export function imageFromCrit(json: JsonValue, file = '<json>'): { kind: ImageKind; entries: ImageEntry[] } {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ImageError(file, 0, 'expected a JSON object { "magic": ..., "entries": [...] }');
  }
  const magic = (json as JObj).magic;
  const entries = (json as JObj).entries;
  if (typeof magic !== 'string') throw new ImageError(file, 0, 'missing "magic" (a kind name such as "CORE")');
  const kind = kindByName(magic);
  if (!kind || kind.magic === 0 || !kind.message) {
    const known = IMAGE_KINDS.filter((k) => k.message && !k.sameAs).map((k) => k.kind).join(', ');
    throw new ImageError(file, 0, `unknown magic "${magic}"; known: ${known}`);
  }
  if (!Array.isArray(entries)) throw new ImageError(file, 0, '"entries" must be an array');
  const types = schema();
  const out: ImageEntry[] = [];
  let ghostChunks = false;
  entries.forEach((raw, i) => {
    const where = `entries[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ImageError(file, 0, `${where}: expected an object`);
    const { extra, ...fields } = raw as JObj;
    const typeName = i === 0 && kind.firstMessage ? kind.firstMessage : kind.message!;
    try {
      const msg = messageFromCrit(types.message(typeName), fields, where);
      const e: ImageEntry = { type: typeName, msg };
      if (kind.payload === 'ghost-file') {
        if (i === 0) ghostChunks = msg.chunks === true;
        if (extra !== undefined && (i > 0 || !ghostChunks)) e.extra = fromBase64(extra, `${where}.extra`);
      } else {
        const x = extraFromCrit(kind, extra, `${where}.extra`);
        if (x !== undefined) e.extra = x;
      }
      out.push(e);
    } catch (err) {
      if (err instanceof ImageError) throw err;
      throw new ImageError(file, 0, (err as Error).message);
    }
  });
  return { kind, entries: out };
}
