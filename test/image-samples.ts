/**
 * Representative entries for every image kind, built from the schemas: every field set (required,
 * optional, repeated with several elements, nested messages), extreme integer values, non-ASCII and
 * non-UTF-8 strings, all byte values; payloads consistent with their length fields.
 */
import type { Extra, ImageEntry, IpcMsgItem } from '../images/entry';
import { type ImageKind, IMAGE_KINDS } from '../images/registry';
import { type FieldDef, type MessageDef, schema } from '../images/schema';
import type { Msg } from '../images/wire';

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

function scalarSample(f: FieldDef, i: number): unknown {
  if (f.opts.ipadd) return [0x0100007f, 0, 0xffff0000, 0x01020304][i % 4];
  if (f.opts.dev) return f.opts.odev ? 0x801 + i : (8 << 20) | (1 + i);
  switch (f.kind) {
    case 'int32': return [-5, 2147483647, -2147483648][i % 3];
    case 'uint32': return [0xffffffff, 0, 7][i % 3];
    case 'sint32': return [-123, 2147483647][i % 2];
    case 'fixed32': return 0xdeadbeef;
    case 'sfixed32': return -2;
    case 'int64': return [-(1n << 63n), 42n][i % 2];
    case 'uint64': return [(1n << 64n) - 1n, 0x7f3b586d6a10n, 0n][i % 3];
    case 'sint64': return [-1n, -1234567890123n][i % 2];
    case 'fixed64': return [0x0123456789abcdefn, (1n << 64n) - 2n][i % 2];
    case 'sfixed64': return -3n;
    case 'bool': return i % 2 === 0;
    case 'string': return ['héllo ✓ 𝄞', '/tmp/a\udcffb', ''][i % 3];
    case 'bytes':
      // unix socket names go through quoted-printable in crit JSON, which folds "\r\n" to "\n"
      return f.opts.conv === 'unix_name' ? Buffer.from('\0abstract=name\xff', 'latin1') : ALL_BYTES.subarray(i, 200 + i);
    case 'float': return 1.5;
    case 'double': return -2.25;
    default: throw new Error(`no sample for ${f.kind}`);
  }
}

function valueSample(f: FieldDef, i: number, depth: number): unknown {
  if (f.kind === 'message') return messageSample(f.message!, depth + 1);
  if (f.kind === 'enum') {
    const values = [...f.enumDef!.byNumber.keys()];
    return values[(values.length - 1 - i + values.length) % values.length];
  }
  return scalarSample(f, i);
}

/** A message with every field set (recursive messages stop growing after a few levels). */
export function messageSample(def: MessageDef, depth = 0): Msg {
  const m: Msg = {};
  for (const f of def.fields) {
    if (f.kind === 'message' && !f.required && depth >= 3) continue;
    if (f.repeated) {
      const n = f.opts.ipadd ? 4 : f.kind === 'message' ? 2 : 3;
      m[f.name] = Array.from({ length: n }, (_, i) => valueSample(f, i, depth));
    } else {
      m[f.name] = valueSample(f, 0, depth);
    }
  }
  return m;
}

function entry(type: string, msg: Msg, extra?: Extra): ImageEntry {
  return extra === undefined ? { type, msg } : { type, msg, extra };
}

/** Sample images for a kind: each an entry list that is a valid image of that kind. */
export function kindSamples(k: ImageKind): ImageEntry[][] {
  const types = schema();
  const main = () => messageSample(types.message(k.message!));
  const data = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
  switch (k.payload) {
    case undefined: {
      if (k.firstMessage) {
        const head = messageSample(types.message(k.firstMessage));
        return [[entry(k.firstMessage, head), entry(k.message!, main()), entry(k.message!, { ...main(), vaddr: 0x1000n })], [entry(k.firstMessage, head)]];
      }
      const list = [entry(k.message!, main()), entry(k.message!, main())];
      // a message without required fields may be empty (seccomp.img of an unfiltered task is one)
      if (!types.message(k.message!).fields.some((f) => f.required)) list.push(entry(k.message!, {}));
      return [list, []];
    }
    case 'pipe-data': {
      const e = (n: number) => { const d = data(n, n); return entry(k.message!, { ...main(), bytes: d.length }, d); };
      return [[e(0), e(5000), e(77)]];
    }
    case 'sk-queue': {
      const e = (n: number) => { const d = data(n, 3); return entry(k.message!, { ...main(), length: d.length }, d); };
      return [[e(1), e(0), e(1500)]];
    }
    case 'bpfmap-data': {
      const kb = data(24, 1);
      const vb = data(40, 2);
      return [[entry(k.message!, { ...main(), keys_bytes: kb.length, values_bytes: vb.length }, Buffer.concat([kb, vb]))]];
    }
    case 'tcp-stream': {
      const inq = data(1000, 5);
      const outq = data(3, 6);
      return [[entry(k.message!, { ...main(), inq_len: inq.length, outq_len: outq.length }, { inq, outq })]];
    }
    case 'ipc-shm': {
      const d = data(4097, 9); // not a multiple of 4: exercises the padding
      return [[
        entry(k.message!, { ...main(), size: BigInt(d.length), in_pagemaps: false }, d),
        entry(k.message!, { ...main(), size: 8192n, in_pagemaps: true }),
      ]];
    }
    case 'ipc-sem': {
      const values = [0, 1, 65535, 300, 7];
      return [[entry(k.message!, { ...main(), nsems: values.length }, values), entry(k.message!, { ...main(), nsems: 0 }, [])]];
    }
    case 'ipc-msg': {
      const items: IpcMsgItem[] = [
        { msg: { mtype: 1n, msize: 5 }, data: Buffer.from('hello') },
        { msg: { mtype: (1n << 63n) + 5n, msize: 16 }, data: data(16, 4) },
        { msg: { mtype: 2n, msize: 0 }, data: Buffer.alloc(0) },
      ];
      return [[entry(k.message!, { ...main(), qnum: items.length }, items), entry(k.message!, { ...main(), qnum: 0 }, [])]];
    }
    case 'ghost-file': {
      const head = messageSample(types.message(k.firstMessage!));
      const whole = [entry(k.firstMessage!, { ...head, chunks: false }, data(10000, 7))];
      const c1 = data(4096, 1);
      const c2 = data(10, 2);
      const chunked = [
        entry(k.firstMessage!, { ...head, chunks: true }),
        entry(k.message!, { len: BigInt(c1.length), off: 0n }, c1),
        entry(k.message!, { len: BigInt(c2.length), off: 65536n }, c2),
      ];
      return [whole, chunked];
    }
  }
}

/** Every kind that has entries (raw kinds such as PAGES are plain files). */
export function entryKinds(): ImageKind[] {
  return IMAGE_KINDS.filter((k) => k.message !== undefined);
}
