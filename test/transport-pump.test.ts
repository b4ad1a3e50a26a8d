/**
 * The native frame pump (native/addon/pump.c) on its own: it splits a stream into frames, writes the raw data
 * frames of the files it was given and passes everything else on whole, in order, with stream offsets. Checked
 * against the JavaScript encoder and decoder on real files: every way of cutting the stream into reads gives the
 * same file and the same frames; what it may not vouch for goes to JavaScript; bad bytes are an error or are
 * passed on, never a crash. `godwit receive` end to end (through the pump) is covered by test/transport-send and
 * every migrate test.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { loadAddon, type NativePump } from '../native/addon';
import { crc32, crc32Combine } from '../images/crc32';
import { encodeMessage, FrameDecoder, FrameType, frameOffsets, type Message, PREAMBLE, ProtocolError } from '../transport/frames';
import { watchIdle } from '../migrate/idle';
import { PipeReader } from '../transport/pipe-reader';
import { tempDir } from './transport-helpers';

const Pump = loadAddon()?.Pump;
if (!Pump) throw new Error('the addon has no Pump: run `make -C native` (the CPU must have PCLMULQDQ)');

const wire = (ms: Message[]): Buffer => Buffer.concat([PREAMBLE, ...ms.flatMap((m) => encodeMessage(m))]);

function dataFrames(id: number, content: Buffer, chunk: number): Message[] {
  const out: Message[] = [];
  for (let at = 0; at < content.length; at += chunk) {
    const data = content.subarray(at, at + chunk);
    out.push({ type: FrameType.Data, id, rawLength: data.length, zstd: false, data });
  }
  return out;
}

/**
 * Feeds `bytes` in reads cut by `cuts` (sizes, cycled), `fast(i)` saying whether the consumer is idle at read i;
 * what the pump leaves of a read is fed again at once, as the receiver does once idle (PipeReader.kick()).
 * Returns what was passed on and what was taken.
 */
function run(pump: NativePump, counters: Float64Array, bytes: Buffer, cuts: number[], fast: (i: number) => boolean) {
  const given: Array<{ buf: Buffer; at: number }> = [];
  counters.fill(0);
  let stops = 0;
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(cuts[i % cuts.length]!, bytes.length - at);
    let piece = bytes.subarray(at, at + n);
    for (let idle = fast(i); ; idle = true) {
      const out = pump.feed(piece, idle);
      for (let k = 1; out && k < out.length; k += 2) given.push({ buf: out[k] as Buffer, at: out[k + 1] as number });
      if (!out || out[0] === piece.length) break;
      stops++;
      piece = piece.subarray(out[0]);
    }
    at += n;
  }
  return { given, data: counters[0]!, credit: counters[1]!, frames: counters[2]!, stops };
}

describe('native frame pump', () => {
  let dir: string;
  const pumps: NativePump[] = [];
  const fds: number[] = [];
  const make = () => {
    const counters = new Float64Array(new ArrayBuffer(24));
    const pump = new Pump!(counters);
    pumps.push(pump);
    return { pump, counters };
  };
  const file = (name: string, flags = 'w+') => {
    const fd = fs.openSync(path.join(dir, name), flags, 0o600);
    fds.push(fd);
    return fd;
  };
  beforeEach(() => {
    dir = tempDir('pump');
  });
  afterEach(() => {
    for (const p of pumps.splice(0)) {
      try {
        p.close();
      } catch {
        // closed by the test
      }
    }
    for (const fd of fds.splice(0)) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a file sent in frames of every size lands whole, whatever the reads; the other frames come through whole, with their offsets', () => {
    const content = randomBytes((5 << 20) + 12345);
    const ms: Message[] = [
      { type: FrameType.Hello, hello: { protocol: 1, godwit: 't', role: 'sender', caps: [] } },
      ...dataFrames(7, content, (1 << 20) + 3),
      { type: FrameType.FileEnd, id: 7, size: content.length, crc: crc32(content) },
      { type: FrameType.End, files: 1, bytes: content.length },
    ];
    const bytes = wire(ms);
    for (const cuts of [[bytes.length], [7, 4096, 13], [256 << 10], [23, 1 << 20, 17, 3]]) {
      const { pump, counters } = make();
      const fd = file(`f-${cuts.join('-')}`);
      pump.open(7, fd, -1, content.length);
      const r = run(pump, counters, bytes, cuts, () => true);
      expect(pump.finish(7)).toEqual({ size: content.length, crc: crc32(content) });
      expect(fs.readFileSync(path.join(dir, `f-${cuts.join('-')}`)).equals(content)).toBe(true);
      expect({ data: r.data, frames: r.frames, credit: r.credit }).toEqual({ data: content.length, frames: 6, credit: content.length + 8 * 6 });
      // Passed on: the preamble, Hello, FileEnd and End, each whole and at its stream offset.
      const expected: Array<{ at: number; len: number }> = [];
      let at = 0;
      expected.push({ at, len: PREAMBLE.length });
      at += PREAMBLE.length;
      for (const m of ms) {
        const len = encodeMessage(m).reduce((n, b) => n + b.length, 0);
        if (m.type !== FrameType.Data) expected.push({ at, len });
        at += len;
      }
      expect(r.given.map((g) => ({ at: g.at, len: g.buf.length }))).toEqual(expected);
      for (const g of r.given) expect(g.buf.equals(bytes.subarray(g.at, g.at + g.buf.length))).toBe(true);
      expect(pump.atBoundary()).toBe(true);
      expect(pump.offset()).toBe(bytes.length);
    }
  });

  test('read byte by byte, a small file comes through the same', () => {
    const content = randomBytes(20_000);
    const bytes = wire([...dataFrames(2, content, 6000), { type: FrameType.Commit }]);
    const { pump, counters } = make();
    pump.open(2, file('bytes'), -1, -1);
    const r = run(pump, counters, bytes, [1], () => true);
    expect(r.frames).toBe(4);
    expect(r.given.map((g) => g.buf.length)).toEqual([8, 16]);
    expect(pump.finish(2)).toEqual({ size: content.length, crc: crc32(content) });
    expect(fs.readFileSync(path.join(dir, 'bytes')).equals(content)).toBe(true);
  });

  test('a frame is taken only while the consumer is idle, and never after a frame was passed on in the same call', () => {
    const content = randomBytes(3 << 20);
    const frames = dataFrames(1, content, 1 << 20);
    const bytes = wire([frames[0]!, { type: FrameType.Commit }, frames[1]!, frames[2]!]);
    const frameLen = 24 + (1 << 20);
    const { pump, counters } = make();
    pump.open(1, file('a'), -1, -1);
    // Busy: the preamble is passed on and the feed stops at the first data frame (its header and prefix read).
    let out = pump.feed(bytes, false)!;
    expect([out[0], (out[1] as Buffer).length, out.length]).toEqual([8 + 24, 8, 3]);
    // Idle: that frame is taken, Commit passed on, and the feed stops again at the next data frame.
    let rest = bytes.subarray(out[0]);
    out = pump.feed(rest, true)!;
    expect([out[0], (out[1] as Buffer).length, out[2], counters[2]]).toEqual([frameLen - 24 + 16 + 24, 16, 8 + frameLen, 1]);
    rest = rest.subarray(out[0]);
    // Idle again: the last two are taken, nothing passed on.
    expect(pump.feed(rest, true)).toBeNull();
    expect(counters[2]).toBe(3);
    expect(pump.finish(1)).toEqual({ size: content.length, crc: crc32(content) });
    expect(fs.readFileSync(path.join(dir, 'a')).equals(content)).toBe(true);
  });

  test('what the pump cannot vouch for goes to JavaScript: zstd chunks, unknown ids, too long for the announced size, short frames', () => {
    const content = randomBytes(1 << 16);
    const zstdFrame: Message = { type: FrameType.Data, id: 1, rawLength: 1 << 17, zstd: true, data: content };
    const unknown: Message = { type: FrameType.Data, id: 9, rawLength: content.length, zstd: false, data: content };
    const tooLong: Message = { type: FrameType.Data, id: 2, rawLength: content.length, zstd: false, data: content };
    const bytes = wire([zstdFrame, unknown, tooLong]);
    const { pump, counters } = make();
    pump.open(1, file('z'), -1, -1);
    pump.open(2, file('t'), -1, 1000);
    const r = run(pump, counters, bytes, [4096], () => true);
    expect(r.frames).toBe(0);
    expect(r.given.length).toBe(4);
    expect(r.stops).toBe(0);
    // JavaScript parses them as usual; the pump writes what JavaScript hands it, and refuses passing the size.
    const d = new FrameDecoder('stream', 'sender');
    for (const g of r.given) {
      frameOffsets.set(g.buf, g.at);
      d.push(g.buf);
    }
    const got = [d.next(), d.next(), d.next()] as Array<Extract<Message, { type: FrameType.Data }>>;
    expect(got.map((m) => [m.id, m.zstd])).toEqual([[1, true], [9, false], [2, false]]);
    expect(pump.write(2, content)).toBe(false);
    expect(pump.write(2, content.subarray(0, 1000))).toBe(true);
    expect(pump.finish(2)).toEqual({ size: 1000, crc: crc32(content.subarray(0, 1000)) });
    // Two files at most: a third is refused, and the receiver writes it itself.
    expect(() => pump.open(3, file('x'), -1, -1)).not.toThrow();
    expect(() => pump.open(4, file('y'), -1, -1)).toThrow(/too many files/);
  });

  test('a crc JavaScript already has is used, not computed again; a bad one is a type error', () => {
    const { pump } = make();
    pump.open(6, file('crc'), -1, -1);
    const a = randomBytes(5000);
    const b = randomBytes(7000);
    expect(pump.write(6, a, crc32(a))).toBe(true);
    // The crc given is taken as it is (so the file's crc shows whether it was hashed again).
    expect(pump.write(6, b, 0x12345678)).toBe(true);
    expect(pump.finish(6)).toEqual({ size: 12000, crc: crc32Combine(crc32(a), 0x12345678, b.length) });
    pump.open(7, file('crc2'), -1, -1);
    expect(() => pump.write(7, a, 'x' as unknown as number)).toThrow(/write\(id, Uint8Array\[, crc\]\)/);
  });

  test('a taken frame whose payload was damaged is an error naming its offset; a damaged header hands the rest over as it is', () => {
    const content = randomBytes(300_000);
    const frames = dataFrames(1, content, 100_000);
    const bytes = wire(frames);
    const bad = Buffer.from(bytes);
    const second = 8 + (24 + 100_000);
    bad[second + 24 + 5000]! ^= 0x40;
    const { pump, counters } = make();
    pump.open(1, file('c'), -1, -1);
    let err: (Error & { code?: string; offset?: number }) | undefined;
    try {
      run(pump, counters, bad, [65536], () => true);
    } catch (e) {
      err = e as Error;
    }
    expect(err).toMatchObject({ code: 'EPROTO', offset: second, message: expect.stringMatching(/checksum mismatch/) });

    const hdr = Buffer.from(bytes);
    hdr[second + 6]! ^= 0x01; // the length field of the second frame
    const { pump: p2, counters: c2 } = make();
    p2.open(1, file('d'), -1, -1);
    const r = run(p2, c2, hdr, [65536], () => true);
    expect(r.frames).toBe(1);
    expect(r.given[1]!.at).toBe(second);
    expect(Buffer.concat(r.given.slice(1).map((g) => g.buf)).equals(hdr.subarray(second))).toBe(true);
    // JavaScript's decoder names the problem, at the right offset.
    const d = new FrameDecoder('stream', 'sender');
    for (const g of r.given) {
      frameOffsets.set(g.buf, g.at);
      d.push(g.buf);
    }
    expect(() => d.next()).toThrow(ProtocolError);
    expect(() => d.next()).toThrow(new RegExp(`at offset ${second}: frame \\d+: header checksum mismatch`));
  });

  test('not a godwit stream: the bytes go over untouched for JavaScript to name', () => {
    const text = Buffer.from('bash: godwit: command not found\n');
    const { pump, counters } = make();
    const r = run(pump, counters, text, [5], () => true);
    expect(Buffer.concat(r.given.map((g) => g.buf)).equals(text)).toBe(true);
  });

  test('O_DIRECT: the last partial block is padded on disk and the file cut back to its size', () => {
    const content = randomBytes((2 << 20) + 777);
    const name = path.join(dir, 'direct');
    const fd = file('direct');
    let direct: number;
    try {
      direct = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
    } catch {
      return; // a filesystem without O_DIRECT (tmpfs before 6.6): the buffered path is the one covered
    }
    fds.push(direct);
    const { pump, counters } = make();
    pump.open(3, fd, direct, content.length);
    run(pump, counters, wire(dataFrames(3, content, 1 << 20)), [256 << 10], () => true);
    expect(pump.finish(3)).toEqual({ size: content.length, crc: crc32(content) });
    expect(fs.readFileSync(name).equals(content)).toBe(true);
  });

  test('a write that fails is reported with its errno and the file id, at the latest by finish()', () => {
    const content = randomBytes(3 << 20);
    fs.writeFileSync(path.join(dir, 'ro'), '');
    const fd = file('ro', 'r'); // read-only: every pwrite fails with EBADF
    const { pump, counters } = make();
    pump.open(5, fd, -1, -1);
    let err: unknown;
    try {
      run(pump, counters, wire(dataFrames(5, content, 1 << 20)), [1 << 20], () => true);
      pump.finish(5);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'EBADF', errno: 9, syscall: 'pwrite', fileId: 5 });
  });

  test('closed: every call is refused, none crashes', () => {
    const { pump } = make();
    pump.close();
    expect(() => pump.feed(Buffer.alloc(10), true)).toThrow(/closed/);
    expect(() => pump.open(1, 0, -1, -1)).toThrow(/closed/);
  });

  test('fuzz: damaged streams cut at random never crash; what is not taken is passed on, byte for byte', () => {
    const content = randomBytes(200_000);
    const good = wire([
      { type: FrameType.FileBegin, id: 1, mode: 0o600, name: 'pages-1.img', size: content.length },
      ...dataFrames(1, content, 30_000),
      { type: FrameType.FileEnd, id: 1, size: content.length, crc: crc32(content) },
      { type: FrameType.End, files: 1, bytes: content.length },
    ]);
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const bytes = Buffer.from(good);
      for (let k = rnd(4); k >= 0; k--) bytes[rnd(bytes.length)] = rnd(256);
      const { pump, counters } = make();
      pump.open(1, file(`z${round}`), -1, rnd(2) ? content.length : -1);
      const cuts = [1 + rnd(70_000), 1 + rnd(5000), 1 + rnd(100)];
      let r: ReturnType<typeof run> | undefined;
      try {
        r = run(pump, counters, bytes, cuts, () => rnd(4) > 0);
      } catch (e) {
        expect((e as { code?: string }).code).toBe('EPROTO');
        continue;
      }
      // Passed on plus taken (header, prefix, data) is every byte, in order.
      const passed = r.given.reduce((n, g) => n + g.buf.length, 0);
      expect(pump.offset()).toBe(bytes.length);
      if (pump.atBoundary()) expect(passed + r.credit + 16 * r.frames).toBe(bytes.length);
      else expect(passed + r.credit + 16 * r.frames).toBeLessThan(bytes.length);
      for (const g of r.given) expect(g.buf.equals(bytes.subarray(g.at, g.at + g.buf.length))).toBe(true);
    }
  });
});

describe('PipeReader: a pipe read through the pump', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('pipereader');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A FIFO of 1 MiB: the reader's end (what `godwit receive` has as stdin) and a writer's. The test writes from
   *  the reader's own thread: each write must fit in the pipe (the writes below are at most 100 KB and the reader
   *  drains between them), or it would block the reader out. */
  function fifo(): { rd: number; wr: number } {
    const p = path.join(dir, 'fifo');
    execFileSync('mkfifo', [p]);
    const rd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const wr = fs.openSync(p, fs.constants.O_WRONLY);
    loadAddon()!.pipeSize(wr, 1 << 20);
    return { rd, wr };
  }

  /** A PipeReader on a new FIFO whose consumer is always idle, taking the data frames of file 1 into `name`. */
  function idleReader(name: string): { reader: PipeReader; wr: number; out: number } {
    const { rd, wr } = fifo();
    const reader = new PipeReader(rd, Pump!);
    reader.idle = () => true;
    const out = fs.openSync(path.join(dir, name), 'w+');
    reader.pump.open(1, out, -1, -1);
    return { reader, wr, out };
  }

  test('frames held back while the consumer is busy go on at kick(); every read says so; the end is clean', async () => {
    const { rd, wr } = fifo();
    const reader = new PipeReader(rd, Pump!);
    const content = randomBytes(2 << 20);
    const out = fs.openSync(path.join(dir, 'out'), 'w+');
    const events: string[] = [];
    let bytesSeen = 0;
    let taken = 0;
    let busy = true;
    reader.idle = () => !busy;
    reader.onTaken = (_d, _c, frames) => (taken += frames);
    reader.on('bytes', (n: number) => (bytesSeen += n));
    reader.on('data', (b: Buffer) => events.push(`data ${b.length}`));
    const ended = new Promise<void>((resolve, reject) => {
      reader.on('end', resolve);
      reader.on('error', reject);
    });
    reader.pump.open(1, out, -1, content.length);
    const bytes = wire([...dataFrames(1, content, 1 << 20), { type: FrameType.Commit }]);
    fs.writeSync(wr, bytes.subarray(0, 64 << 10));
    // Busy: the preamble comes through, the first data frame waits.
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual(['data 8']);
    expect(taken).toBe(0);
    busy = false;
    reader.kick();
    const writer = (async () => {
      for (let at = 64 << 10; at < bytes.length; at += 100_000) {
        fs.writeSync(wr, bytes.subarray(at, at + 100_000));
        await new Promise((r) => setTimeout(r, 2));
      }
      fs.closeSync(wr);
    })();
    reader.resume();
    await writer;
    await ended;
    expect(taken).toBe(2);
    expect(events).toEqual(['data 8', 'data 16']);
    expect(bytesSeen).toBe(bytes.length);
    expect(reader.pump.finish(1)).toEqual({ size: content.length, crc: crc32(content) });
    expect(fs.readFileSync(path.join(dir, 'out')).equals(content)).toBe(true);
    reader.release();
    expect(() => reader.pump.offset()).toThrow(/closed/);
    fs.closeSync(out);
  });

  test('an end in the middle of a frame is an error saying where', async () => {
    const { reader, wr, out } = idleReader('cut');
    const bytes = wire(dataFrames(1, randomBytes(100_000), 100_000));
    fs.writeSync(wr, bytes.subarray(0, 50_000));
    fs.closeSync(wr);
    const failed = new Promise((_r, reject) => reader.on('error', reject));
    reader.resume();
    // The data frame waits behind the preamble passed on with it, until the consumer is idle again.
    setTimeout(() => reader.kick(), 50);
    await expect(failed).rejects.toThrow(/ended in the middle of a frame at offset 50000/);
    reader.release();
    fs.closeSync(out);
  });

  test("an idle watchdog counts the pump's reads, which never show as data", async () => {
    const { reader, wr, out } = idleReader('idle');
    const watch = watchIdle({ label: 'the source', toPeer: new PassThrough(), fromPeer: reader, pipe: reader, close: () => reader.destroy() }, 300);
    let failed: unknown;
    watch.channel.fromPeer.on('error', (e) => (failed = e));
    watch.channel.fromPeer.resume();
    fs.writeSync(wr, PREAMBLE);
    // 1.2 s of data frames every 100 ms: all taken by the pump, and the watchdog (300 ms) must not fire.
    for (let i = 0; i < 12; i++) {
      fs.writeSync(wr, wire(dataFrames(1, randomBytes(10_000), 10_000)).subarray(PREAMBLE.length));
      await new Promise((r) => setTimeout(r, 100));
      reader.kick(); // the consumer, idle (only the first frame waits: behind the preamble)
    }
    expect(failed).toBeUndefined();
    expect(reader.pump.finish(1).size).toBe(120_000);
    // Then silence: it fires.
    await new Promise((r) => setTimeout(r, 600));
    expect(String(failed)).toMatch(/nothing came from the source/);
    watch.stop();
    reader.release();
    fs.closeSync(wr);
    fs.closeSync(out);
  });
});
