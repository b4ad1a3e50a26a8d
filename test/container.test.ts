import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { ImageError } from '../util/errors';
import { crc32Combine } from '../images/crc32';
import { CompressionPool } from '../images/container-pool';
import * as binding from 'zstd-napi/binding';
import { loadAddon } from '../native/addon';
import {
  CHUNK_HEADER_SIZE, HEADER_SIZE, TRAILER_SIZE, encodeChunkHeader, encodeIndex, encodeTrailer, type ChunkInfo,
} from '../images/container-format';
import { ContainerReader, openPages, openPagesFile } from '../images/container-reader';
import { createPageWriter, createSinkPageWriter, PageSink, PageWriterOptions } from '../images/container-writer';
import { pageData } from './helpers/pagedata';

let tmp: string;
let pool: CompressionPool;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-container-'));
  pool = new CompressionPool(2);
});
afterAll(async () => {
  await pool.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

let dirN = 0;
function newDir(): string {
  const d = path.join(tmp, `d${dirN++}`);
  fs.mkdirSync(d);
  return d;
}

async function writePages(dir: string, data: Buffer, pieces: number[], opts: PageWriterOptions = {}, inFlight = 4): Promise<string> {
  const w = await createPageWriter(dir, 1, { pool, ...opts });
  const pending: Promise<void>[] = [];
  let at = 0;
  let i = 0;
  while (at < data.length) {
    const n = Math.min(pieces[i++ % pieces.length]!, data.length - at);
    pending.push(w.write(data.subarray(at, at + n)));
    if (pending.length >= inFlight) await pending.shift();
    at += n;
  }
  await Promise.all(pending);
  const r = await w.finish();
  expect(r.pagesBytes).toBe(data.length);
  const file = path.join(dir, r.name);
  expect(fs.statSync(file).size).toBe(r.size);
  expect(r.crc32).toBe((zlib.crc32(fs.readFileSync(file)) >>> 0).toString(16).padStart(8, '0'));
  return file;
}

async function readAll(file: string): Promise<Buffer> {
  const r = await openPagesFile(file);
  try {
    const parts: Buffer[] = [];
    for await (const b of r.stream()) parts.push(Buffer.from(b));
    return Buffer.concat(parts);
  } finally {
    await r.close();
  }
}

describe('crc32Combine', () => {
  test('equals the crc32 of the concatenation, for any split', () => {
    const data = crypto.randomBytes(70000);
    for (const cut of [0, 1, 3, 4096, 65535, 69999, 70000]) {
      const a = data.subarray(0, cut);
      const b = data.subarray(cut);
      expect(crc32Combine(zlib.crc32(a), zlib.crc32(b), b.length)).toBe(zlib.crc32(data) >>> 0);
    }
  });
});

/**
 * A copy of a container with every chunk's frame compressed again with zstd's content checksum, chunk crcs, index
 * and trailer to match: a container as godwit wrote them before its chunks dropped the checksum. `damage` flips a
 * bit of chunk 1's content checksum (the frame's last byte) and fixes its crc32, so that only zstd can tell.
 */
async function rewriteFrames(file: string, level: number, damage = false): Promise<string> {
  const r = (await openPagesFile(file)) as ContainerReader;
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, level);
  cctx.setParameter(binding.CParameter.checksumFlag, 1);
  const src = fs.readFileSync(file);
  const parts: Buffer[] = [src.subarray(0, HEADER_SIZE)];
  const chunks: ChunkInfo[] = [];
  let at = HEADER_SIZE;
  try {
    for (let i = 0; i < r.chunks.length; i++) {
      const c = r.chunks[i]!;
      const dst = Buffer.alloc(binding.compressBound(c.length) + 64);
      const n = cctx.compress2(dst, await r.read(c.offset, c.length));
      const frame = dst.subarray(0, n);
      if (damage && i === 1) frame[n - 1] ^= 1;
      const info = { fileOffset: at, offset: c.offset, length: c.length, compressedLength: n, crc: zlib.crc32(frame) >>> 0 };
      chunks.push(info);
      parts.push(encodeChunkHeader(i, info), frame);
      at += CHUNK_HEADER_SIZE + n;
    }
  } finally {
    await r.close();
  }
  const index = encodeIndex(chunks);
  parts.push(index, encodeTrailer({ indexOffset: at, totalLength: r.size, indexCrc: zlib.crc32(index) >>> 0 }));
  const out = path.join(newDir(), path.basename(file));
  fs.writeFileSync(out, Buffer.concat(parts));
  return out;
}

describe('page container round trip', () => {
  const CS = 64 << 10;
  test.each([
    ['empty', 0, [4096]],
    ['one byte', 1, [4096]],
    ['exactly one chunk', CS, [CS]],
    ['one chunk and a page', CS + 4096, [4096]],
    ['many chunks, odd pieces', 9 * CS + 12345, [1000, 70001, 3, 131072]],
    ['many chunks, large pieces', 20 * CS, [1 << 20]],
  ])('%s (plain buffers)', async (_name, size, pieces) => {
    const data = pageData(size as number);
    const file = await writePages(newDir(), data, pieces as number[], { chunkSize: CS });
    expect((await readAll(file)).equals(data)).toBe(true);
  });

  test.each([[[CS]], [[1 << 20]], [[4096, CS * 3, 999]]])('shared (zero-copy) buffers, pieces %j', async (pieces) => {
    const data = pageData(33 * CS + 4096, true, 7);
    const copy = Buffer.from(data);
    const file = await writePages(newDir(), data, pieces, { chunkSize: CS }, 6);
    expect((await readAll(file)).equals(copy)).toBe(true);
  });

  test('chunks whose probed pages do not compress are stored as raw zstd frames; any compressible probe keeps compression', async () => {
    const chunk = 256 << 10;
    const random = crypto.randomBytes(2 * chunk);
    const zeroPage = Buffer.from(random.subarray(0, chunk));
    zeroPage.fill(0, 2 << 16, (2 << 16) + 4096); // the third probe of a 256 KiB chunk (4 probes, 64 KiB apart)
    const halfText = Buffer.from(random.subarray(chunk));
    halfText.fill('godwit ', chunk / 2); // the probes at 128 and 192 KiB see text
    const data = Buffer.concat([random, zeroPage, halfText, Buffer.alloc(chunk)]);
    const file = await writePages(newDir(), data, [chunk], { chunkSize: chunk });
    expect((await readAll(file)).equals(data)).toBe(true);
    const r = (await openPagesFile(file)) as ContainerReader;
    try {
      // A raw frame: 9 bytes of frame header, 3 per 128 KiB block, the bytes themselves.
      const raw = chunk + 9 + 2 * 3;
      expect(r.chunks.map((c) => c.compressedLength === raw)).toEqual([true, true, false, false, false]);
      expect(r.chunks[3]!.compressedLength).toBeLessThan(chunk * 0.6);
    } finally {
      await r.close();
    }
  });

  /** The block types of a single-segment zstd frame with a 4-byte content size (0 raw, 1 RLE, 2 compressed). */
  function blockTypes(frame: Buffer): number[] {
    expect(frame.readUInt32LE(0)).toBe(0xfd2fb528);
    expect(frame[4]).toBe(0xa0);
    const types: number[] = [];
    for (let at = 9; ;) {
      const h = frame.readUIntLE(at, 3);
      const type = (h >> 1) & 3;
      types.push(type);
      at += 3 + (type === 1 ? 1 : h >>> 3);
      if (h & 1) {
        expect(at).toBe(frame.length);
        return types;
      }
    }
  }

  test('chunks whose every page is one byte repeated are stored as RLE blocks; a chunk with any other page goes to zstd', async () => {
    const chunk = 256 << 10;
    const pageBytes = Buffer.alloc(chunk);
    for (let p = 0; p < chunk / 4096; p++) pageBytes.fill((p * 37 + 11) & 255, p * 4096, (p + 1) * 4096);
    const oneOff = Buffer.from(pageBytes);
    oneOff[chunk - 1] ^= 1; // the last byte of the last page
    const tail = Buffer.alloc(3 * 4096 + 100, 0x5a); // a last chunk ending in a partial page
    const data = Buffer.concat([Buffer.alloc(chunk), pageBytes, oneOff, Buffer.alloc(chunk, 0xff), tail]);
    const file = await writePages(newDir(), data, [chunk], { chunkSize: chunk });
    expect((await readAll(file)).equals(data)).toBe(true);
    const r = (await openPagesFile(file)) as ContainerReader;
    try {
      const fd = fs.openSync(file, 'r');
      const frames = r.chunks.map((c) => {
        const b = Buffer.alloc(c.compressedLength);
        fs.readSync(fd, b, 0, b.length, c.fileOffset + CHUNK_HEADER_SIZE);
        return b;
      });
      fs.closeSync(fd);
      // 4 bytes per run of one byte, runs cut at 128 KiB (zstd's largest block).
      expect(frames.map((f) => f.length)).toEqual([9 + 2 * 4, 9 + 64 * 4, frames[2]!.length, 9 + 2 * 4, 9 + 4]);
      for (const i of [0, 1, 3, 4]) expect(blockTypes(frames[i]!).every((t) => t === 1)).toBe(true);
      expect(blockTypes(frames[2]!)).toContain(2);
    } finally {
      await r.close();
    }
  });

  /** zstd's own decoder (zstd-napi's, one-shot), into a buffer with one byte to spare: a frame that says too much fails. */
  function unzstd(frame: Uint8Array, size: number): Buffer {
    const out = Buffer.alloc(size + 1);
    return out.subarray(0, binding.decompress(out, frame));
  }

  test('zstdUniformFrame: frames any zstd decoder reads, 0 for other bytes, clear errors', () => {
    const uniform = loadAddon()?.zstdUniformFrame;
    if (!uniform) throw new Error('the addon is not built: make -C native');
    const dst = Buffer.alloc(1024);
    const cases: Buffer[] = [Buffer.from([7]), Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(1, 2)]),
      Buffer.concat([Buffer.alloc(128 << 10, 3), Buffer.alloc(8192, 3), Buffer.alloc(4096, 4)])];
    for (const src of cases) {
      const n = uniform(dst, src);
      expect(n).toBeGreaterThan(0);
      expect(unzstd(dst.subarray(0, n), src.length).equals(src)).toBe(true);
    }
    expect(uniform(dst, Buffer.alloc(0))).toBe(0);
    const mixed = Buffer.alloc(8192, 9);
    mixed[6000] = 8; // the second page
    expect(uniform(dst, mixed)).toBe(0);
    expect(uniform(dst, crypto.randomBytes(4096))).toBe(0);
    // From a SharedArrayBuffer (the page buffer), as the workers call it.
    const shared = Buffer.from(new SharedArrayBuffer(8192)).fill(6);
    expect(unzstd(dst.subarray(0, uniform(dst, shared)), 8192).equals(Buffer.alloc(8192, 6))).toBe(true);
    expect(() => uniform(Buffer.alloc(16), Buffer.alloc(8192))).toThrow(expect.objectContaining({ code: 'ENOBUFS', syscall: 'zstdUniformFrame' }));
    expect(() => (uniform as unknown as (a: unknown, b: unknown) => number)('x', dst)).toThrow(/^zstdUniformFrame\(dst: Uint8Array, src: Uint8Array\)$/);
  });

  test('frames with zstd\'s content checksum (as godwit wrote them before) are read and checked', async () => {
    const data = pageData(3 * CS);
    const file = await writePages(newDir(), data, [CS], { chunkSize: CS });
    // Rewrite each chunk's frame with a content checksum, crcs and index updated: the container as it was written.
    const old = await rewriteFrames(file, 1);
    expect((await readAll(old)).equals(data)).toBe(true);
    // Its checksum is checked: a flipped byte in the last 4 (the checksum) with the chunk crc fixed up still fails.
    await expect(readAll(await rewriteFrames(file, 1, true))).rejects.toThrow(/chunk 1 does not decompress/);
  });

  test('the writer makes and closes its own pool when given none; one worker works too', async () => {
    const data = pageData(5 * CS + 7);
    for (const workers of [1, undefined]) {
      const dir = newDir();
      const w = await createPageWriter(dir, 3, { chunkSize: CS, workers });
      await w.write(data);
      await w.finish();
      expect((await readAll(path.join(dir, 'pages-3.gwz'))).equals(data)).toBe(true);
    }
  });

  test('random access reads return the right bytes anywhere, across chunk boundaries', async () => {
    const data = pageData(40 * CS + 100, false, 3);
    const file = await writePages(newDir(), data, [1 << 20], { chunkSize: CS });
    const r = await ContainerReader.open(file);
    try {
      expect(r.size).toBe(data.length);
      expect(r.chunks.length).toBe(41);
      const rnd = crypto.createHash('sha256').update('offsets').digest();
      for (let i = 0; i < 200; i++) {
        const off = rnd.readUInt32LE(i % 28) * (i + 1) % data.length;
        const len = Math.min([1, 4096, CS, 3 * CS + 17][i % 4]!, data.length - off);
        expect((await r.read(off, len)).equals(data.subarray(off, off + len))).toBe(true);
      }
      // Every page in order (the page-fault pattern): served from the chunk cache.
      for (let off = 0; off + 4096 <= data.length; off += 4096 * 7) {
        expect((await r.read(off, 4096)).equals(data.subarray(off, off + 4096))).toBe(true);
      }
      const mid = Buffer.concat(await collect(r.stream(CS + 5, 5 * CS - 3)));
      expect(mid.equals(data.subarray(CS + 5, 5 * CS - 3))).toBe(true);
      await expect(r.read(data.length - 10, 11)).rejects.toThrow(/page data ends at .* but bytes/);
    } finally {
      await r.close();
    }
  });

  test('--compress none writes plain CRIU pages-N.img: exactly the bytes given', async () => {
    const data = pageData(3 * CS + 4096);
    const dir = newDir();
    const file = await writePages(dir, data, [5000, CS], { compress: 'none' });
    expect(path.basename(file)).toBe('pages-1.img');
    expect(fs.readFileSync(file).equals(data)).toBe(true);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const r = await openPages(dir, 1);
    expect((await r.read(4096, 100)).equals(data.subarray(4096, 4196))).toBe(true);
    await r.close();
  });

  test('a file is invisible under its name until finish, and abort leaves nothing', async () => {
    const dir = newDir();
    const w = await createPageWriter(dir, 2, { pool, chunkSize: CS });
    await w.write(pageData(3 * CS));
    expect(fs.readdirSync(dir)).toEqual(['.pages-2.gwz.partial']);
    await w.abort();
    expect(fs.readdirSync(dir)).toEqual([]);
    await expect(w.write(Buffer.alloc(10))).rejects.toThrow(/write after finish|aborted/);
  });

  test('backpressure: with storage stalled, only a bounded amount of input is taken', async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const out: Buffer[] = [];
    const sink: PageSink = {
      name: 'pages-9.gwz',
      writev: async (bufs) => {
        await gate;
        for (const b of bufs) out.push(Buffer.from(b));
      },
      commit: async () => ({ name: 'pages-9.gwz', size: out.reduce((s, b) => s + b.length, 0), crc32: '' }),
      abort: async () => undefined,
    };
    const w = createSinkPageWriter(sink, { pool }); // 256 KiB chunks, pool of 2
    const data = pageData(64 << 20, false, 9);
    let accepted = 0;
    const writes: Promise<void>[] = [];
    for (let at = 0; at < data.length; at += 1 << 20) writes.push(w.write(data.subarray(at, at + (1 << 20))).then(() => void accepted++));
    await new Promise((r) => setTimeout(r, 1500));
    // Staging (6 jobs x 8 chunks + 1) and output buffers are all the writer holds: ~12 MiB of input, not 64.
    expect(accepted).toBeGreaterThan(4);
    expect(accepted).toBeLessThanOrEqual(14);
    open();
    await Promise.all(writes);
    await w.finish();
    const file = path.join(newDir(), 'pages-9.gwz');
    fs.writeFileSync(file, Buffer.concat(out));
    expect((await readAll(file)).equals(data)).toBe(true);
  });

  test('bad options are refused before anything is written', async () => {
    const dir = newDir();
    await expect(createPageWriter(dir, 1, { chunkSize: 1000 })).rejects.toThrow(/chunk size must be a multiple of 4096/);
    await expect(createPageWriter(dir, 1, { level: 99 })).rejects.toThrow(/level must be/);
    await expect(createPageWriter(dir, 1, { compress: 'lz4' as never })).rejects.toThrow(/--compress must be zstd or none/);
    await expect(createPageWriter(path.join(dir, 'nope'), 1, {})).rejects.toThrow(/create image file pages-1.gwz: open failed: ENOENT/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(Buffer.from(b));
  return out;
}

/** Offsets of each chunk record (header + data) in a container file, from its index. */
async function chunkSpans(file: string): Promise<Array<[number, number]>> {
  const r = await ContainerReader.open(file);
  const spans = r.chunks.map((c) => [c.fileOffset, CHUNK_HEADER_SIZE + c.compressedLength] as [number, number]);
  await r.close();
  return spans;
}

async function expectImageError(file: string, re: RegExp): Promise<ImageError> {
  let caught: unknown;
  try {
    const r = await ContainerReader.open(file);
    try {
      for (let i = 0; i < r.chunks.length; i++) await r.loadChunk(i);
    } finally {
      await r.close();
    }
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ImageError);
  expect((caught as Error).message).toMatch(re);
  expect((caught as ImageError).file).toMatch(/pages-1\.gwz$/);
  return caught as ImageError;
}

describe('damaged containers give an ImageError naming file, offset and what was expected', () => {
  const CS = 16 << 10;
  let good: Buffer;
  let spans: Array<[number, number]>;
  let dir: string;
  beforeAll(async () => {
    dir = newDir();
    const file = await writePages(dir, pageData(10 * CS, false, 11), [CS * 3], { chunkSize: CS });
    good = fs.readFileSync(file);
    spans = await chunkSpans(file);
  });
  const put = (b: Buffer): string => {
    const f = path.join(dir, 'pages-1.gwz');
    fs.writeFileSync(f, b);
    return f;
  };

  test('a flipped byte in a chunk\'s data', async () => {
    const b = Buffer.from(good);
    const [off] = spans[4]!;
    b[off + CHUNK_HEADER_SIZE + 10]! ^= 0x40;
    const e = await expectImageError(put(b), /chunk 4 checksum mismatch: expected crc32 [0-9a-f]{8}/);
    expect(e.offset).toBe(off + CHUNK_HEADER_SIZE);
  });

  test('a flipped byte in a chunk header', async () => {
    const b = Buffer.from(good);
    b[spans[2]![0] + 17]! ^= 1;
    await expectImageError(put(b), /chunk header checksum mismatch/);
  });

  test('two chunks swapped', async () => {
    const [o1, l1] = spans[1]!;
    const [o2, l2] = spans[2]!;
    const b = Buffer.concat([good.subarray(0, o1), good.subarray(o2, o2 + l2), good.subarray(o1, o1 + l1), good.subarray(o2 + l2)]);
    const e = await expectImageError(put(b), /found chunk 2 where the index has chunk 1 \(chunks reordered, missing or duplicated\)/);
    expect(e.offset).toBe(o1);
  });

  test('a chunk missing', async () => {
    const [o, l] = spans[3]!;
    await expectImageError(put(Buffer.concat([good.subarray(0, o), good.subarray(o + l)])), /index offset \d+ does not leave room|expected index magic|found chunk 4 where the index has chunk 3/);
  });

  test('truncated anywhere', async () => {
    await expectImageError(put(good.subarray(0, good.length - 1)), /expected trailer magic "GWZTRAIL" in the last 32 bytes: the file is truncated/);
    await expectImageError(put(good.subarray(0, spans[5]![0] + 100)), /truncated/);
    await expectImageError(put(good.subarray(0, 20)), /shorter than the 32-byte container header \(truncated\)/);
    await expectImageError(put(Buffer.alloc(0)), /file is 0 bytes/);
  });

  test('not a container at all', async () => {
    await expectImageError(put(Buffer.from('x'.repeat(200))), /expected container magic "GWZPAGES"/);
  });

  test('huge length fields do not allocate: a forged index entry and trailer', async () => {
    const b = Buffer.from(good);
    const t = b.length - TRAILER_SIZE;
    b.writeBigUInt64LE(0xffffffffffn, t + 16); // total length
    // Fix up the trailer's own checksum so the forged field is what gets judged.
    b.writeUInt32LE(zlib.crc32(b.subarray(t, t + 28)) >>> 0, t + 28);
    await expectImageError(put(b), /chunks hold \d+ bytes but the trailer says 1099511627775/);
    const c = Buffer.from(good);
    c.writeUInt32LE(0xfffffff0, 12); // chunk size in the header
    c.writeUInt32LE(zlib.crc32(c.subarray(0, 28)) >>> 0, 28);
    await expectImageError(put(c), /chunk size 4294967280 outside 1\.\.67108864/);
  });

  test('every single-byte flip anywhere in the file is caught', async () => {
    // Every byte is covered by a checksum: header, chunk headers, chunk data, index, trailer.
    for (let at = 0; at < good.length; at += 37) {
      const b = Buffer.from(good);
      b[at]! ^= 0x08;
      const f = put(b);
      await expectImageError(f, /./);
    }
    expect(HEADER_SIZE).toBe(32);
  });
});

describe('fuzz: mutated containers give only ImageError or the original data, never hang', () => {
  test('3000 mutants', async () => {
    const dir = newDir();
    const data = pageData(6 * 8192 + 1000, false, 5);
    const file = await writePages(dir, data, [8192], { chunkSize: 8192 });
    const good = fs.readFileSync(file);
    const seed = crypto.createHash('sha256').update('fuzz').digest();
    let state = seed.readUInt32LE(0) || 1;
    const rand = (n: number): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) % n;
    };
    const started = Date.now();
    let caught = 0;
    for (let i = 0; i < 3000; i++) {
      let b = Buffer.from(good);
      switch (rand(5)) {
        case 0: // flip 1-8 random bytes
          for (let k = 1 + rand(8); k > 0; k--) b[rand(b.length)] = rand(256);
          break;
        case 1: // truncate
          b = b.subarray(0, rand(b.length));
          break;
        case 2: // duplicate a slice
          {
            const a = rand(b.length);
            const n = rand(200);
            b = Buffer.concat([b.subarray(0, a), b.subarray(a, a + n), b.subarray(a)]);
          }
          break;
        case 3: // delete a slice
          {
            const a = rand(b.length);
            b = Buffer.concat([b.subarray(0, a), b.subarray(a + rand(300))]);
          }
          break;
        default: // overwrite a u32/u64 field with an extreme value
          {
            const a = rand(b.length - 8);
            b.writeUInt32LE([0, 0xffffffff, 0x7fffffff, 1, b.length][rand(5)]!, a);
          }
      }
      fs.writeFileSync(file, b);
      try {
        const got = await readAll(file);
        expect(got.equals(data)).toBe(true);
      } catch (err) {
        if (!(err instanceof ImageError)) throw new Error(`mutant ${i} gave ${String(err)}`);
        caught++;
      }
    }
    expect(caught).toBeGreaterThan(2900);
    expect(Date.now() - started).toBeLessThan(30000);
  });
});
