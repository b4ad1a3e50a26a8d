/** The stream's fast paths: crc32 combine, reused payload buffers, a file larger than the flush-behind step. */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { crc32 } from 'node:zlib';
import { crc32Combine } from '../images/crc32';
import { localEndpoint, sendImageDir } from '../transport/endpoint';
import { FrameDecoder, FrameType, Message, PayloadPool, PREAMBLE, PROTOCOL_VERSION, encodeMessage } from '../transport/frames';
import { closeAllLocal } from '../transport/local';
import { growPipe } from '../transport/pipe-size';
import { BlockPool, FileAppender } from '../transport/direct-appender';
import { tempDir } from './transport-helpers';

describe('crc32Combine', () => {
  test('equals zlib crc32 of the concatenation, for any split (empty parts and multi-MiB lengths too)', () => {
    const big = randomBytes(3 << 20);
    for (let i = 0; i < 300; i++) {
      const a = randomBytes(Math.floor(Math.random() * 5000));
      const b = i % 50 === 0 ? Buffer.alloc(0) : randomBytes(Math.floor(Math.random() * 9000));
      expect(crc32Combine(crc32(a), crc32(b), b.length)).toBe(crc32(Buffer.concat([a, b])));
    }
    expect(crc32Combine(crc32(big), crc32(big), big.length)).toBe(crc32(Buffer.concat([big, big])));
    expect(crc32Combine(0, crc32(big), big.length)).toBe(crc32(big));
  });
});

describe('PayloadPool', () => {
  test('a buffer given back is handed out again; foreign buffers and a second give are ignored', () => {
    const pool = new PayloadPool(4 << 20);
    const a = pool.take(1 << 20);
    expect(a.length).toBe(1 << 20);
    pool.give(a.subarray(8)); // a view of it counts
    pool.give(a); // second give: ignored
    const b = pool.take((1 << 20) - 100); // same 64 KiB size class
    expect(b.buffer).toBe(a.buffer);
    const c = pool.take(1 << 20); // a has been taken again: a new one
    expect(c.buffer).not.toBe(a.buffer);
    pool.give(Buffer.alloc(1 << 20)); // not from the pool
    expect(pool.take(1 << 20).buffer).not.toBe(a.buffer);
  });

  test('no more than maxFreeBytes wait for reuse', () => {
    const pool = new PayloadPool(2 << 20);
    const bufs = [pool.take(1 << 20), pool.take(1 << 20), pool.take(1 << 20)];
    for (const b of bufs) pool.give(b);
    const again = [pool.take(1 << 20), pool.take(1 << 20), pool.take(1 << 20)];
    const reused = again.filter((b) => bufs.some((x) => x.buffer === b.buffer));
    expect(reused.length).toBe(2);
  });

  test('the decoder assembles data frames split into pipe-sized pieces in pool buffers, checks them, sets their crc', () => {
    const pool = new PayloadPool();
    const data = randomBytes(1 << 20);
    const msgs: Message[] = [
      { type: FrameType.Hello, hello: { protocol: PROTOCOL_VERSION, godwit: 't', role: 'sender', caps: [] } },
      { type: FrameType.FileBegin, id: 1, mode: 0o600, name: 'a' },
      { type: FrameType.Data, id: 1, rawLength: data.length, zstd: false, data },
      { type: FrameType.Data, id: 1, rawLength: data.length, zstd: false, data, crc: crc32(data) },
    ];
    const bytes = Buffer.concat([PREAMBLE, ...msgs.flatMap((m) => encodeMessage(m))]);
    const d = new FrameDecoder('s', 'sender', pool);
    const out: Message[] = [];
    for (let o = 0; o < bytes.length; o += 65536) {
      d.push(bytes.subarray(o, o + 65536));
      for (let m = d.next(); m; m = d.next()) out.push(m);
    }
    const datas = out.filter((m): m is Extract<Message, { type: FrameType.Data }> => m.type === FrameType.Data);
    expect(datas.length).toBe(2);
    for (const m of datas) {
      expect(m.data.equals(data)).toBe(true);
      expect(m.crc).toBe(crc32(data));
    }
    // Given back, the first payload's buffer carries the next frame.
    pool.give(datas[0]!.data);
    const corrupt = Buffer.from(bytes);
    corrupt[corrupt.length - 1000]! ^= 1;
    const d2 = new FrameDecoder('s', 'sender', pool);
    d2.push(corrupt);
    expect(() => {
      for (let m = d2.next(); m; m = d2.next());
    }).toThrow(/payload checksum mismatch/);
  });
});

describe('receiving a file larger than the flush-behind step', () => {
  let work: string;
  beforeAll(() => {
    work = tempDir('speed');
  });
  afterEach(async () => {
    await closeAllLocal();
  });
  afterAll(() => {
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('72 MiB (raw and compressible) arrive intact and the sender sees it confirmed', async () => {
    const src = path.join(work, 'src');
    fs.mkdirSync(src);
    const content = Buffer.alloc(72 << 20);
    const rnd = randomBytes(content.length / 4);
    for (let o = 0; o < content.length; o += 16384) rnd.copy(content, o, o / 4, o / 4 + 4096);
    fs.writeFileSync(path.join(src, 'pages-1.img'), content);
    fs.writeFileSync(path.join(src, 'pages-2.gwz'), rnd); // passed through raw
    const dst = path.join(work, 'dst');
    const r = await sendImageDir(localEndpoint(), src, dst);
    expect(r.files).toBe(2);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(sha(fs.readFileSync(path.join(dst, 'pages-1.img')))).toBe(sha(content));
    expect(sha(fs.readFileSync(path.join(dst, 'pages-2.gwz')))).toBe(sha(rnd));
  });
});

describe('growPipe', () => {
  let work: string;
  beforeAll(() => {
    work = tempDir('pipe');
  });
  afterAll(() => {
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('a pipe grows to 1 MiB (or the system limit); anything else is left alone', async () => {
    const fifo = path.join(work, 'fifo');
    execFileSync('mkfifo', ['-m', '0600', fifo]);
    const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const w = fs.openSync(fifo, fs.constants.O_WRONLY);
    try {
      const max = Number(fs.readFileSync('/proc/sys/fs/pipe-max-size', 'latin1'));
      const before = spawnSync('perl', ['-e', 'print fcntl(STDIN, 1032, 0)'], { stdio: [r, 'pipe', 'pipe'] }).stdout.toString();
      expect(Number(before)).toBeLessThan(Math.min(1 << 20, max));
      expect(await growPipe(r)).toBe(Math.min(1 << 20, max));
      const after = spawnSync('perl', ['-e', 'print fcntl(STDIN, 1032, 0)'], { stdio: [w, 'pipe', 'pipe'] }).stdout.toString();
      expect(Number(after)).toBe(Math.min(1 << 20, max)); // seen from the other end: it is the pipe that grew
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
    const file = path.join(work, 'file');
    fs.writeFileSync(file, 'x');
    const fd = fs.openSync(file, 'r');
    try {
      expect(await growPipe(fd)).toBeUndefined();
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('FileAppender (the receiver writes large files with O_DIRECT)', () => {
  let work: string;
  beforeAll(() => {
    work = tempDir('appender');
  });
  afterAll(() => {
    fs.rmSync(work, { recursive: true, force: true });
  });

  /** A piece as the decoder may hand it over: whole, or in parts of random sizes (empty ones included). */
  function inParts(piece: Buffer): Buffer | Buffer[] {
    if (Math.random() < 0.5) return piece;
    const parts: Buffer[] = [];
    for (let o = 0; o < piece.length; ) {
      const n = Math.random() < 0.1 ? 0 : Math.min(piece.length - o, 1 + Math.floor(Math.random() * 70_000));
      parts.push(piece.subarray(o, o + n));
      o += n;
    }
    return parts;
  }

  /** Appends `content` in pieces of random sizes (a few bytes to 1.5 MiB), each whole or in parts, through one
   *  appender; returns it. */
  async function appendAll(file: string, content: Buffer, pool: BlockPool): Promise<{ a: FileAppender; directSeen: boolean }> {
    const fh = await fs.promises.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    const a = new FileAppender(fh, pool);
    let directSeen = false;
    try {
      for (let o = 0; o < content.length; ) {
        const n = Math.min(content.length - o, Math.random() < 0.3 ? 1 + Math.floor(Math.random() * 5000) : Math.floor(Math.random() * (3 << 19)) + 1);
        await a.append(inParts(content.subarray(o, o + n)));
        directSeen ||= a.isDirect;
        o += n;
      }
      await a.finish();
    } catch (err) {
      await a.abandon();
      throw err;
    } finally {
      await fh.close();
    }
    return { a, directSeen };
  }

  test('pieces of any size, a file past the switch and an unaligned tail: every byte in place, size exact', async () => {
    const pool = new BlockPool();
    for (const [i, size] of [(9 << 20) + 123, 4 << 20, (4 << 20) + 1, 100].entries()) {
      const content = randomBytes(size);
      const file = path.join(work, `f${i}`);
      const { a, directSeen } = await appendAll(file, content, pool);
      expect(a.size).toBe(size);
      expect(directSeen).toBe(size > 4 << 20); // the addon is built (test/checkpoint-precopy checks it)
      expect(fs.statSync(file).size).toBe(size);
      expect(fs.readFileSync(file).equals(content)).toBe(true);
    }
  });

  test('at most 4 files go direct at once; the others stay in the page cache and are just as complete', async () => {
    const pool = new BlockPool();
    const files = await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => {
      const fh = await fs.promises.open(path.join(work, `c${i}`), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      return { fh, a: new FileAppender(fh, pool), content: randomBytes((6 << 20) + i) };
    }));
    try {
      for (const f of files) await f.a.append(f.content.subarray(0, 5 << 20)); // each past the switch, none finished
      expect(files.map((f) => f.a.isDirect)).toEqual([true, true, true, true, false, false]);
      for (const f of files) await f.a.append(f.content.subarray(5 << 20));
      for (const f of files) await f.a.finish();
    } finally {
      for (const f of files) await f.fh.close();
    }
    for (const [i, f] of files.entries()) expect(fs.readFileSync(path.join(work, `c${i}`)).equals(f.content)).toBe(true);
  });

  test("a pool of 0 direct files (a migration's target, which restores at once) keeps every file in the page cache", async () => {
    const content = randomBytes((9 << 20) + 7);
    const file = path.join(work, 'buffered');
    const { a, directSeen } = await appendAll(file, content, new BlockPool(0));
    expect(directSeen).toBe(false);
    expect(a.size).toBe(content.length);
    expect(fs.readFileSync(file).equals(content)).toBe(true);
  });
});
