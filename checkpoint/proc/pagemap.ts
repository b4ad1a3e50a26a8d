/**
 * /proc/PID/pagemap: one 64-bit entry per virtual page. Read in large preads (one per mapping, in chunks of
 * PAGEMAP_CHUNK pages) so that 1 GiB of memory costs a handful of system calls.
 */
import * as fs from 'node:fs';
import { procPath, toSysError } from './read';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12n;

export const PM_PRESENT = 1n << 63n;
export const PM_SWAP = 1n << 62n;
/** Page-cache page of a file mapping, or shared anonymous (shmem) page. */
export const PM_FILE = 1n << 61n;
export const PM_UFFD_WP = 1n << 57n;
/** A guard region page (MADV_GUARD_INSTALL; Linux 6.14): a marker, reported as swapped too, with no data. */
export const PM_GUARD_REGION = 1n << 58n;
export const PM_EXCLUSIVE = 1n << 56n;
export const PM_SOFT_DIRTY = 1n << 55n;
export const PM_PFN_MASK = (1n << 55n) - 1n;

/** 256 Ki entries = 2 MiB per pread, covering 1 GiB of address space: large enough to be syscall-cheap. */
const PAGEMAP_CHUNK = 256 * 1024;

export class Pagemap {
  private constructor(
    readonly pid: number,
    private fd: number,
  ) {}

  static open(pid: number): Pagemap {
    try {
      return new Pagemap(pid, fs.openSync(procPath(pid, 'pagemap'), 'r'));
    } catch (err) {
      throw toSysError(err, `open /proc/${pid}/pagemap`, pid);
    }
  }

  /** Entries for [start, end) (page aligned). */
  read(start: bigint, end: bigint): BigUint64Array {
    const pages = Number((end - start) >> PAGE_SHIFT);
    const out = new BigUint64Array(pages);
    const bytes = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    let done = 0;
    while (done < pages) {
      const n = Math.min(PAGEMAP_CHUNK, pages - done);
      const pos = Number(((start >> PAGE_SHIFT) + BigInt(done)) * 8n);
      let got: number;
      try {
        got = fs.readSync(this.fd, bytes, done * 8, n * 8, pos);
      } catch (err) {
        throw toSysError(err, `read /proc/${this.pid}/pagemap at 0x${start.toString(16)}`, this.pid);
      }
      if (got <= 0) break; // beyond the last mapping: the rest stays zero (not present)
      done += Math.floor(got / 8);
    }
    return out;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}
