/**
 * Parallel reads of a target's memory into the page buffer: the pieces are split by bytes between this thread and
 * worker threads (one per extra core), each reading its share into its own part of the shared buffer with
 * process_vm_readv (checkpoint/readv.ts), or pread of /proc/PID/mem without the addon. Workers are started before
 * the freeze (thread start-up is tens of milliseconds).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { GodwitError, SysError } from '../util/errors';
import type { ReadJob, ReadReply } from './memreader-worker';
import { toSysError } from './proc/read';
import { readvAddon } from './readv';

/** Reads up to this size are not split between threads: ~1 ms of copying, about a worker round trip. */
const SMALL_READ = 2 << 20;

export interface Piece {
  addr: number;
  len: number;
  /** Offset in the shared buffer. */
  at: number;
}

export class MemReader {
  private workers: Worker[] = [];
  private nextId = 1;
  private pending = new Map<number, { resolve: (n: number) => void; reject: (e: unknown) => void; pid: number }>();

  /** `extra` worker threads besides the caller's (default: one per core beyond the first). */
  constructor(extra = Math.max(0, os.availableParallelism() - 1)) {
    for (let i = 0; i < extra; i++) {
      const w = new Worker(path.join(__dirname, 'memreader-worker.js'));
      w.on('message', (r: ReadReply) => this.settle(r));
      w.on('error', (err) => this.failAll(err));
      w.unref();
      this.workers.push(w);
    }
  }

  private settle(r: ReadReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    if ('bytes' in r) p.resolve(r.bytes);
    else
      p.reject(
        r.error.errno !== undefined
          ? new SysError({ errno: Math.abs(r.error.errno), syscall: r.error.syscall ?? 'pread', pid: p.pid, path: `/proc/${p.pid}/mem`, what: `read memory at 0x${r.error.addr.toString(16)}` })
          : new GodwitError(`pid ${p.pid}: memory at 0x${r.error.addr.toString(16)}: ${r.error.message}`),
      );
  }

  private failAll(err: unknown): void {
    for (const p of this.pending.values()) p.reject(new GodwitError('a page reader thread failed', { cause: err }));
    this.pending.clear();
  }

  /** Reads every piece; resolves with the byte count once all are in the buffer. */
  async read(pid: number, sab: SharedArrayBuffer, pieces: Piece[]): Promise<number> {
    const total = pieces.reduce((n, p) => n + p.len, 0);
    // A small read is done here: a hand-off to a worker costs more than it saves.
    if (total <= SMALL_READ) return readPieces(pid, Buffer.from(sab), pieces);
    const shares = this.workers.length + 1;
    // Split into contiguous groups of about total/shares bytes (pieces are split where a share ends).
    const groups: Piece[][] = [];
    const target = Math.ceil(total / shares / 4096) * 4096;
    let cur: Piece[] = [];
    let curBytes = 0;
    for (const p of pieces) {
      let { addr, len, at } = p;
      while (len > 0) {
        const room = groups.length === shares - 1 ? len : Math.min(len, target - curBytes);
        cur.push({ addr, len: room, at });
        addr += room;
        at += room;
        len -= room;
        curBytes += room;
        if (curBytes >= target && groups.length < shares - 1) {
          groups.push(cur);
          cur = [];
          curBytes = 0;
        }
      }
    }
    groups.push(cur);
    const jobs = groups.slice(1).map((g, i) => this.submit(this.workers[i]!, pid, sab, g));
    // This thread reads the first share meanwhile.
    let mine: number;
    try {
      mine = readPieces(pid, Buffer.from(sab), groups[0] ?? []);
    } catch (err) {
      // The workers' shares must settle before the caller reuses (or drops) their part of the buffer.
      await Promise.allSettled(jobs);
      throw err;
    }
    const done = await Promise.all(jobs);
    return mine + done.reduce((n, b) => n + b, 0);
  }

  private submit(w: Worker, pid: number, sab: SharedArrayBuffer, g: Piece[]): Promise<number> {
    if (g.length === 0) return Promise.resolve(0);
    const id = this.nextId++;
    const job: ReadJob = { id, pid, sab, pieces: g.flatMap((p) => [p.addr, p.len, p.at]) };
    return new Promise<number>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, pid });
      w.ref(); // keep the process alive while a read is in flight
      w.postMessage(job);
    }).finally(() => w.unref());
  }

  async close(): Promise<void> {
    const ws = this.workers;
    this.workers = [];
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

export function readPieces(pid: number, buf: Buffer, pieces: Piece[]): number {
  if (pieces.length === 0) return 0;
  const addon = readvAddon();
  if (addon) {
    try {
      return addon.readv(pid, buf, new Float64Array(pieces.flatMap((p) => [p.addr, p.len, p.at])));
    } catch (err) {
      const e = err as { errno?: number; syscall?: string; addr?: number; message: string };
      if (e.errno === undefined) throw err;
      throw new SysError({ errno: e.errno, syscall: e.syscall ?? 'process_vm_readv', pid, what: `read memory at 0x${(e.addr ?? 0).toString(16)}` });
    }
  }
  const memPath = `/proc/${pid}/mem`;
  let fd: number;
  try {
    fd = fs.openSync(memPath, 'r');
  } catch (err) {
    throw toSysError(err, `open ${memPath}`, pid);
  }
  let bytes = 0;
  try {
    for (const p of pieces) {
      let got: number;
      try {
        got = fs.readSync(fd, buf, p.at, p.len, p.addr);
      } catch (err) {
        throw toSysError(err, `read memory 0x${p.addr.toString(16)}-0x${(p.addr + p.len).toString(16)} of pid ${pid}`, pid);
      }
      if (got !== p.len)
        throw new GodwitError(`pid ${pid}: memory at 0x${(p.addr + got).toString(16)} could not be read (${got} of ${p.len} bytes)`);
      bytes += got;
    }
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}
