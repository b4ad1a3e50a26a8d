/**
 * Page container benchmark: the container's write and read throughput as ratios of raw zstd-napi on one core,
 * and the speed-up from two cores, all measured in this run on the same data.
 *
 * Data: GODWIT_BENCH_MIB (default 512) MiB, every 4 KiB page half random, half one repeated byte, so zstd halves
 * it. Every figure is the best of GODWIT_BENCH_ROUNDS (default 3) rounds, the rounds interleaved so that load from
 * other processes hits every figure alike. Worker start-up is not timed (a dump starts its pool before freezing).
 *
 * "no I/O" rows write the container into a sink that only counts bytes: they measure the container itself. The
 * "file" rows write an image file (temporary name, fsync, rename) in GODWIT_BENCH_DIR (default the OS temp dir),
 * beside the same bytes written plainly with fsync: the storage limit of this machine, measured in the same run.
 *
 * Run: node dist/bench/container.js   (or npm run bench)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as binding from 'zstd-napi/binding';
import { AtomicFile, FileRecord } from '../images/atomic-file';
import { CompressionPool } from '../images/container-pool';
import { ContainerReader } from '../images/container-reader';
import { DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL, PageSink, createPageWriter, createSinkPageWriter } from '../images/container-writer';
import { pageData } from './pagedata';

const MiB = 1 << 20;
const SIZE = Number(process.env.GODWIT_BENCH_MIB ?? 512) * MiB;
const ROUNDS = Number(process.env.GODWIT_BENCH_ROUNDS ?? 3);
const DIR = process.env.GODWIT_BENCH_DIR ?? os.tmpdir();
/** The producer's piece size and how many pieces it keeps in flight (what a dump reading the helper's pipe does). */
const PIECE = MiB;
const IN_FLIGHT = 8;

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Raw zstd-napi on this thread: same level, chunk size and frame checksum as the container. */
function rawCompress(data: Buffer, keep?: Buffer[]): { seconds: number; out: number } {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, DEFAULT_LEVEL);
  cctx.setParameter(binding.CParameter.checksumFlag, 0); // as the container's writer: its chunks carry a crc32 instead
  const dst = Buffer.allocUnsafe(binding.compressBound(DEFAULT_CHUNK_SIZE) + 64);
  let out = 0;
  const t = process.hrtime.bigint();
  for (let at = 0; at < data.length; at += DEFAULT_CHUNK_SIZE) {
    const n = cctx.compress2(dst, data.subarray(at, at + DEFAULT_CHUNK_SIZE));
    out += n;
    if (keep) keep.push(Buffer.from(dst.subarray(0, n)));
  }
  return { seconds: seconds(t), out };
}

function rawDecompress(frames: Buffer[]): number {
  const dctx = new binding.DCtx();
  const dst = Buffer.allocUnsafe(DEFAULT_CHUNK_SIZE);
  const t = process.hrtime.bigint();
  for (const f of frames) dctx.decompress(dst, f);
  return seconds(t);
}

/** Counts bytes; what the container costs without any storage under it. */
class CountingSink implements PageSink {
  readonly name = 'pages-1.gwz';
  size = 0;
  async writev(bufs: Uint8Array[]): Promise<void> {
    for (const b of bufs) this.size += b.length;
  }
  async commit(): Promise<FileRecord> {
    return { name: this.name, size: this.size, crc32: '' };
  }
  async abort(): Promise<void> {}
}

async function feed(w: { write(d: Uint8Array): Promise<void> }, data: Buffer): Promise<void> {
  const pending: Promise<void>[] = [];
  for (let at = 0; at < data.length; at += PIECE) {
    pending.push(w.write(data.subarray(at, at + PIECE)));
    if (pending.length >= IN_FLIGHT) await pending.shift();
  }
  await Promise.all(pending);
}

async function containerToSink(data: Buffer, pool: CompressionPool): Promise<number> {
  const t = process.hrtime.bigint();
  const w = createSinkPageWriter(new CountingSink(), { pool });
  await feed(w, data);
  await w.finish();
  return seconds(t);
}

async function containerToFile(data: Buffer, pool: CompressionPool, dir: string): Promise<{ seconds: number; size: number }> {
  fs.rmSync(path.join(dir, 'pages-1.gwz'), { force: true });
  const t = process.hrtime.bigint();
  const w = await createPageWriter(dir, 1, { pool });
  await feed(w, data);
  const r = await w.finish();
  return { seconds: seconds(t), size: r.size };
}

/** The storage limit: `bytes` bytes written plainly in 1 MiB pieces, fsync'd, renamed. */
async function plainFile(data: Buffer, bytes: number, dir: string): Promise<number> {
  fs.rmSync(path.join(dir, 'plain.img'), { force: true });
  const t = process.hrtime.bigint();
  const f = await AtomicFile.create(dir, 'plain.img');
  for (let at = 0; at < bytes; at += PIECE) await f.writev([data.subarray(at, Math.min(at + PIECE, bytes))], [0]);
  await f.commit();
  return seconds(t);
}

async function readContainer(file: string): Promise<number> {
  const r = await ContainerReader.open(file);
  const t = process.hrtime.bigint();
  let n = 0;
  for await (const b of r.stream()) n += b.length;
  const s = seconds(t);
  await r.close();
  if (n !== SIZE) throw new Error(`read back ${n} bytes, expected ${SIZE}`);
  return s;
}

async function main(): Promise<void> {
  const mbps = (bytes: number, s: number): number => bytes / s / 1e6;
  process.stdout.write(`godwit page container benchmark: ${SIZE / MiB} MiB of pages (each half random, half repeated), zstd level ${DEFAULT_LEVEL}, ${DEFAULT_CHUNK_SIZE >> 10} KiB chunks, ${os.availableParallelism()} cores, best of ${ROUNDS} rounds\n`);
  const load = (): string => os.loadavg().map((x) => x.toFixed(1)).join(' ');
  process.stdout.write(`  load average at start: ${load()} (other processes on ${os.availableParallelism()} cores skew every figure; the rounds are interleaved)\n`);
  const data = pageData(SIZE, true);
  const copied = Buffer.from(data); // the same bytes in ordinary (non-shared) memory: the writer must copy them
  const pool1 = new CompressionPool(1);
  const pool2 = new CompressionPool(2);
  const dir = fs.mkdtempSync(path.join(DIR, 'godwit-bench-'));
  const best: Record<string, number> = {};
  const cpu: Record<string, number> = {};
  const keep = (k: string, s: number): void => {
    best[k] = Math.min(best[k] ?? Infinity, s);
  };
  /** Runs `f`, keeping its best wall time and its least CPU time (all threads: main, workers, libuv). */
  const measure = async (k: string, f: () => Promise<number> | number): Promise<void> => {
    const c0 = process.cpuUsage();
    keep(k, await f());
    const c = process.cpuUsage(c0);
    cpu[k] = Math.min(cpu[k] ?? Infinity, (c.user + c.system) / 1e6);
  };
  let frames: Buffer[] = [];
  let compressed = 0;
  let fileSize = 0;
  try {
    // Warm-up: JIT, worker start, first-touch of the output buffers.
    await containerToSink(data.subarray(0, 32 * MiB), pool1);
    await containerToSink(data.subarray(0, 32 * MiB), pool2);
    for (let round = 0; round < ROUNDS; round++) {
      const keepFrames: Buffer[] | undefined = round === 0 ? [] : undefined;
      if (keepFrames) {
        const raw = rawCompress(data, keepFrames); // the first pass keeps the frames for the decompression figure
        frames = keepFrames;
        compressed = raw.out;
      }
      await measure('raw', () => rawCompress(data).seconds);
      await measure('rawD', () => rawDecompress(frames));
      await measure('sink1', () => containerToSink(data, pool1));
      await measure('sink2', () => containerToSink(data, pool2));
      await measure('sink2copy', () => containerToSink(copied, pool2));
      await measure('file2', async () => {
        const f = await containerToFile(data, pool2, dir);
        fileSize = f.size;
        return f.seconds;
      });
      await measure('plain', () => plainFile(copied, fileSize, dir));
      await measure('read', () => readContainer(path.join(dir, 'pages-1.gwz')));
    }
  } finally {
    await pool1.close();
    await pool2.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const raw = mbps(SIZE, best.raw!);
  const row = (label: string, v: number, note: string): void => {
    process.stdout.write(`  ${label.padEnd(52)} ${v.toFixed(0).padStart(6)} MB/s  ${note}\n`);
  };
  const x = (v: number): string => `${(v / raw).toFixed(2)}x raw`;
  process.stdout.write(`  compressed size: ${(compressed / SIZE).toFixed(3)} of the input; container file ${(fileSize / SIZE).toFixed(3)}\n`);
  row('raw zstd-napi compress, 1 core', raw, '= 1.00x raw (the reference)');
  row('raw zstd-napi decompress, 1 core', mbps(SIZE, best.rawD!), x(mbps(SIZE, best.rawD!)));
  const s1 = mbps(SIZE, best.sink1!);
  const s2 = mbps(SIZE, best.sink2!);
  row('container write, 1 worker, no I/O', s1, `${x(s1)}  (target >= 0.90x)`);
  row('container write, 2 workers, no I/O', s2, `${x(s2)}  (target >= 1.60x); ${(s2 / s1).toFixed(2)}x one worker`);
  const c2 = mbps(SIZE, best.sink2copy!);
  row('container write, 2 workers, no I/O, input copied', c2, `${x(c2)}  (input not in shared memory)`);
  const f2 = mbps(SIZE, best.file2!);
  const plainOut = mbps(fileSize, best.plain!);
  row(`container write, 2 workers, to a file + fsync`, f2, `${x(f2)}  (${DIR})`);
  row(`  storage limit: plain write + fsync of the same size`, plainOut, `of file bytes = ${(plainOut * (SIZE / fileSize)).toFixed(0)} MB/s of pages at this ratio; container reaches ${((f2 / (plainOut * (SIZE / fileSize))) * 100).toFixed(0)}%`);
  const rd = mbps(SIZE, best.read!);
  row('container read (stream, checks + decompress, 1 thread)', rd, `${x(rd)}; ${(rd / mbps(SIZE, best.rawD!)).toFixed(2)}x raw decompress`);
  process.stdout.write(`  CPU time per byte (all threads), as a multiple of raw zstd's: container write ${(cpu.sink1! / cpu.raw!).toFixed(2)}x with 1 worker, ${(cpu.sink2! / cpu.raw!).toFixed(2)}x with 2, ${(cpu.sink2copy! / cpu.raw!).toFixed(2)}x copied input, ${(cpu.file2! / cpu.raw!).toFixed(2)}x to a file; read ${(cpu.read! / cpu.rawD!).toFixed(2)}x raw decompress\n`);
  process.stdout.write(`  load average at end: ${load()}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench/container: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
