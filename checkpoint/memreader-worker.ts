/**
 * Worker thread of the parallel page reader (memreader.ts): reads pieces of a target's memory straight into the
 * shared page buffer with the same routine as the calling thread (readTriples: process_vm_readv through the addon,
 * else pread of /proc/PID/mem). Copying pages out of the target is CPU work in the kernel; a second thread lets the
 * second core do half of it while the tree is frozen.
 */
import { parentPort } from 'node:worker_threads';
import { readTriples, ReadFailure } from './memreader';

export interface ReadJob {
  id: number;
  pid: number;
  sab: SharedArrayBuffer;
  /** [address, length, offset in sab] triples, flattened. */
  triples: Float64Array;
  /** pread of /proc/PID/mem even with the addon (the process shares pages: see memreader.ts sharedPages). */
  viaMem?: boolean;
}

export type ReadReply = { id: number; bytes: number } | { id: number; error: ReadFailure };

parentPort!.on('message', (job: ReadJob) => {
  parentPort!.postMessage({ id: job.id, ...readTriples(job.pid, Buffer.from(job.sab), job.triples, job.viaMem) } satisfies ReadReply);
});
