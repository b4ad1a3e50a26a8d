/**
 * images/crc32's crc32 must be zlib's crc32 bit for bit: the stream's frames, the manifest's file checksums and CRIU
 * tooling that reads them all assume it. The folding code (native/addon/crc32.c) has separate paths for the 512-bit
 * lanes (VPCLMULQDQ, 256 bytes and up), the 64-byte lanes, the 16-byte folds, the byte tail and short buffers, so
 * every length across those boundaries is checked, at every alignment, with continued crcs; the 128-bit path for
 * long buffers too, in a process told not to use the 512-bit one.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { ADDON_PATH, loadAddon } from '../native/addon';
import { crc32 } from '../images/crc32';

const PREVIOUS = [0, 1, 0x80000000, 0xffffffff, 0x12345678];

describe('crc32', () => {
  test('the addon has the folding crc32 on this machine (PCLMULQDQ)', () => {
    expect(typeof loadAddon()?.crc32).toBe('function');
  });

  test('equals zlib for every length 1..1100 at every alignment and with continued crcs', () => {
    const data = randomBytes(1100 + 16);
    let checked = 0;
    for (let len = 1; len <= 1100; len++) {
      for (let align = 0; align < 16; align++) {
        const view = data.subarray(align, align + len);
        for (const prev of PREVIOUS) {
          const want = zlib.crc32(view, prev) >>> 0;
          if (crc32(view, prev) !== want) throw new Error(`length ${len}, alignment ${align}, previous ${prev}: ${crc32(view, prev)} != ${want}`);
          checked++;
        }
      }
    }
    expect(checked).toBe(1100 * 16 * PREVIOUS.length);
  });

  test('the 128-bit path (CPUs without VPCLMULQDQ) equals zlib on long buffers too', () => {
    const script = `const zlib = require('zlib'); const c = require(${JSON.stringify(ADDON_PATH)}).crc32;
      const d = require('crypto').randomBytes(1 << 16); let bad = 0;
      for (let len = 200; len <= 1100; len += 7) for (let a = 0; a < 16; a += 5) { const v = d.subarray(a, a + len);
        if (c(v, 0x1234) !== (zlib.crc32(v, 0x1234) >>> 0)) bad++; }
      if (c(d, 9) !== (zlib.crc32(d, 9) >>> 0)) bad++; console.log(bad);`;
    const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, GODWIT_CRC_NARROW: '1' } }).toString().trim();
    expect(out).toBe('0');
  });

  test('equals zlib on large buffers and on all-zero and all-ones data', () => {
    for (const buf of [randomBytes(4 << 20), Buffer.alloc(1 << 20), Buffer.alloc((1 << 20) + 13, 0xff)]) {
      expect(crc32(buf)).toBe(zlib.crc32(buf) >>> 0);
      expect(crc32(buf, 0xdeadbeef)).toBe(zlib.crc32(buf, 0xdeadbeef) >>> 0);
    }
  });

  test('hashing in pieces equals hashing at once', () => {
    const buf = randomBytes(100_003);
    let c = 0;
    for (let o = 0; o < buf.length; o += 4099) c = crc32(buf.subarray(o, o + 4099), c);
    expect(c).toBe(zlib.crc32(buf) >>> 0);
  });

  test('no bytes continue nothing: the previous crc comes back', () => {
    expect(crc32(Buffer.alloc(0), 0x12345678)).toBe(0x12345678);
    expect(crc32(Buffer.alloc(0))).toBe(0);
  });

  test('bad arguments are a type error naming the signature, not a crash', () => {
    const fn = loadAddon()!.crc32!;
    expect(() => fn('text' as unknown as Uint8Array)).toThrow(/^crc32\(Uint8Array/);
    expect(() => fn(new Uint16Array(4) as unknown as Uint8Array)).toThrow(/^crc32\(Uint8Array/);
  });
});

describe('readCrc: the sender reads and hashes in the threadpool', () => {
  const readCrc = loadAddon()!.readCrc!;

  test('reads from the position until the buffer is full or the file ends, and hashes exactly that', async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-readcrc-'));
    try {
      const data = randomBytes(3_000_000);
      fs.writeFileSync(path.join(dir, 'f'), data);
      const fd = fs.openSync(path.join(dir, 'f'), 'r');
      try {
        const buf = Buffer.alloc(1 << 20);
        for (const pos of [0, 12345, 2_500_000, 3_000_000]) {
          const r = await readCrc(fd, buf, pos);
          const want = data.subarray(pos, pos + buf.length);
          expect(r).toEqual({ bytes: want.length, crc: zlib.crc32(want) >>> 0 });
          expect(buf.subarray(0, r.bytes).equals(want)).toBe(true);
        }
      } finally {
        fs.closeSync(fd);
      }
      // A failed read rejects like Node's errno errors.
      const wfd = fs.openSync(path.join(dir, 'w'), 'w');
      try {
        await expect(readCrc(wfd, Buffer.alloc(10), 0)).rejects.toMatchObject({ code: 'EBADF', errno: 9, syscall: 'pread' });
      } finally {
        fs.closeSync(wfd);
      }
      expect(() => readCrc(-1, Buffer.alloc(1), 0)).toThrow(/^readCrc\(fd/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
