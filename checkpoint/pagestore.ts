/**
 * Where pre-copied pages wait for the freeze: one SharedArrayBuffer (the reader threads pread straight into it and
 * the container writer compresses from it without a copy) and, per process, an index of extents that says which
 * address range lies where in it.
 *
 * A page keeps its place once it has one: a page written again is re-read over its old copy, so the store never
 * holds two copies of a page and its size is bounded by the pages of the tree (plus what an invalidated mapping
 * leaves behind, which is not reused). New pages take space at the end. When the store is full, place() says which
 * bytes found no room: pre-copy then stops adding pages, and the dump reads those bytes while the tree is frozen.
 */
import { PAGE_SIZE } from './proc/pagemap';
import type { Piece } from './memreader';

export interface Extent {
  addr: number;
  len: number;
  /** Byte offset in the store. */
  at: number;
}

/** [start, end) in bytes, page aligned. */
export interface Span {
  start: number;
  end: number;
}

/** Non-overlapping extents of one process, sorted by address. */
export class ExtentIndex {
  private ext: Extent[] = [];

  get extents(): readonly Extent[] {
    return this.ext;
  }

  get bytes(): number {
    return this.ext.reduce((n, e) => n + e.len, 0);
  }

  /** Index of the first extent that ends after addr. */
  private first(addr: number): number {
    let lo = 0;
    let hi = this.ext.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.ext[mid]!;
      if (e.addr + e.len <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Splits [start, end) into consecutive segments, each either stored (at >= 0: its bytes lie at `at`) or not
   * (at = -1).
   */
  segments(start: number, end: number): Extent[] {
    const out: Extent[] = [];
    let pos = start;
    for (let i = this.first(start); i < this.ext.length && pos < end; i++) {
      const e = this.ext[i]!;
      if (e.addr >= end) break;
      if (e.addr > pos) {
        out.push({ addr: pos, len: e.addr - pos, at: -1 });
        pos = e.addr;
      }
      const stop = Math.min(end, e.addr + e.len);
      out.push({ addr: pos, len: stop - pos, at: e.at + (pos - e.addr) });
      pos = stop;
    }
    if (pos < end) out.push({ addr: pos, len: end - pos, at: -1 });
    return out;
  }

  /** Adds extents that overlap nothing stored (sorted or not); adjacent ones that are adjacent in the store merge. */
  add(list: Extent[]): void {
    if (list.length === 0) return;
    const merged = this.ext.concat(list).sort((a, b) => a.addr - b.addr);
    const out: Extent[] = [];
    for (const e of merged) {
      const last = out[out.length - 1];
      if (last && last.addr + last.len === e.addr && last.at + last.len === e.at) last.len += e.len;
      else out.push({ ...e });
    }
    this.ext = out;
  }

  /** Forgets [start, end) (its mapping went away or changed): those bytes are no longer a copy of anything. */
  remove(start: number, end: number): void {
    const out: Extent[] = [];
    for (const e of this.ext) {
      const eEnd = e.addr + e.len;
      if (eEnd <= start || e.addr >= end) {
        out.push(e);
        continue;
      }
      if (e.addr < start) out.push({ addr: e.addr, len: start - e.addr, at: e.at });
      if (eEnd > end) out.push({ addr: end, len: eEnd - end, at: e.at + (end - e.addr) });
    }
    this.ext = out;
  }
}

export class PageStore {
  readonly sab: SharedArrayBuffer;
  readonly buf: Buffer;
  readonly capacity: number;
  private used = 0;
  private readonly indexes = new Map<number, ExtentIndex>();

  constructor(capacity: number) {
    this.capacity = Math.floor(capacity / PAGE_SIZE) * PAGE_SIZE;
    // Not touched here: the first pre-copy round faults the pages in while the tree still runs.
    this.sab = new SharedArrayBuffer(this.capacity);
    this.buf = Buffer.from(this.sab);
  }

  get usedBytes(): number {
    return this.used;
  }

  get freeBytes(): number {
    return this.capacity - this.used;
  }

  index(pid: number): ExtentIndex {
    let x = this.indexes.get(pid);
    if (!x) this.indexes.set(pid, (x = new ExtentIndex()));
    return x;
  }

  /**
   * Faults in up to `bytes` of the free space, so pages placed there while the tree is frozen are copied into
   * memory that is already mapped (first touch of fresh memory is the slow part on these machines).
   */
  prefault(bytes: number): void {
    const end = Math.min(this.capacity, this.used + bytes);
    for (let at = this.used; at < end; at += PAGE_SIZE) this.buf[at] = 0;
  }

  /**
   * Where the bytes of `spans` (sorted, page aligned) go: already stored bytes are re-read in place, the others
   * get new space (in address order, so neighbours stay neighbours). Returns the pieces to read and the bytes
   * that found no room (the store is full).
   */
  place(pid: number, spans: Span[]): { pieces: Piece[]; unplaced: Span[] } {
    const idx = this.index(pid);
    const pieces: Piece[] = [];
    const unplaced: Span[] = [];
    const added: Extent[] = [];
    for (const s of spans) {
      for (const seg of idx.segments(s.start, s.end)) {
        if (seg.at >= 0) {
          pushPiece(pieces, { addr: seg.addr, len: seg.len, at: seg.at });
          continue;
        }
        const room = Math.min(seg.len, this.capacity - this.used);
        if (room > 0) {
          const e = { addr: seg.addr, len: room, at: this.used };
          this.used += room;
          added.push(e);
          pushPiece(pieces, { ...e });
        }
        if (room < seg.len) pushSpan(unplaced, { start: seg.addr + room, end: seg.addr + seg.len });
      }
    }
    idx.add(added);
    return { pieces, unplaced };
  }
}

function pushPiece(list: Piece[], p: Piece): void {
  const last = list[list.length - 1];
  if (last && last.addr + last.len === p.addr && last.at + last.len === p.at) last.len += p.len;
  else list.push(p);
}

export function pushSpan(list: Span[], s: Span): void {
  const last = list[list.length - 1];
  if (last && last.end === s.start) last.end = s.end;
  else list.push(s);
}

/** Bytes the spans cover. */
export const spanBytes = (l: Span[]): number => l.reduce((n, s) => n + s.end - s.start, 0);

/** a minus b; both sorted and non-overlapping. */
export function subtractSpans(a: Span[], b: Span[]): Span[] {
  const out: Span[] = [];
  let j = 0;
  for (const s of a) {
    let pos = s.start;
    while (j < b.length && b[j]!.end <= pos) j++;
    for (let k = j; k < b.length && b[k]!.start < s.end; k++) {
      const x = b[k]!;
      if (x.start > pos) pushSpan(out, { start: pos, end: x.start });
      pos = Math.max(pos, x.end);
    }
    if (pos < s.end) pushSpan(out, { start: pos, end: s.end });
  }
  return out;
}

/** a ∩ b; both sorted and non-overlapping. */
export function intersectSpans(a: Span[], b: Span[]): Span[] {
  const out: Span[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const s = Math.max(a[i]!.start, b[j]!.start);
    const e = Math.min(a[i]!.end, b[j]!.end);
    if (s < e) pushSpan(out, { start: s, end: e });
    if (a[i]!.end < b[j]!.end) i++;
    else j++;
  }
  return out;
}
