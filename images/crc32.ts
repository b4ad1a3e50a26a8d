/**
 * CRC-32 (IEEE 802.3, the one zlib, gzip and PNG use) and crc32Combine.
 *
 * The page container's chunks are checksummed by the compression workers; the manifest wants one checksum per
 * file. crc32Combine(crc(A), crc(B), len(B)) = crc(A ‖ B) lets the writer build the whole-file checksum from the
 * per-chunk ones without hashing the bytes a second time on the main thread. The combine math is the
 * polynomial-multiplication form (x^(8·len) mod P), a few microseconds per call whatever the length.
 */
import * as zlib from 'node:zlib';
import { loadAddon } from '../native/addon';

/** Reflected IEEE polynomial. */
const POLY = 0xedb88320;

/** godwit's addon folds with carry-less multiplication (native/addon/crc32.c): 2.5-4x zlib's speed here in 128-bit
 *  lanes, 5-8x in 512-bit ones (VPCLMULQDQ), and every byte of a stream is hashed on both ends. zlib's where the
 *  addon is not built or the CPU lacks PCLMULQDQ. */
const folding = loadAddon()?.crc32;

/** The crc of the bytes hashed so far (`previous`) continued over `data`. */
export function crc32(data: Uint8Array, previous = 0): number {
  // zlib answers 0 for no bytes whatever `previous` is; the crc of nothing more is `previous`.
  if (data.length === 0) return previous >>> 0;
  return folding ? folding(data, previous >>> 0) : zlib.crc32(data, previous) >>> 0;
}

/** a·b mod P over GF(2), both in reflected bit order (bit 31 is x^0). */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p = (p ^ b) >>> 0;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? ((b >>> 1) ^ POLY) >>> 0 : b >>> 1;
  }
  return p >>> 0;
}

/** x^(2^k) mod P for k = 0..31. */
const X2N: number[] = (() => {
  const t: number[] = [];
  let p = 0x40000000; // x^1
  t.push(p);
  for (let k = 1; k < 32; k++) {
    p = multModP(p, p);
    t.push(p);
  }
  return t;
})();

/** x^(n·2^k) mod P; n may exceed 2^32 (file lengths). */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  while (n > 0) {
    if (n % 2 === 1) p = multModP(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

/** CRC of A ‖ B from crc(A), crc(B) and the length of B in bytes. */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB === 0) return crcA >>> 0;
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ (crcB >>> 0)) >>> 0;
}

export function crc32Hex(crc: number): string {
  return (crc >>> 0).toString(16).padStart(8, '0');
}
