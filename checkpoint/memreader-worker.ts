/**
 * Worker thread of the parallel page reader (memreader.ts): reads pieces of a target's memory straight into the
 * shared page buffer (process_vm_readv through the addon, else pread of /proc/PID/mem). Copying pages out of the target is CPU work in the
 * kernel; a second thread lets the second core do half of it while the tree is frozen.
 */
import * as fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { readvAddon } from './readv';

export interface ReadJob {
  id: number;
  pid: number;
  sab: SharedArrayBuffer;
  /** [address, length, offset in sab] triples, flattened. */
  pieces: number[];
}

export type ReadReply =
  | { id: number; bytes: number }
  | { id: number; error: { message: string; code?: string; errno?: number; syscall?: string; addr: number } };

parentPort!.on('message', (job: ReadJob) => {
  const buf = Buffer.from(job.sab);
  let fd = -1;
  let bytes = 0;
  let addr = 0;
  const addon = readvAddon();
  if (addon) {
    try {
      bytes = addon.readv(job.pid, buf, Float64Array.from(job.pieces));
      parentPort!.postMessage({ id: job.id, bytes } satisfies ReadReply);
    } catch (err) {
      const e = err as { message: string; errno?: number; syscall?: string; addr?: number };
      parentPort!.postMessage({
        id: job.id,
        error: { message: e.message, errno: e.errno, syscall: e.syscall, addr: e.addr ?? job.pieces[0] ?? 0 },
      } satisfies ReadReply);
    }
    return;
  }
  try {
    fd = fs.openSync(`/proc/${job.pid}/mem`, 'r');
    for (let i = 0; i < job.pieces.length; i += 3) {
      addr = job.pieces[i]!;
      const len = job.pieces[i + 1]!;
      const at = job.pieces[i + 2]!;
      const got = fs.readSync(fd, buf, at, len, addr);
      if (got !== len) throw Object.assign(new Error(`short read: ${got} of ${len} bytes`), { code: 'EIO' });
      bytes += got;
    }
    parentPort!.postMessage({ id: job.id, bytes } satisfies ReadReply);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    parentPort!.postMessage({ id: job.id, error: { message: e.message, code: e.code, errno: e.errno, addr } } satisfies ReadReply);
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
});
