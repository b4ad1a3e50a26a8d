/**
 * The page path of a dump: takes a workload's page data as a stream of Buffers (pages in pagemap order) and writes
 * either godwit's compressed container (pages-N.gwz, see container-format.ts) or CRIU's plain pages-N.img.
 *
 * Compressed writing: input is cut into chunks that are compressed on the worker pool while the producer goes on;
 * results are written in order as they come back. Memory stays bounded: at most `maxJobs` jobs are out, and
 * write() does not resolve until its bytes are no longer needed (backpressure).
 *
 * Copies: a Buffer backed by a SharedArrayBuffer (see allocPageBuffer) is compressed where it lies, with no copy;
 * the producer must then leave it alone until write() resolves and should keep a few writes in flight. Any other
 * Buffer is copied once into a staging chunk (and write() resolves as soon as it is copied).
 */
import { GodwitError, UsageError } from '../util/errors';
import { AtomicFile, FileRecord } from './atomic-file';
import { crc32, crc32Combine } from './crc32';
import { CompressionPool, JobResult } from './container-pool';
import {
  CHUNK_HEADER_SIZE,
  CODEC_ZSTD,
  CONTAINER_VERSION,
  ChunkInfo,
  HEADER_SIZE,
  MAX_CHUNK_SIZE,
  compressBound,
  containerName,
  encodeChunkHeader,
  encodeHeader,
  encodeIndex,
  encodeTrailer,
  plainPagesName,
} from './container-format';

export type Compression = 'zstd' | 'none';

/**
 * 256 KiB chunks: measured on this machine at level 1 on half-random/half-repeated pages, 128-256 KiB chunks
 * compress fastest (64 KiB: per-frame overhead; >= 512 KiB: zstd picks larger tables that miss the cache, and
 * throughput drops by half); random access then decompresses at most 256 KiB (~40 us) for one page, and the
 * index costs 32 bytes per 256 KiB.
 */
export const DEFAULT_CHUNK_SIZE = 256 << 10;
/**
 * Level 1: on page data level 3 compresses the bench data only 0.2% smaller but ~2x slower, and every byte of a
 * workload's memory passes here while it is frozen.
 */
export const DEFAULT_LEVEL = 1;
/** Chunks per job: 2 MiB per message keeps postMessage round trips (~tens of us) under 1% of the work. */
const JOB_CHUNKS = 8;

export interface PageWriterOptions {
  compress?: Compression;
  level?: number;
  chunkSize?: number;
  /** Worker pool to use; without one the writer makes its own (one worker per core) and closes it when done. */
  pool?: CompressionPool;
  /** Worker count for a pool of the writer's own. */
  workers?: number;
}

export interface PagesFileRecord extends FileRecord {
  /** Bytes of page data (the size pages-N.img has, whichever file holds it). */
  pagesBytes: number;
  compression: Compression;
  /** Chunks written (container only). */
  chunks?: number;
}

/**
 * Where a page writer's bytes go: an AtomicFile in an image directory, or anything else that takes bytes in order
 * (a transport stream, a counting sink in the benchmark).
 */
export interface PageSink {
  readonly name: string;
  /** Appends; crcs[i], when given, is the crc32 of bufs[i]. */
  writev(bufs: Uint8Array[], crcs?: Array<number | undefined>): Promise<void>;
  /** All bytes are written: make them durable and final. */
  commit(): Promise<FileRecord>;
  abort(): Promise<void>;
}

export interface PageWriter {
  /** The file name in the image directory (pages-N.gwz or pages-N.img). */
  readonly name: string;
  /** Appends page data; resolves once `data` may be reused. Rejects if the writer has failed. */
  write(data: Uint8Array): Promise<void>;
  /** Flushes, fsyncs and renames the file into place. */
  finish(): Promise<PagesFileRecord>;
  /** Stops and removes the partial file. */
  abort(): Promise<void>;
}

/** A Buffer in shared memory: the container writer compresses it in place, without copying. */
export function allocPageBuffer(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size));
}

export function pagesFileName(pagesId: number, compress: Compression): string {
  return compress === 'none' ? plainPagesName(pagesId) : containerName(pagesId);
}

export function validatePageWriterOptions(o: PageWriterOptions): Required<Pick<PageWriterOptions, 'compress' | 'level' | 'chunkSize'>> {
  const compress = o.compress ?? 'zstd';
  if (compress !== 'zstd' && compress !== 'none') throw new UsageError(`--compress must be zstd or none, got ${JSON.stringify(compress)}`);
  const level = o.level ?? DEFAULT_LEVEL;
  if (!Number.isInteger(level) || level < -7 || level > 22) throw new UsageError(`compression level must be an integer in -7..22, got ${level}`);
  const chunkSize = o.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < 4096 || chunkSize > MAX_CHUNK_SIZE || chunkSize % 4096 !== 0) {
    throw new UsageError(`chunk size must be a multiple of 4096 in 4096..${MAX_CHUNK_SIZE}, got ${chunkSize}`);
  }
  return { compress, level, chunkSize };
}

/** Opens the pages file for `pagesId` in `dir` (written under a temporary name until finish()). */
export async function createPageWriter(dir: string, pagesId: number, options: PageWriterOptions = {}): Promise<PageWriter> {
  const o = validatePageWriterOptions(options);
  const file = await AtomicFile.create(dir, pagesFileName(pagesId, o.compress));
  try {
    return createSinkPageWriter(file, options);
  } catch (err) {
    await file.abort();
    throw err;
  }
}

/** A page writer into any sink (the sink's name should be pagesFileName(id, compress)). */
export function createSinkPageWriter(sink: PageSink, options: PageWriterOptions = {}): PageWriter {
  const o = validatePageWriterOptions(options);
  if (o.compress === 'none') return new PlainPageWriter(sink);
  return new ContainerPageWriter(sink, o.level, o.chunkSize, options.pool, options.workers);
}

/** CRIU's pages-N.img: the bytes as they come. */
export class PlainPageWriter implements PageWriter {
  private chain: Promise<void> = Promise.resolve();
  private failed: unknown;
  constructor(private readonly file: PageSink) {}

  get name(): string {
    return this.file.name;
  }

  write(data: Uint8Array): Promise<void> {
    const p = this.chain.then(() => {
      if (this.failed !== undefined) throw this.failed;
      return this.file.writev([data]);
    });
    this.chain = p.catch((err) => {
      this.failed ??= err;
    });
    return p;
  }

  async finish(): Promise<PagesFileRecord> {
    await this.chain;
    if (this.failed !== undefined) {
      await this.file.abort();
      throw this.failed;
    }
    const r = await this.file.commit();
    return { ...r, pagesBytes: r.size, compression: 'none' };
  }

  async abort(): Promise<void> {
    this.failed ??= new GodwitError('page writer aborted');
    await this.chain;
    await this.file.abort();
  }
}

interface Job {
  /** Chunk refs handed to the pool. */
  chunks: Array<[SharedArrayBuffer, number, number]>;
  /** Staging slots to free when compressed. */
  staged: number[];
  out: number;
  result?: JobResult;
  /** Settles when the pool has compressed the job (created with the job: writes may wait on it before dispatch). */
  compressed: Promise<void>;
  settle: (err?: unknown) => void;
}

class ContainerPageWriter implements PageWriter {
  private readonly pool: CompressionPool;
  private readonly ownPool: boolean;
  private readonly chunkSize: number;
  private readonly level: number;
  /** Output bytes per chunk a job's region is sized for: its header, then room for its compressed bytes. */
  private readonly outStride: number;
  private readonly outCapacity: number;
  private readonly maxJobs: number;

  // Staging chunks for copied input: one SharedArrayBuffer cut into chunk-sized slots.
  private readonly stageSab: SharedArrayBuffer;
  private readonly stageFree: number[] = [];
  private stageCur = -1; // slot being filled
  private stageFill = 0;
  /** Output buffers, one per job slot; away with a worker while its job is compressed (transferred, see JobRequest.out). */
  private readonly outBufs: ArrayBuffer[] = [];
  private readonly outFree: number[] = [];
  private readonly waiters: Array<() => void> = [];

  private building: Job | undefined;
  private readonly jobs: Job[] = []; // dispatched, not yet written, in order
  private ingestChain: Promise<void> = Promise.resolve();
  private writeChain: Promise<void> = Promise.resolve();
  private failed: unknown;
  private finished = false;

  private readonly index: ChunkInfo[] = [];
  private fileOffset = HEADER_SIZE;
  private dataOffset = 0;

  constructor(
    private readonly file: PageSink,
    level: number,
    chunkSize: number,
    pool: CompressionPool | undefined,
    workers: number | undefined,
  ) {
    this.pool = pool ?? new CompressionPool(workers);
    this.ownPool = !pool;
    this.chunkSize = chunkSize;
    this.level = level;
    this.outCapacity = compressBound(chunkSize) + 64; // the frame header beyond the block bound (a raw frame fits too)
    // The workers leave room for each chunk's header right before its compressed bytes, and pack a job's chunks
    // one after another: the sink gets a job's file bytes as one contiguous run (streamPageSink sends it in frames
    // of the stream's chunk size, without copying).
    this.outStride = CHUNK_HEADER_SIZE + this.outCapacity;
    // Enough jobs for every worker to hold two and one more being written out.
    this.maxJobs = this.pool.size * 2 + 2;
    const stageSlots = this.maxJobs * JOB_CHUNKS + 1;
    this.stageSab = new SharedArrayBuffer(stageSlots * chunkSize);
    for (let i = stageSlots - 1; i >= 0; i--) this.stageFree.push(i);
    for (let i = 0; i < this.maxJobs; i++) this.outBufs.push(new ArrayBuffer(JOB_CHUNKS * this.outStride));
    for (let i = this.maxJobs - 1; i >= 0; i--) this.outFree.push(i);
    this.writeChain = this.file.writev([encodeHeader({ version: CONTAINER_VERSION, codec: CODEC_ZSTD, chunkSize, level, flags: 0 })]);
    this.writeChain.catch((err) => this.fail(err));
  }

  get name(): string {
    return this.file.name;
  }

  write(data: Uint8Array): Promise<void> {
    if (this.finished) return Promise.reject(new GodwitError(`${this.name}: write after finish`));
    let deps: Promise<void>[] = [];
    const ingested = this.ingestChain.then(async () => {
      if (this.failed !== undefined) throw this.failed;
      deps = await this.ingest(data);
    });
    this.ingestChain = ingested.catch((err) => this.fail(err));
    return ingested.then(() => Promise.all(deps)).then(() => {
      if (this.failed !== undefined) throw this.failed;
    });
  }

  private fail(err: unknown): void {
    this.failed ??= err;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `cond` holds (a slot freed) or the writer failed. */
  private async waitFor(cond: () => boolean): Promise<void> {
    while (!cond()) {
      if (this.failed !== undefined) throw this.failed;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.failed !== undefined) throw this.failed;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Cuts `data` into chunks and dispatches jobs; returns the promises its zero-copy chunks depend on. */
  private async ingest(data: Uint8Array): Promise<Promise<void>[]> {
    const cs = this.chunkSize;
    const deps: Promise<void>[] = [];
    const shared = data.buffer instanceof SharedArrayBuffer ? data.buffer : undefined;
    let pos = 0;
    while (pos < data.length) {
      if (this.stageCur >= 0 || !shared || data.length - pos < cs) {
        // Copy path: complete the staging chunk (or start one).
        if (this.stageCur < 0) {
          await this.waitFor(() => this.stageFree.length > 0);
          this.stageCur = this.stageFree.pop()!;
          this.stageFill = 0;
        }
        const n = Math.min(data.length - pos, cs - this.stageFill);
        new Uint8Array(this.stageSab, this.stageCur * cs + this.stageFill, n).set(data.subarray(pos, pos + n));
        this.stageFill += n;
        pos += n;
        if (this.stageFill === cs) {
          const job = await this.jobForNextChunk();
          job.chunks.push([this.stageSab, this.stageCur * cs, cs]);
          job.staged.push(this.stageCur);
          this.stageCur = -1;
          await this.dispatchIfFull();
        }
      } else {
        // Zero-copy path: a whole chunk straight from the producer's shared memory.
        const job = await this.jobForNextChunk();
        job.chunks.push([shared, data.byteOffset + pos, cs]);
        if (!deps.includes(job.compressed)) deps.push(job.compressed);
        pos += cs;
        await this.dispatchIfFull();
      }
    }
    // A producer waiting on this write must not wait for chunks that later writes would fill.
    if (this.building && this.building.chunks.length > 0) this.dispatch();
    return deps;
  }

  private async jobForNextChunk(): Promise<Job> {
    if (this.building) return this.building;
    await this.waitFor(() => this.outFree.length > 0);
    let settle!: (err?: unknown) => void;
    const compressed = new Promise<void>((resolve, reject) => {
      settle = (err) => (err === undefined ? resolve() : reject(err));
    });
    compressed.catch((err) => this.fail(err));
    const job: Job = { chunks: [], staged: [], out: this.outFree.pop()!, compressed, settle };
    this.building = job;
    return job;
  }

  private async dispatchIfFull(): Promise<void> {
    if (this.building && this.building.chunks.length >= JOB_CHUNKS) this.dispatch();
  }

  private dispatch(): void {
    const job = this.building!;
    this.building = undefined;
    this.jobs.push(job);
    this.pool
      .run({
        level: this.level,
        chunks: job.chunks,
        out: this.outBufs[job.out]!,
        headerRoom: CHUNK_HEADER_SIZE,
        outCapacity: this.outCapacity,
      })
      .then((result) => {
        job.result = result;
        this.outBufs[job.out] = result.out;
        for (const s of job.staged) this.stageFree.push(s);
        job.staged = [];
        this.flushDone();
        this.wake();
        job.settle();
      })
      .catch((err) => job.settle(err));
  }

  /** Writes every compressed job at the head of the queue, in order. */
  private flushDone(): void {
    while (this.jobs.length > 0 && this.jobs[0]!.result) {
      const job = this.jobs.shift()!;
      const { lengths, crcs } = job.result!;
      const bufs: Buffer[] = [];
      const bufCrcs: Array<number | undefined> = [];
      const outBuf = this.outBufs[job.out]!;
      let at = 0;
      for (let i = 0; i < job.chunks.length; i++) {
        const info: ChunkInfo = {
          fileOffset: this.fileOffset,
          offset: this.dataOffset,
          length: job.chunks[i]![2],
          compressedLength: lengths[i]!,
          crc: crcs[i]!,
        };
        const hdr = encodeChunkHeader(this.index.length, info, Buffer.from(outBuf, at, CHUNK_HEADER_SIZE));
        this.index.push(info);
        bufs.push(Buffer.from(outBuf, at, CHUNK_HEADER_SIZE + info.compressedLength));
        bufCrcs.push(crc32Combine(crc32(hdr), info.crc, info.compressedLength));
        at += CHUNK_HEADER_SIZE + info.compressedLength;
        this.fileOffset += CHUNK_HEADER_SIZE + info.compressedLength;
        this.dataOffset += info.length;
      }
      const out = job.out;
      this.writeChain = this.writeChain.then(async () => {
        if (this.failed !== undefined) return;
        try {
          await this.file.writev(bufs, bufCrcs);
        } catch (err) {
          this.fail(err);
        }
        this.outFree.push(out);
        this.wake();
      });
    }
  }

  async finish(): Promise<PagesFileRecord> {
    if (this.finished) throw new GodwitError(`${this.name}: finish called twice`);
    this.finished = true;
    try {
      await this.ingestChain;
      if (this.failed === undefined && this.stageCur >= 0 && this.stageFill > 0) {
        const job = await this.jobForNextChunk();
        job.chunks.push([this.stageSab, this.stageCur * this.chunkSize, this.stageFill]);
        job.staged.push(this.stageCur);
        this.stageCur = -1;
      }
      if (this.failed === undefined && this.building && this.building.chunks.length > 0) this.dispatch();
      await Promise.allSettled(this.jobs.map((j) => j.compressed));
      await this.writeChain;
      if (this.failed !== undefined) throw this.failed;
      const index = encodeIndex(this.index);
      const trailer = encodeTrailer({ indexOffset: this.fileOffset, totalLength: this.dataOffset, indexCrc: crc32(index) });
      await this.file.writev([index, trailer]);
      const r = await this.file.commit();
      return { ...r, pagesBytes: this.dataOffset, compression: 'zstd', chunks: this.index.length };
    } catch (err) {
      this.fail(err);
      await this.file.abort();
      throw err;
    } finally {
      if (this.ownPool) await this.pool.close();
    }
  }

  async abort(): Promise<void> {
    const err = new GodwitError(`${this.name}: page writer aborted`);
    this.fail(err);
    this.finished = true;
    this.building?.settle(err);
    this.building = undefined;
    await this.ingestChain.catch(() => undefined);
    await Promise.allSettled(this.jobs.map((j) => j.compressed));
    await this.writeChain.catch(() => undefined);
    await this.file.abort();
    if (this.ownPool) await this.pool.close();
  }
}
