/**
 * Bad input: each defect gives an ImageError that names the file, the offset and what was expected;
 * nothing else escapes, nothing hangs, no huge allocation.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { imageFromCrit } from '../images/critjson';
import { decodeImage, encodeImage } from '../images/framing';
import { ImageReader } from '../images/io';
import { IMG_COMMON_MAGIC } from '../images/registry';
import { ImageError } from '../util/errors';
import { fixturesDir } from './shared-dir';

const core = fs.readFileSync(path.join(fixturesDir(), 'criu-4.2', 'sleep', 'core-16344.img'));

function imageError(fn: () => unknown): ImageError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ImageError) return e;
    throw new Error(`expected an ImageError, got ${String(e)}`);
  }
  throw new Error('expected an ImageError, but nothing was thrown');
}

async function asyncImageError(p: Promise<unknown>): Promise<ImageError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ImageError) return e;
    throw new Error(`expected an ImageError, got ${String(e)}`);
  }
  throw new Error('expected an ImageError, but nothing was thrown');
}

async function readAllFrom(b: Buffer, name: string): Promise<unknown> {
  const r = await ImageReader.open(Readable.from([b]), { name });
  return r.readAll();
}

describe('bad image input', () => {
  test('empty file', () => {
    const e = imageError(() => decodeImage(Buffer.alloc(0), 'core-1.img'));
    expect(e.file).toBe('core-1.img');
    expect(e.offset).toBe(0);
    expect(e.message).toMatch(/empty file: expected a CRIU image magic/);
  });

  test('truncated at every length: names the file, the offset and what was expected', async () => {
    for (let n = 1; n < core.length; n += n < 40 ? 1 : 97) {
      if (n === 8) continue; // the bare header is a valid image with no entries
      const cut = core.subarray(0, n);
      const e = imageError(() => decodeImage(cut, 'core-16344.img'));
      expect(e.file).toBe('core-16344.img');
      expect(e.offset).toBeLessThanOrEqual(n);
      expect(e.message).toMatch(/expected .*(magic|length of entry|entry 0)|required field|runs past/);
      const s = await asyncImageError(readAllFrom(cut, 'core-16344.img'));
      expect(s.message).toMatch(/core-16344\.img: at offset \d+/);
    }
  });

  test('wrong magic for the file name', () => {
    const e = imageError(() => decodeImage(core, 'fdinfo-3.img'));
    expect(e.offset).toBe(4);
    expect(e.message).toBe('fdinfo-3.img: at offset 4: wrong magic 0x55053847 (CORE); expected 0x56213732 for FDINFO');
  });

  test('unknown magic', () => {
    const b = Buffer.from(core);
    b.writeUInt32LE(0x12345678, 4);
    expect(imageError(() => decodeImage(b, 'x.img')).message).toMatch(/at offset 4: unknown image magic 0x12345678 \(not a CRIU image/);
    expect(imageError(() => decodeImage(b, 'core-1.img')).message).toMatch(/unknown image magic 0x12345678 \(expected 0x55053847 for CORE\)/);
    b.writeUInt32LE(0x01020304, 0);
    expect(imageError(() => decodeImage(b, 'y.img')).message).toMatch(/at offset 0: unknown image magic 0x01020304/);
  });

  test('missing or misplaced common header', () => {
    const inv = Buffer.concat([Buffer.from([0x19, 0x43, 0x56, 0x54]), fs.readFileSync(path.join(fixturesDir(), 'criu-4.2', 'sleep', 'inventory.img'))]);
    expect(imageError(() => decodeImage(inv, 'inventory.img')).message).toMatch(/must not carry the 0x54564319 header/);
    expect(imageError(() => decodeImage(core.subarray(4), 'core-1.img')).message).toMatch(/must start with 0x54564319, found none/);
  });

  test('length field larger than the file', async () => {
    const b = Buffer.from(core);
    b.writeUInt32LE(core.length, 8);
    const e = imageError(() => decodeImage(b, 'core-1.img'));
    expect(e.offset).toBe(12);
    expect(e.message).toMatch(/expected entry 0 \(\d+ bytes\), but the file ends after \d+ more bytes/);
    expect((await asyncImageError(readAllFrom(b, 'core-1.img'))).message).toMatch(/ends after/);
  });

  test('a huge length field is refused before anything is allocated', async () => {
    const b = Buffer.from(core);
    b.writeUInt32LE(0xfffffff0, 8);
    const before = process.memoryUsage().arrayBuffers;
    const e = imageError(() => decodeImage(b, 'core-1.img'));
    expect(e.offset).toBe(8);
    expect(e.message).toMatch(/entry 0 claims 4294967280 bytes; no CRIU entry is larger than 67108864/);
    // a stream that claims a huge payload and then ends allocates only what arrived
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE(IMG_COMMON_MAGIC, 0);
    hdr.writeUInt32LE(0x56453709, 4);
    const body = Buffer.from([0x08, 0x01, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]); // pipe_id 1, bytes 0xffffffff
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length);
    const claim = Buffer.concat([hdr, len, body, Buffer.alloc(100)]);
    const s = await asyncImageError(readAllFrom(claim, 'pipes-data.img'));
    expect(s.message).toMatch(/expected 4294967295 bytes of pipe data, but the file ends after 100 more bytes/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 1024 * 1024);
  });

  test('garbage protobuf', () => {
    const b = Buffer.from(core);
    b.fill(0xff, 12, 40);
    const e = imageError(() => decodeImage(b, 'core-1.img'));
    expect(e.offset).toBeGreaterThanOrEqual(12);
    expect(e.message).toMatch(/entry 0 \(core_entry\): /);
  });

  test('required field missing, wrong wire type, field number 0', () => {
    const mk = (body: number[]): Buffer => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(body.length);
      return Buffer.concat([encodeImage('FS', []), len, Buffer.from(body)]);
    };
    expect(imageError(() => decodeImage(mk([0x08, 0x01]), 'fs-1.img')).message).toMatch(/fs_entry: required field 'root_id' \(2\) is missing/);
    // a known field with the wrong wire type is kept as an unknown field (as protobuf parsers do) ...
    const odd = mk([0x0a, 0x01, 0x00, 0x08, 0x05, 0x10, 0x01]);
    const img = decodeImage(odd, 'fs-1.img');
    expect(img.entries[0].msg).toEqual({ cwd_id: 5, root_id: 1 });
    expect(encodeImage(img.kind, img.entries).subarray(12).equals(Buffer.from([0x0a, 0x01, 0x00, 0x08, 0x05, 0x10, 0x01]))).toBe(true);
    // ... so a required field sent only with the wrong type is missing
    expect(imageError(() => decodeImage(mk([0x0a, 0x01, 0x00, 0x10, 0x01]), 'fs-1.img')).message).toMatch(/required field 'cwd_id' \(1\) is missing/);
    expect(imageError(() => decodeImage(mk([0x00, 0x01]), 'fs-1.img')).message).toMatch(/field number 0 is invalid/);
    expect(imageError(() => decodeImage(mk([0x08, 0x80, 0x80]), 'fs-1.img')).message).toMatch(/varint runs past the end/);
  });

  test('raw kinds are refused with a reason', () => {
    expect(imageError(() => decodeImage(Buffer.alloc(4096), 'pages-1.img')).message).toMatch(/PAGES images are raw data without entries/);
  });

  test('a file on disk: errors carry its path', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bad-'));
    try {
      const f = path.join(dir, 'core-9.img');
      fs.writeFileSync(f, core.subarray(0, 100));
      const e = await asyncImageError(ImageReader.open(f).then((r) => r.readAll()));
      expect(e.file).toBe(f);
      expect(e.message).toContain(f);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad crit JSON', () => {
    expect(() => imageFromCrit([], 'a.json')).toThrow(ImageError);
    expect(() => imageFromCrit({ magic: 'NOPE', entries: [] }, 'a.json')).toThrow(/unknown magic "NOPE"/);
    expect(() => imageFromCrit({ magic: 'FS', entries: [{ cwd_id: 'x', root_id: 1 }] }, 'a.json')).toThrow(/entries\[0\]\.cwd_id: "x" is not a number/);
    expect(() => imageFromCrit({ magic: 'FS', entries: [{ cwd: 1 }] }, 'a.json')).toThrow(/fs_entry has no field 'cwd'/);
    expect(() => imageFromCrit({ magic: 'CORE', entries: [{ mtype: 'VAX' }] }, 'a.json')).toThrow(/'VAX' is not a value of enum march/);
  });
});
