/**
 * Memory contents of a dump: pagemap-N.img says which virtual pages were dumped and how, and
 * pages-<pages_id>.img holds the bytes of every "present" run, back to back, in pagemap order.
 *
 * Flags per run (pmap.flags): PE_PRESENT - the bytes are in this image's pages file; PE_PARENT - the
 * bytes are in the parent image (pre-dump chain); PE_LAZY - may be served on demand (post-copy); a lazy
 * run that is also present still has its bytes here. Old images carry in_parent instead of flags and
 * compat_nr_pages instead of nr_pages.
 *
 * Page bytes come through a PageSource, so a compressed page container can stand in for the plain
 * pages file without this reader changing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImageError } from '../util/errors';
import type { ImageEntry } from './entry';
import { openPages } from './container-reader';
import { readImageFile } from './io';

export const PAGE_SIZE = 4096;
export const PE_PARENT = 1;
export const PE_LAZY = 2;
export const PE_PRESENT = 4;

/** Random access to the bytes of a pages-N.img (plain file, compressed container, network, ...). */
export interface PageSource {
  /** Exactly `length` bytes at `offset`; rejects if they are not all there. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Total bytes, when known (lets the reader check a pagemap against its pages before reading). */
  readonly size?: number;
  close?(): Promise<void>;
}

/** A plain CRIU pages-N.img. */
export class FilePageSource implements PageSource {
  private constructor(private readonly fh: fs.promises.FileHandle, readonly file: string, readonly size: number) {}

  static async open(file: string): Promise<FilePageSource> {
    const fh = await fs.promises.open(file, 'r');
    try {
      const st = await fh.stat();
      return new FilePageSource(fh, file, st.size);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > this.size) {
      throw new ImageError(this.file, offset, `expected ${length} bytes of pages, but the file has ${Math.max(0, this.size - offset)} from there`);
    }
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new ImageError(this.file, offset + done, 'pages file ended early (shrunk while reading?)');
      done += bytesRead;
    }
    return buf;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** One pagemap run. */
export interface PageRun {
  vaddr: bigint;
  end: bigint;
  nrPages: number;
  flags: number;
  /** Offset of the run's first byte in the pages file; set only for present runs. */
  pagesOffset?: number;
}

export type PageLocation =
  | { where: 'pages'; run: PageRun; offset: number } // offset in the pages file of the byte at vaddr
  | { where: 'parent'; run: PageRun }
  | { where: 'lazy'; run: PageRun } // lazy and not present: only the source can serve it
  | { where: 'none' }; // not dumped (an unpopulated or zero page)

export class Pagemap {
  /** Runs in vaddr order. */
  readonly runs: PageRun[];
  /** Bytes the pages file must hold. */
  readonly presentBytes: number;

  constructor(readonly pagesId: number, runs: PageRun[], readonly file = '<pagemap>') {
    this.runs = runs.slice().sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
    for (let i = 1; i < this.runs.length; i++) {
      if (this.runs[i].vaddr < this.runs[i - 1].end) {
        throw new ImageError(file, 0, `pagemap runs overlap at 0x${this.runs[i].vaddr.toString(16)}`);
      }
    }
    this.presentBytes = runs.reduce((s, r) => s + (r.pagesOffset !== undefined ? r.nrPages * PAGE_SIZE : 0), 0);
  }

  /** From decoded pagemap entries (pagemap_head first). */
  static fromEntries(entries: ImageEntry[], file = '<pagemap>'): Pagemap {
    if (entries.length === 0 || entries[0].type !== 'pagemap_head') throw new ImageError(file, 0, 'pagemap image lacks its pagemap_head entry');
    const pagesId = entries[0].msg.pages_id as number;
    const runs: PageRun[] = [];
    let offset = 0;
    for (let i = 1; i < entries.length; i++) {
      const m = entries[i].msg;
      const flags = m.flags !== undefined ? (m.flags as number) : m.in_parent === true ? PE_PARENT : PE_PRESENT;
      const nr = m.nr_pages !== undefined ? Number(m.nr_pages as bigint) : (m.compat_nr_pages as number);
      const vaddr = m.vaddr as bigint;
      if (!Number.isSafeInteger(nr) || nr < 0 || vaddr % BigInt(PAGE_SIZE) !== 0n) {
        throw new ImageError(file, 0, `pagemap entry ${i}: bad run (vaddr 0x${vaddr.toString(16)}, ${String(m.nr_pages ?? m.compat_nr_pages)} pages)`);
      }
      const run: PageRun = { vaddr, end: vaddr + BigInt(nr) * BigInt(PAGE_SIZE), nrPages: nr, flags };
      if (flags & PE_PRESENT && !(flags & PE_PARENT)) {
        run.pagesOffset = offset;
        offset += nr * PAGE_SIZE;
      }
      runs.push(run);
    }
    return new Pagemap(pagesId, runs, file);
  }

  static async load(file: string): Promise<Pagemap> {
    const img = await readImageFile(file, { kind: 'PAGEMAP' });
    return Pagemap.fromEntries(img.entries, file);
  }

  /** Which bytes back virtual address `addr`. */
  lookup(addr: bigint | number): PageLocation {
    const a = BigInt(addr);
    let lo = 0;
    let hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.runs[mid];
      if (a < r.vaddr) hi = mid - 1;
      else if (a >= r.end) lo = mid + 1;
      else {
        if (r.pagesOffset !== undefined) return { where: 'pages', run: r, offset: r.pagesOffset + Number(a - r.vaddr) };
        if (r.flags & PE_PARENT) return { where: 'parent', run: r };
        return { where: 'lazy', run: r };
      }
    }
    return { where: 'none' };
  }
}

/** Reads memory of a dumped process: a Pagemap plus the PageSource of its pages file. */
export class PageReader {
  constructor(readonly pagemap: Pagemap, readonly source: PageSource) {
    if (source.size !== undefined && source.size < pagemap.presentBytes) {
      throw new ImageError(pagemap.file, 0, `pagemap needs ${pagemap.presentBytes} bytes of pages but the pages file has ${source.size}`);
    }
  }

  /**
   * Open pagemap-<id>.img and its page data in an image directory: a plain pages-N.img or godwit's
   * compressed container, whichever is there.
   */
  static async open(dir: string, pagemapId: number | string): Promise<PageReader> {
    const pm = await Pagemap.load(path.join(dir, `pagemap-${pagemapId}.img`));
    const src = await openPages(dir, pm.pagesId);
    try {
      return new PageReader(pm, src);
    } catch (e) {
      await src.close();
      throw e;
    }
  }

  /**
   * `length` bytes of memory at `addr`; every byte must be in this image's pages (a range that runs
   * into an undumped, parent-only or lazy-only page is an error naming the address).
   */
  async read(addr: bigint | number, length: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let a = BigInt(addr);
    let left = length;
    while (left > 0) {
      const loc = this.pagemap.lookup(a);
      if (loc.where !== 'pages') {
        throw new ImageError(this.pagemap.file, 0, `address 0x${a.toString(16)} is not in this image's pages (${loc.where === 'none' ? 'not dumped' : loc.where === 'parent' ? 'in the parent image' : 'lazy, not dumped'})`);
      }
      const n = Math.min(left, Number(loc.run.end - a));
      parts.push(await this.source.read(loc.offset, n));
      a += BigInt(n);
      left -= n;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** Every present run with its bytes, in address order. */
  async *runs(): AsyncGenerator<{ run: PageRun; data: Buffer }> {
    for (const run of this.pagemap.runs) {
      if (run.pagesOffset === undefined) continue;
      yield { run, data: await this.source.read(run.pagesOffset, run.nrPages * PAGE_SIZE) };
    }
  }

  async close(): Promise<void> {
    await this.source.close?.();
  }
}
