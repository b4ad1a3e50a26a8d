/**
 * Compression worker of the page container's pool (see container-pool.ts). Input lives in SharedArrayBuffers and
 * the output buffer is transferred with the job and back: no page byte is copied through postMessage.
 */
import { parentPort } from 'node:worker_threads';
import * as binding from 'zstd-napi/binding';
import { loadAddon } from '../native/addon';
import type { JobRequest, JobReply } from './container-pool';
import { crc32 } from './crc32';

/**
 * A chunk is stored as a zstd frame of raw blocks, not compressed, when none of PROBES pieces of PROBE_BYTES spread
 * over it shrinks by more than 1/32 at the chunk's level: random or encrypted memory, compressed data. zstd level 1
 * runs at ~2.1 GB/s over such bytes here to find nothing; the probes and the copy at ~8 GB/s together. A chunk
 * with any compressible page among the probed ones (zeros, code, text) is compressed as before; one whose probed
 * pages are random and the rest not loses only that chunk's ratio.
 */
const PROBES = 4;
const PROBE_BYTES = 4096;
/** Chunks smaller than this are always compressed: the probes would be most of the work. */
const PROBE_MIN_CHUNK = 64 << 10;
const rawFrame = loadAddon()?.zstdRawFrame;
/**
 * A chunk whose every page is one byte repeated (zeroed memory) becomes RLE blocks at ~11 GB/s, zstd level 1 here does
 * ~6 GB/s (native/addon/rawframe.c): in this pool 0.12-0.15 CPU-s per 512 MiB of such pages against 0.18-0.19. Any
 * other chunk fails the check within a cache line and goes on to the probes and zstd.
 */
const uniformFrame = loadAddon()?.zstdUniformFrame;
const probeOut = Buffer.allocUnsafe(binding.compressBound(PROBE_BYTES) + 64);

function incompressible(cctx: binding.CCtx, src: Uint8Array): boolean {
  if (!rawFrame || src.length < PROBE_MIN_CHUNK) return false;
  const step = Math.floor(src.length / PROBES / PROBE_BYTES) * PROBE_BYTES;
  for (let k = 0; k < PROBES; k++) {
    const n = cctx.compress2(probeOut, src.subarray(k * step, k * step + PROBE_BYTES));
    if (n < PROBE_BYTES - PROBE_BYTES / 32) return false;
  }
  return true;
}

const cctxByLevel = new Map<number, binding.CCtx>();

function cctxFor(level: number): binding.CCtx {
  let c = cctxByLevel.get(level);
  if (!c) {
    c = new binding.CCtx();
    c.setParameter(binding.CParameter.compressionLevel, level);
    // No XXH64 content checksum: the chunk's crc32 of its compressed bytes (below), checked by every reader before
    // it decompresses, catches the same damage, and XXH64 was measured at 40-45% of the compression's own time
    // here (0.13 of 0.48 CPU-s per 1 GiB of pages), on the path every byte of a migration takes.
    c.setParameter(binding.CParameter.checksumFlag, 0);
    cctxByLevel.set(level, c);
  }
  return c;
}

parentPort!.on('message', (job: JobRequest) => {
  let reply: JobReply;
  try {
    const cctx = cctxFor(job.level);
    const lengths: number[] = [];
    const crcs: number[] = [];
    let at = 0;
    for (let i = 0; i < job.chunks.length; i++) {
      const [sab, off, len] = job.chunks[i]!;
      const src = new Uint8Array(sab, off, len);
      at += job.headerRoom;
      const dst = new Uint8Array(job.out, at, job.outCapacity);
      const n = uniformFrame?.(dst, src) || (incompressible(cctx, src) ? rawFrame!(dst, src) : cctx.compress2(dst, src));
      at += n;
      lengths.push(n);
      crcs.push(crc32(dst.subarray(0, n)));
    }
    reply = { id: job.id, out: job.out, lengths, crcs };
  } catch (err) {
    reply = { id: job.id, out: job.out, error: err instanceof Error ? err.message : String(err) };
  }
  parentPort!.postMessage(reply, [job.out]);
});
