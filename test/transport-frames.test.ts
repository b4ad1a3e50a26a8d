import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { compress } from 'zstd-napi';
import {
  FrameDecoder, FrameType, HEADER_SIZE, Message, PREAMBLE, PROTOCOL_VERSION, ProtocolError, checkName, encodeFrame,
  encodeMessage,
} from '../transport/frames';

/** A deterministic PRNG so that a failing fuzz case can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

function senderStream(): Buffer {
  const raw = Buffer.concat([Buffer.alloc(3000, 7), randomBytes(1000)]);
  const z = compress(raw);
  const msgs: Message[] = [
    { type: FrameType.Hello, hello: { protocol: PROTOCOL_VERSION, godwit: '0.1.0', role: 'sender', caps: ['zstd'] } },
    { type: FrameType.FileBegin, id: 1, mode: 0o600, size: raw.length * 2, name: 'dir/pages-1.img' },
    { type: FrameType.Data, id: 1, rawLength: raw.length, zstd: true, data: z },
    { type: FrameType.Data, id: 1, rawLength: raw.length, zstd: false, data: raw },
    { type: FrameType.FileEnd, id: 1, size: raw.length * 2, crc: 0x12345678 },
    { type: FrameType.FileBegin, id: 2, mode: 0o644, name: 'manifest' },
    { type: FrameType.FileEnd, id: 2, size: 0, crc: 0 },
    { type: FrameType.End, files: 2, bytes: raw.length * 2 },
    { type: FrameType.Commit },
    { type: FrameType.Abort, reason: 'bye' },
  ];
  return Buffer.concat([PREAMBLE, ...msgs.flatMap((m) => encodeMessage(m))]);
}

function decodeAll(bytes: Buffer, from: 'sender' | 'receiver', cut: (n: number) => number): Message[] {
  const d = new FrameDecoder('test stream', from);
  const out: Message[] = [];
  for (let off = 0; off < bytes.length;) {
    const n = Math.max(1, Math.min(cut(bytes.length - off), bytes.length - off));
    d.push(bytes.subarray(off, off + n));
    off += n;
    for (let m = d.next(); m; m = d.next()) out.push(m);
  }
  if (d.pending > 0) throw new ProtocolError('test stream', d.offset, 'truncated');
  return out;
}

describe('transport frames', () => {
  test('every message type round-trips, whole or a byte at a time', () => {
    const bytes = senderStream();
    const whole = decodeAll(bytes, 'sender', (n) => n);
    const bytewise = decodeAll(bytes, 'sender', () => 1);
    expect(whole.map((m) => m.type)).toEqual([1, 2, 3, 3, 4, 2, 4, 5, 7, 6]);
    // Data read a byte at a time comes in parts; joined, it is the same data.
    const joined = (ms: Message[]) => ms.map((m) => (m.type === FrameType.Data ? { ...m, data: m.data, parts: undefined } : m));
    expect(bytewise.filter((m) => m.type === FrameType.Data).every((m) => (m as { parts?: Buffer[] }).parts !== undefined)).toBe(true);
    expect(joined(bytewise)).toEqual(joined(whole));
    const begin = whole[1] as Extract<Message, { type: FrameType.FileBegin }>;
    expect(begin).toMatchObject({ id: 1, mode: 0o600, size: 8000, name: 'dir/pages-1.img' });
    expect((whole[5] as { size?: number }).size).toBeUndefined();
    const data = whole[2] as Extract<Message, { type: FrameType.Data }>;
    expect(data.zstd).toBe(true);
    expect(data.rawLength).toBe(4000);

    const back: Message[] = [
      { type: FrameType.Hello, hello: { protocol: 1, godwit: 'x', role: 'receiver', caps: [], window: 16 << 20 } },
      { type: FrameType.Credit, bytes: 1 << 20 },
      { type: FrameType.Error, code: 'ENOSPC', message: 'disk full' },
      { type: FrameType.Complete, files: 3, bytes: 2 ** 40 },
      { type: FrameType.Ready, info: { pids: [1, 2] } },
      { type: FrameType.Running, info: {} },
      { type: FrameType.Reserved, bytes: 3 * 2 ** 40 },
    ];
    const rb = Buffer.concat([PREAMBLE, ...back.flatMap((m) => encodeMessage(m))]);
    expect(decodeAll(rb, 'receiver', () => 5)).toEqual(back);
  });

  test('data spread over many reads stays in its pieces, uncopied, with its crc computed once over them', () => {
    const raw = randomBytes(200_000);
    const bytes = Buffer.concat([PREAMBLE, ...encodeMessage({ type: FrameType.Data, id: 7, rawLength: raw.length, zstd: false, data: raw })]);
    const reads: Buffer[] = [];
    const d = new FrameDecoder('test stream', 'sender');
    for (let off = 0; off < bytes.length; off += 65536) {
      const chunk = Buffer.from(bytes.subarray(off, off + 65536));
      reads.push(chunk);
      d.push(chunk);
    }
    const m = d.next() as Extract<Message, { type: FrameType.Data }>;
    expect(m.parts!.length).toBeGreaterThan(3);
    // Views of the chunks as they were pushed, not copies.
    expect(m.parts!.every((p) => reads.some((r) => r.buffer === p.buffer))).toBe(true);
    expect(Buffer.concat(m.parts!).equals(raw)).toBe(true);
    expect(m.data.equals(raw)).toBe(true);
    expect(m.crc).toBe(crc32(raw) >>> 0);
    expect(d.pending).toBe(0);
  });

  test('a flipped byte in a middle piece of spread data is a checksum error', () => {
    const raw = randomBytes(200_000);
    const bytes = Buffer.concat([PREAMBLE, ...encodeMessage({ type: FrameType.Data, id: 7, rawLength: raw.length, zstd: false, data: raw })]);
    bytes[100_000] ^= 0x40;
    expect(() => decodeAll(bytes, 'sender', () => 65536)).toThrow(/payload checksum mismatch/);
  });

  test('direction is enforced: a receiver cannot send file data, a sender cannot grant credit', () => {
    const credit = Buffer.concat([PREAMBLE, ...encodeMessage({ type: FrameType.Credit, bytes: 5 })]);
    expect(() => decodeAll(credit, 'sender', (n) => n)).toThrow(/Credit frame cannot come from the sender/);
  });

  test('a shell answer instead of the preamble is named at once', () => {
    const d = new FrameDecoder('stream from h', 'receiver');
    d.push(Buffer.from('bash: godwit: command not found\n'));
    expect(() => d.next()).toThrow(/not a godwit stream.*bash: godwit/);
  });

  test('lengths are checked before anything is allocated', () => {
    const [h] = encodeFrame(FrameType.Data, Buffer.alloc(0));
    h.writeUInt32LE(0xfffffff0, 4); // claims 4 GiB
    h.writeUInt32LE(crc32(h.subarray(0, 12)), 12);
    const d = new FrameDecoder('s', 'sender');
    d.push(Buffer.concat([PREAMBLE, h]));
    expect(() => d.next()).toThrow(/exceeds the limit/);
    try {
      d.next();
    } catch (e) {
      expect((e as ProtocolError).offset).toBe(PREAMBLE.length);
    }
  });

  test('a damaged header or payload is a checksum error naming the frame and offset', () => {
    const bytes = senderStream();
    const flipped = Buffer.from(bytes);
    flipped[PREAMBLE.length + 5] ^= 0x01; // first frame's length
    expect(() => decodeAll(flipped, 'sender', (n) => n)).toThrow(/offset 8: frame 0: header checksum mismatch/);
    const flipped2 = Buffer.from(bytes);
    flipped2[flipped2.length - 2] ^= 0x40; // last frame's payload
    expect(() => decodeAll(flipped2, 'sender', (n) => n)).toThrow(/frame 9 \(Abort\): payload checksum mismatch/);
  });

  test('names: relative only, no "..", no absolute, no reserved names', () => {
    for (const bad of ['../x', '/etc/passwd', 'a/../../b', 'a/./b', '', 'a//b', 'a/', '.godwit-part-1', 'x/.godwit-receiving', 'a\0b', '..']) {
      expect(checkName(bad)).toBeDefined();
    }
    for (const good of ['pages-1.img', 'sub/dir/core-7.img', '..x', 'x..', '.hidden']) expect(checkName(good)).toBeUndefined();
    expect(checkName('a/'.repeat(40) + 'b')).toMatch(/deeper/);
    expect(checkName('x'.repeat(256))).toMatch(/longer than 255/);
  });

  test('fuzz: thousands of mutated streams give frames or a ProtocolError, never anything else, never a hang', () => {
    const base = senderStream();
    const rnd = prng(0x60d317);
    const started = Date.now();
    let parsed = 0;
    let rejected = 0;
    const N = 6000;
    for (let i = 0; i < N; i++) {
      const b = Buffer.from(base);
      let m: Buffer = b;
      const kind = i % 6;
      if (kind === 0) {
        // bit flips
        for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) b[Math.floor(rnd() * b.length)] ^= 1 << Math.floor(rnd() * 8);
      } else if (kind === 1) {
        m = b.subarray(0, Math.floor(rnd() * b.length)); // truncation
      } else if (kind === 2) {
        // a random header with a valid header checksum (so the payload rules are what is tested)
        const at = PREAMBLE.length + Math.floor(rnd() * 4) * HEADER_SIZE;
        const h = Buffer.from(randomBytes(12));
        h[0] = [1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 99][Math.floor(rnd() * 13)]!;
        h[2] = 0;
        h[3] = 0;
        const payload = randomBytes(Math.floor(rnd() * 64));
        h.writeUInt32LE(rnd() < 0.5 ? payload.length : h.readUInt32LE(4) & 0xffff, 4);
        h.writeUInt32LE(crc32(payload), 8);
        const hc = Buffer.alloc(4);
        hc.writeUInt32LE(crc32(h));
        m = Buffer.concat([b.subarray(0, at), h, hc, payload, b.subarray(at)]);
      } else if (kind === 3) {
        // well-formed frames with random payloads of random types: exercises field validation
        const t = [1, 2, 3, 4, 5, 6, 7][Math.floor(rnd() * 7)]!;
        const payload = randomBytes(Math.floor(rnd() * 40));
        const [h] = encodeFrame(t as FrameType, payload, Math.floor(rnd() * 4));
        h.writeUInt32LE(crc32(payload), 8);
        m = Buffer.concat([PREAMBLE, h, payload]);
      } else if (kind === 4) {
        // splice: a chunk of the stream repeated or dropped
        const a = Math.floor(rnd() * b.length);
        const c = Math.floor(rnd() * b.length);
        m = Buffer.concat([b.subarray(0, a), b.subarray(c)]);
      } else {
        m = Buffer.concat([b.subarray(0, Math.floor(rnd() * b.length)), randomBytes(Math.floor(rnd() * 100))]);
      }
      try {
        decodeAll(m, 'sender', () => 1 + Math.floor(rnd() * 300));
        parsed++;
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw new Error(`mutation ${i} (kind ${kind}) threw ${String(err)}`);
        expect(err.code).toBe('EPROTO');
        expect(err.message).toMatch(/at offset \d+/);
        rejected++;
      }
    }
    expect(parsed + rejected).toBe(N);
    expect(rejected).toBeGreaterThan(N / 2);
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});
