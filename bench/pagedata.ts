import * as crypto from 'node:crypto';
import { allocPageBuffer } from '../images/container-writer';

/** Page-like data: each 4 KiB page half random, half one repeated byte (zstd halves it). */
export function pageData(bytes: number, shared = false, seed = 1): Buffer {
  const b = shared ? allocPageBuffer(bytes) : Buffer.alloc(bytes);
  const rnd = crypto.createHash('sha256').update(String(seed)).digest();
  const stream = crypto.createCipheriv('aes-128-ctr', rnd.subarray(0, 16), rnd.subarray(16, 32));
  const noise = stream.update(Buffer.alloc(Math.ceil(bytes / 2) + 4096));
  for (let p = 0, n = 0; p < bytes; p += 4096) {
    const half = Math.min(2048, bytes - p);
    noise.copy(b, p, n, n + half);
    n += half;
    if (p + 2048 < bytes) b.fill((p >> 12) & 0xff, p + 2048, Math.min(p + 4096, bytes));
  }
  return b;
}
