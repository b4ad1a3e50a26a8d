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
import { readvAddon } from './readv';

/**
 * Processes with pages another process maps too (copy-on-write after fork, KSM), read through /proc/PID/mem:
 * process_vm_readv pins the pages it reads, and pinning a shared anonymous page makes the kernel give the target
 * a copy of it (GUP unshare, since Linux 5.19), so a dump would un-share the tree's memory (zdtm cow00; a
 * --leave-running snapshot of N forked workers could multiply their memory by N). /proc/PID/mem does not pin.
 */
const sharedPages = new Set<number>();

/** Records whether `pid` has pages it shares with another process (from its pagemap, checkpoint/pageranges.ts). */
export function setSharedPages(pid: number, shared: boolean): void {
  if (shared) sharedPages.add(pid);
  else sharedPages.delete(pid);
}

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
    else p.reject(readError(p.pid, r.error));
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
    const job: ReadJob = { id, pid, sab, triples: toTriples(g), viaMem: sharedPages.has(pid) };
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

/** A failed read, as plain data (it crosses from a worker thread): errno and syscall when the kernel refused. */
export interface ReadFailure {
  message: string;
  errno?: number;
  syscall?: string;
  /** The address being read, and the end of the piece it lies in. */
  addr: number;
  end: number;
}

/** A ReadFailure as the error the caller sees (a SysError naming pid, syscall and address range when it has an errno). */
export function readError(pid: number, f: ReadFailure): Error {
  const range = `0x${f.addr.toString(16)}-0x${f.end.toString(16)}`;
  if (f.errno === undefined) return new GodwitError(`pid ${pid}: memory ${range}: ${f.message}`);
  const what = `read memory ${range}`;
  const syscall = f.syscall ?? 'pread';
  return new SysError({ errno: Math.abs(f.errno), syscall, pid, ...(syscall === 'process_vm_readv' ? {} : { path: `/proc/${pid}/mem` }), what });
}

/**
 * Reads (address, length, offset in buf) triples of `pid`'s memory into buf: process_vm_readv through the addon,
 * else (or `viaMem`: shared pages) pread of /proc/PID/mem. The one read routine of this thread and of the worker threads; it never throws.
 */
export function readTriples(pid: number, buf: Buffer, triples: Float64Array, viaMem = false): { bytes: number } | { error: ReadFailure } {
  if (triples.length === 0) return { bytes: 0 };
  const addon = viaMem ? undefined : readvAddon();
  if (addon) {
    try {
      return { bytes: addon.readv(pid, buf, triples) };
    } catch (err) {
      const e = err as { message: string; errno?: number; syscall?: string; addr?: number };
      const addr = e.addr ?? triples[0]!;
      return { error: { message: e.message, errno: e.errno, syscall: e.syscall ?? 'process_vm_readv', addr, end: pieceEnd(triples, addr) } };
    }
  }
  let fd = -1;
  let addr = triples[0]!;
  let end = addr + triples[1]!;
  let bytes = 0;
  try {
    fd = fs.openSync(`/proc/${pid}/mem`, 'r');
    for (let i = 0; i < triples.length; i += 3) {
      addr = triples[i]!;
      const len = triples[i + 1]!;
      end = addr + len;
      const got = fs.readSync(fd, buf, triples[i + 2]!, len, addr);
      if (got !== len) return { error: { message: `could not be read (${got} of ${len} bytes)`, addr: addr + got, end } };
      bytes += got;
    }
    return { bytes };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { error: { message: e.message, errno: e.errno, syscall: fd < 0 ? 'open' : (e.syscall ?? 'pread'), addr, end } };
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/** Reads every piece in this thread; throws readError() on failure. */
export function readPieces(pid: number, buf: Buffer, pieces: Piece[]): number {
  const r = readTriples(pid, buf, toTriples(pieces), sharedPages.has(pid));
  if ('error' in r) throw readError(pid, r.error);
  return r.bytes;
}

/** The end of the piece `addr` lies in (the addon names the address where it stopped, not its piece). */
function pieceEnd(triples: Float64Array, addr: number): number {
  for (let i = 0; i < triples.length; i += 3) if (addr >= triples[i]! && addr < triples[i]! + triples[i + 1]!) return triples[i]! + triples[i + 1]!;
  return addr;
}

function toTriples(pieces: Piece[]): Float64Array {
  const t = new Float64Array(pieces.length * 3);
  let i = 0;
  for (const p of pieces) {
    t[i++] = p.addr;
    t[i++] = p.len;
    t[i++] = p.at;
  }
  return t;
}
