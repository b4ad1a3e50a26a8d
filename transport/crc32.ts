/**
 * crc32 (zlib's, via node:zlib) plus crc32Combine: the crc of A+B from crc(A), crc(B) and B's length, without
 * touching the bytes again. The stream checks every byte twice (the frame's payload crc and the file's running
 * crc); with combine each byte is hashed once on each end, which was a tenth of the sender's and receiver's CPU.
 *
 * Combine works in GF(2) polynomials modulo the (reflected) crc32 polynomial: crc(A+B) = crc(A) * x^(8|B|) + crc(B),
 * with x^(8n) found by square-and-multiply over a table of x^(2^k). zlib has the same function (crc32_combine);
 * Node does not expose it.
 */
import { crc32 } from 'node:zlib';

export { crc32 };

const POLY = 0xedb88320;

/** a * b modulo the crc polynomial (bit 31 is x^0 in the reflected representation). */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) mod P. */
const X2N: number[] = (() => {
  const t = [0x40000000]; // x^1
  for (let k = 1; k < 32; k++) t.push(multModP(t[k - 1]!, t[k - 1]!));
  return t;
})();

/** x^(8n) mod P for a byte count n (n < 2^53). */
function x8nModP(n: number): number {
  let p = 0x80000000; // x^0
  let k = 3; // x^(8n) = x^(2^3 * n)
  while (n > 0) {
    if (n % 2 === 1) p = multModP(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

/** crc32 of A followed by B, given crc32(A), crc32(B) and B's length in bytes. */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB === 0) return crcA >>> 0;
  return (multModP(x8nModP(lengthB), crcA >>> 0) ^ crcB) >>> 0;
}
