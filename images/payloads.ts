/**
 * The raw payloads some kinds put after an entry (as CRIU writes them and crit reads them):
 *
 *   pipe-data    pipe_data_entry.bytes raw bytes            (pipes-data.img, fifo-data.img)
 *   sk-queue     sk_packet_entry.length raw bytes           (sk-queues.img)
 *   tcp-stream   inq_len bytes of receive queue, then outq_len of send queue
 *   bpfmap-data  keys_bytes + values_bytes raw bytes
 *   ipc-shm      size bytes, zero-padded to a multiple of 4 (none when in_pagemaps is set)
 *   ipc-sem      nsems little-endian u16 values, zero-padded to a multiple of 8 bytes
 *   ipc-msg      qnum times: u32 length + ipc_msg, then msize bytes zero-padded to a multiple of 8
 *   ghost-file   handled in framing.ts (it changes the entry sequence itself)
 */
import { ImageError } from '../util/errors';
import type { Extra, IpcMsgItem, Need } from './entry';
import { MAX_ENTRY_SIZE } from './entry';
import type { PayloadKind } from './registry';
import { schema } from './schema';
import { decodeMessage, encodeMessage, EncodeError, type Msg, WireError } from './wire';

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** A length field of `msg` as a safe number. */
function lengthField(msg: Msg, name: string, file: string, offset: number): number {
  const v = msg[name];
  const n = typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : NaN) : typeof v === 'number' ? v : 0;
  if (!Number.isSafeInteger(n) || n < 0) throw new ImageError(file, offset, `payload length field '${name}' = ${String(v)} is not usable`);
  return n;
}

/** Read the payload after `msg` (entry ended at `offset`); returns it and the bytes consumed. */
export function* readPayload(
  kind: PayloadKind,
  msg: Msg,
  file: string,
  offset: number,
): Generator<Need, { extra?: Extra; size: number }, unknown> {
  const read = function* (n: number, what: string): Generator<Need, Buffer, unknown> {
    return (yield { op: 'read', n, what }) as Buffer;
  };
  switch (kind) {
    case 'pipe-data': {
      const n = lengthField(msg, 'bytes', file, offset);
      return { extra: yield* read(n, `${n} bytes of pipe data`), size: n };
    }
    case 'sk-queue': {
      const n = lengthField(msg, 'length', file, offset);
      return { extra: yield* read(n, `${n} bytes of queued packet`), size: n };
    }
    case 'bpfmap-data': {
      const n = lengthField(msg, 'keys_bytes', file, offset) + lengthField(msg, 'values_bytes', file, offset);
      return { extra: yield* read(n, `${n} bytes of bpf map keys and values`), size: n };
    }
    case 'tcp-stream': {
      const i = lengthField(msg, 'inq_len', file, offset);
      const o = lengthField(msg, 'outq_len', file, offset);
      const inq = yield* read(i, `${i} bytes of TCP receive queue`);
      const outq = yield* read(o, `${o} bytes of TCP send queue`);
      return { extra: { inq, outq }, size: i + o };
    }
    case 'ipc-shm': {
      if (msg.in_pagemaps === true) return { size: 0 };
      const n = lengthField(msg, 'size', file, offset);
      const padded = roundUp(n, 4);
      const b = yield* read(padded, `${n} bytes of shared memory segment (padded to ${padded})`);
      return { extra: b.subarray(0, n), size: padded };
    }
    case 'ipc-sem': {
      const count = lengthField(msg, 'nsems', file, offset);
      const padded = roundUp(count * 2, 8);
      const b = yield* read(padded, `${count} semaphore values (padded to ${padded} bytes)`);
      const values: number[] = [];
      for (let i = 0; i < count; i++) values.push(b.readUInt16LE(i * 2));
      return { extra: values, size: padded };
    }
    case 'ipc-msg': {
      const qnum = lengthField(msg, 'qnum', file, offset);
      const def = schema().message('ipc_msg');
      const items: IpcMsgItem[] = [];
      let size = 0;
      for (let q = 0; q < qnum; q++) {
        const at = offset + size;
        const len = (yield* read(4, `length of queued message ${q}`)).readUInt32LE(0);
        if (len > MAX_ENTRY_SIZE) throw new ImageError(file, at, `queued message ${q} claims ${len} bytes (limit ${MAX_ENTRY_SIZE})`);
        const body = yield* read(len, `queued message ${q} header`);
        let m: Msg;
        try {
          m = decodeMessage(def, body);
        } catch (e) {
          if (e instanceof WireError) throw new ImageError(file, at + 4 + e.pos, `ipc_msg: ${e.message}`);
          throw e;
        }
        const msize = lengthField(m, 'msize', file, at);
        const padded = roundUp(msize, 8);
        const data = yield* read(padded, `${msize} bytes of queued message ${q} (padded to ${padded})`);
        items.push({ msg: m, data: data.subarray(0, msize) });
        size += 4 + len + padded;
      }
      return { extra: items, size };
    }
    default:
      throw new ImageError(file, offset, `no reader for payload kind '${kind as string}'`);
  }
}

function zeros(n: number): Buffer {
  return Buffer.alloc(n);
}

function needBuffer(extra: unknown, what: string): Buffer {
  if (!Buffer.isBuffer(extra)) throw new EncodeError(`${what}: payload must be a Buffer`);
  return extra;
}

function checkLen(actual: number, msg: Msg, field: string, what: string): void {
  const v = msg[field];
  const want = typeof v === 'bigint' ? Number(v) : (v as number);
  if (actual !== want) throw new EncodeError(`${what}: payload has ${actual} bytes but ${field} says ${String(v)}`);
}

/** The bytes of the payload after `msg` (checked against the entry's length fields). */
export function encodePayload(kind: PayloadKind, msg: Msg, extra: Extra | undefined, what: string): Buffer[] {
  switch (kind) {
    case 'pipe-data': {
      const b = extra === undefined ? Buffer.alloc(0) : needBuffer(extra, what);
      checkLen(b.length, msg, 'bytes', what);
      return [b];
    }
    case 'sk-queue': {
      const b = extra === undefined ? Buffer.alloc(0) : needBuffer(extra, what);
      checkLen(b.length, msg, 'length', what);
      return [b];
    }
    case 'bpfmap-data': {
      const b = extra === undefined ? Buffer.alloc(0) : needBuffer(extra, what);
      const want = Number(msg.keys_bytes) + Number(msg.values_bytes);
      if (b.length !== want) throw new EncodeError(`${what}: payload has ${b.length} bytes but keys_bytes + values_bytes = ${want}`);
      return [b];
    }
    case 'tcp-stream': {
      const q = (extra ?? { inq: Buffer.alloc(0), outq: Buffer.alloc(0) }) as { inq: Buffer; outq: Buffer };
      if (!Buffer.isBuffer(q.inq) || !Buffer.isBuffer(q.outq)) throw new EncodeError(`${what}: payload must be { inq: Buffer, outq: Buffer }`);
      checkLen(q.inq.length, msg, 'inq_len', what);
      checkLen(q.outq.length, msg, 'outq_len', what);
      return [q.inq, q.outq];
    }
    case 'ipc-shm': {
      if (msg.in_pagemaps === true) {
        if (extra !== undefined && (!Buffer.isBuffer(extra) || extra.length > 0)) throw new EncodeError(`${what}: in_pagemaps is set, so no payload may follow`);
        return [];
      }
      const b = extra === undefined ? Buffer.alloc(0) : needBuffer(extra, what);
      checkLen(b.length, msg, 'size', what);
      return [b, zeros(roundUp(b.length, 4) - b.length)];
    }
    case 'ipc-sem': {
      const values = (extra ?? []) as number[];
      if (!Array.isArray(values)) throw new EncodeError(`${what}: payload must be an array of u16 values`);
      checkLen(values.length, msg, 'nsems', what);
      const b = Buffer.alloc(roundUp(values.length * 2, 8));
      values.forEach((v, i) => {
        if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new EncodeError(`${what}: semaphore value [${i}] = ${String(v)} is not a u16`);
        b.writeUInt16LE(v, i * 2);
      });
      return [b];
    }
    case 'ipc-msg': {
      const items = (extra ?? []) as IpcMsgItem[];
      if (!Array.isArray(items)) throw new EncodeError(`${what}: payload must be an array of { msg, data }`);
      checkLen(items.length, msg, 'qnum', what);
      const def = schema().message('ipc_msg');
      const out: Buffer[] = [];
      items.forEach((it, i) => {
        const body = encodeMessage(def, it.msg, `${what}[${i}].msg`);
        const data = needBuffer(it.data, `${what}[${i}].data`);
        checkLen(data.length, it.msg, 'msize', `${what}[${i}]`);
        const len = Buffer.alloc(4);
        len.writeUInt32LE(body.length);
        out.push(len, body, data, zeros(roundUp(data.length, 8) - data.length));
      });
      return out;
    }
    default:
      throw new EncodeError(`${what}: no writer for payload kind '${kind as string}'`);
  }
}
