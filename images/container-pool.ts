/**
 * A pool of worker threads that compress page chunks, one per core by default.
 *
 * zstd-napi's calls are synchronous and its own multithreading (nbWorkers) parallelises inside one frame only:
 * measured here, per-chunk frames with nbWorkers=2 gain nothing and one long frame gains 1.2x, while independent
 * frames on two worker threads gain close to 2x. So each chunk is its own frame and the pool spreads frames.
 *
 * Jobs reference SharedArrayBuffers by offset; the worker writes compressed bytes into the caller's output region.
 * Each worker is given up to two jobs at a time so it never idles while the main thread is busy between replies.
 * Workers are unref'd while idle so an idle pool never keeps the process alive.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { GodwitError } from '../util/errors';

export interface JobRequest {
  id: number;
  level: number;
  /** [buffer, byte offset, length] of each chunk to compress, in order. */
  chunks: Array<[SharedArrayBuffer, number, number]>;
  /**
   * Output: the chunks one after another from byte 0, each after `headerRoom` bytes left for its header (written
   * by the caller), each at most outCapacity bytes; it must hold chunks·(headerRoom + outCapacity) bytes. Moved to
   * the worker with the job and back with the reply (transferred, never copied). Not a SharedArrayBuffer: V8
   * copies out of one with relaxed atomic loads (~2 GB/s here, against ~30 GB/s from an ArrayBuffer), and every
   * byte of it is copied once more on its way out (ssh2 into its packets): 0.25 s of the source's main thread per
   * 540 MB.
   */
  out: ArrayBuffer;
  headerRoom: number;
  outCapacity: number;
}

export type JobReply = { id: number; out: ArrayBuffer; lengths: number[]; crcs: number[] } | { id: number; out: ArrayBuffer; error: string };

export interface JobResult {
  /** The job's output buffer, back from the worker. */
  out: ArrayBuffer;
  lengths: number[];
  crcs: number[];
}

interface Pending {
  job: JobRequest;
  resolve: (r: JobResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  inFlight: Map<number, Pending>;
  dead: boolean;
}

/** Jobs queued inside one worker: one running, one ready behind it. */
const PER_WORKER = 2;

export class CompressionPool {
  readonly size: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 1;
  private closed = false;

  constructor(size: number = os.availableParallelism()) {
    if (!Number.isInteger(size) || size < 1 || size > 64) throw new GodwitError(`compression workers must be 1..64, got ${size}`);
    this.size = size;
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(path.join(__dirname, 'container-worker.js'));
    const slot: Slot = { worker, inFlight: new Map(), dead: false };
    worker.unref();
    worker.on('message', (reply: JobReply) => {
      const p = slot.inFlight.get(reply.id);
      if (!p) return;
      slot.inFlight.delete(reply.id);
      if (slot.inFlight.size === 0) worker.unref();
      if ('error' in reply) p.reject(new GodwitError(`compression worker failed: ${reply.error}`));
      else p.resolve({ out: reply.out, lengths: reply.lengths, crcs: reply.crcs });
      this.pump();
    });
    const fail = (err: Error) => {
      slot.dead = true;
      for (const p of slot.inFlight.values()) p.reject(new GodwitError('compression worker died', { cause: err }));
      slot.inFlight.clear();
      // The remaining workers carry on; with none left, everything queued fails.
      if (this.slots.every((s) => s.dead)) {
        for (const p of this.queue.splice(0)) p.reject(new GodwitError('no compression worker left', { cause: err }));
      } else this.pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!slot.dead && !this.closed) fail(new Error(`worker exited with code ${code}`));
      slot.dead = true;
    });
    return slot;
  }

  /** Compresses the job's chunks; resolves with their compressed lengths and crc32s. */
  run(job: Omit<JobRequest, 'id'>): Promise<JobResult> {
    if (this.closed) return Promise.reject(new GodwitError('compression pool is closed'));
    if (this.slots.every((s) => s.dead)) return Promise.reject(new GodwitError('no compression worker left'));
    return new Promise<JobResult>((resolve, reject) => {
      this.queue.push({ job: { ...job, id: this.nextId++ }, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let best: Slot | undefined;
      for (const s of this.slots) {
        if (!s.dead && s.inFlight.size < PER_WORKER && (!best || s.inFlight.size < best.inFlight.size)) best = s;
      }
      if (!best) return;
      const p = this.queue.shift()!;
      if (best.inFlight.size === 0) best.worker.ref();
      best.inFlight.set(p.job.id, p);
      best.worker.postMessage(p.job, [p.job.out]);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new GodwitError('compression pool closed'));
    await Promise.all(
      this.slots.map(async (s) => {
        for (const p of s.inFlight.values()) p.reject(new GodwitError('compression pool closed'));
        s.inFlight.clear();
        s.dead = true;
        await s.worker.terminate();
      }),
    );
  }
}
