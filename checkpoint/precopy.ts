/**
 * Pre-copy: the tree's memory is copied while it runs, in rounds, and only what was written since is read while it
 * is frozen. Writes are tracked per process by the helper (native/src/track.c: a userfaultfd in write-protect mode
 * with WP_ASYNC, held only by the helper, and PAGEMAP_SCAN); copies land in a PageStore.
 *
 *   start      per process: seize its leader, inject userfaultfd() (helper), let it go again
 *   round 1    register every private anonymous mapping (write-protects it), copy its present pages
 *   round k    register mappings that are new; scan the registered ones (written pages, protected again in the
 *              same walk) and copy what was written; stop when a round copied little, stopped shrinking, the
 *              store is full or the round limit is reached
 *   freeze     (the dump freezes the tree and builds its pagemap) for each process: drop what the store holds of
 *              mappings that changed, scan once more without protecting, read the written and the never-copied
 *              pages of the pagemap into the store: these reads are all the frozen window copies
 *   emit       after the resume: the pages file is written from the store in pagemap order
 *   stop       close every userfaultfd: the kernel unregisters and unprotects (also when the helper dies)
 *
 * Mappings that cannot be tracked (file-backed, shared, already registered by the process's own userfaultfd:
 * EBUSY) are simply not pre-copied: their pages are read while frozen like every page in a dump without pre-copy.
 * What the store holds is trusted only while the mappings it came from are still registered: a mapping that was
 * unmapped and replaced, or moved, loses its registration (no UFFD_FEATURE_EVENT_REMAP), the scan of its region
 * then fails (PM_SCAN_CHECK_WPASYNC: EPERM) and the region's copies are dropped. So /proc/PID/maps is all the
 * rounds read (smaps walks every page table: 0.2 s for 1 GiB on a loaded machine) and the frozen window reads no
 * map at all. Writes that bypass the page tables (DMA into pinned pages: O_DIRECT reads in flight, RDMA)
 * are invisible to this tracking, as they are to soft-dirty.
 */
import * as fs from 'node:fs';
import type { Helper } from '../native/helper';
import { GodwitError, SysError } from '../util/errors';
import type { MemReader, Piece } from './memreader';
import { PageStore, Span, intersectSpans, pushSpan, spanBytes, subtractSpans } from './pagestore';
import { collectPageRanges, PageRange } from './pageranges';
import { setSharedPages } from './memreader';
import { parseSmaps, ProcVma } from './proc/maps';
import { readProcText } from './proc/read';
import { Pagemap, PAGE_SIZE } from './proc/pagemap';
import { buildMappings } from './vma';

export interface PreCopyOptions {
  /** Rounds at most, the first (full) copy included (default 8). */
  maxRounds?: number;
  /** Stop once a round copied at most this many bytes (default 8 MiB: read in a few ms while frozen). */
  convergeBytes?: number;
  /** Stop when a round copied more than this share of the round before: the dirty set stopped shrinking
   *  (default 0.8). */
  minShrink?: number;
  /** Called after each round (progress output); a throw aborts the pre-copy (the dump then fails cleanly). */
  onRound?: (r: PreCopyRound) => void | Promise<void>;
}

export interface PreCopyRound {
  round: number;
  /** Bytes copied in this round. */
  bytes: number;
  ms: number;
  /** Time spent in PAGEMAP_SCAN and registration. */
  trackMs: number;
}

export interface PreCopyReport {
  rounds: PreCopyRound[];
  /** Why the rounds ended: 'converged', 'not shrinking', 'round limit', 'store full', or 'nothing tracked'. */
  stop: string;
  /** Processes whose writes could not be tracked (all their pages are read while frozen), with the reason. */
  untracked: { pid: number; reason: string }[];
  /** Bytes of mappings that could not be tracked (read while frozen), summed over the last round. */
  untrackedMappings: number;
}

/** What the frozen window must read for one process, and how its pages file is then assembled. */
export interface FrozenPages {
  pid: number;
  /** Bytes to read into the store now (written since their copy, or never copied). */
  reads: Piece[];
  /** Bytes the store had no room for: read now into a buffer of their own. */
  overflow: Span[];
  /** Page bytes of the process (its pagemap). */
  bytes: number;
  spans: Span[];
  /** What the frozen window reads (`reads` and `overflow` together): the rest of `spans` is a clean stored copy. */
  fresh: Span[];
}

const DEFAULTS = { maxRounds: 8, convergeBytes: 8 << 20, minShrink: 0.8 };

interface Tracker {
  pid: number;
  /** Ranges registered with our userfaultfd, sorted; the store's copies lie within them. */
  regions: Span[];
  /** Mappings the kernel refused to register, by "start-end" (not retried). */
  refused: Set<string>;
  refusedBytes: number;
}

const key = (s: Span) => `${s.start.toString(16)}-${s.end.toString(16)}`;

/** Private anonymous mappings (the ones userfaultfd can write-protect), in address order. */
function anonSpans(vmas: ProcVma[]): Span[] {
  const out: Span[] = [];
  for (const v of vmas) {
    if (v.shared || v.inode !== 0 || v.devMajor !== 0 || v.devMinor !== 0) continue;
    if (v.path.startsWith('[v')) continue; // [vdso], [vvar], [vvar_vclock], [vsyscall]: not process memory
    if (v.vmFlags.has('io') || v.vmFlags.has('pf') || v.vmFlags.has('ht')) continue;
    out.push({ start: Number(v.start), end: Number(v.end) });
  }
  return out;
}

/** /proc/PID/maps (no VmFlags: smaps would walk every page table). */
function readMaps(pid: number): ProcVma[] {
  return parseSmaps(readProcText(pid, 'maps'));
}

function rangesToSpans(ranges: PageRange[]): Span[] {
  const out: Span[] = [];
  for (const r of ranges) pushSpan(out, { start: Number(r.start), end: Number(r.start) + r.nrPages * PAGE_SIZE });
  return out;
}

function mergeSpans(a: Span[], b: Span[]): Span[] {
  const all = a.concat(b).sort((x, y) => x.start - y.start);
  const out: Span[] = [];
  for (const s of all) {
    const last = out[out.length - 1];
    if (last && s.start <= last.end) last.end = Math.max(last.end, s.end);
    else out.push({ ...s });
  }
  return out;
}

/** The process is gone or a zombie (its memory is gone with it). */
function exited(pid: number): boolean {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

const isGone = (err: unknown) => err instanceof SysError ? err.errno === 3 /* ESRCH */ || err.errno === 2 /* ENOENT */ : (err as NodeJS.ErrnoException)?.code === 'ENOENT';

export class PreCopy {
  private readonly trackers = new Map<number, Tracker>();
  private readonly untracked: { pid: number; reason: string }[] = [];
  private storeFull = false;
  private stopped = false;
  /** What the current round copied, per pid (address order): a streamed round sends exactly these bytes. */
  private copiedNow = new Map<number, Span[]>();

  private constructor(
    private readonly helper: Helper,
    readonly store: PageStore,
    private readonly reader: MemReader,
  ) {}

  /**
   * Starts tracking every pid: its leader is seized just long enough to inject userfaultfd(). A process that
   * cannot be tracked (seccomp forbids userfaultfd, the kernel lacks WP_ASYNC, it vanished) is left alone and
   * dumped without pre-copy. On any other failure tracking is stopped again before the error is thrown.
   */
  static async start(helper: Helper, pids: number[], store: PageStore, reader: MemReader): Promise<PreCopy> {
    const pc = new PreCopy(helper, store, reader);
    try {
      for (const pid of pids) {
        const seized = await helper.seize([pid], { vanished: 'report' });
        const st = seized[0]?.status;
        try {
          if (st !== 'stopped' && st !== 'group-stopped') {
            pc.untracked.push({ pid, reason: `its leader could not be stopped to inject userfaultfd (${st ?? 'not seized'})` });
            continue;
          }
          await helper.trackStart(pid);
          pc.trackers.set(pid, { pid, regions: [], refused: new Set(), refusedBytes: 0 });
        } catch (err) {
          if (!(err instanceof SysError)) throw err;
          pc.untracked.push({ pid, reason: err.message });
        } finally {
          if (st === 'stopped' || st === 'group-stopped' || st === 'timeout') await helper.detach([pid]);
        }
      }
    } catch (err) {
      await pc.stop().catch(() => undefined);
      throw err;
    }
    return pc;
  }

  get trackedPids(): number[] {
    return [...this.trackers.keys()];
  }

  /** Copies in rounds until the dirty set is small or stops shrinking. The tree runs meanwhile. */
  async run(o: PreCopyOptions = {}): Promise<PreCopyReport> {
    const maxRounds = o.maxRounds ?? DEFAULTS.maxRounds;
    const convergeBytes = o.convergeBytes ?? DEFAULTS.convergeBytes;
    const minShrink = o.minShrink ?? DEFAULTS.minShrink;
    if (!Number.isInteger(maxRounds) || maxRounds < 1) throw new GodwitError(`pre-copy rounds must be a positive integer, got ${maxRounds}`);
    const rounds: PreCopyRound[] = [];
    let stop = this.trackers.size === 0 ? 'nothing tracked' : '';
    while (!stop) {
      const r = await this.round(rounds.length + 1);
      rounds.push(r);
      await o.onRound?.(r);
      const prev = rounds[rounds.length - 2];
      if (this.trackers.size === 0) stop = 'nothing tracked';
      else if (this.storeFull) stop = 'store full';
      else if (prev && r.bytes <= convergeBytes) stop = 'converged';
      else if (prev && r.bytes > prev.bytes * minShrink) stop = 'not shrinking';
      else if (rounds.length >= maxRounds) stop = 'round limit';
    }
    // Pages placed while frozen (new ones) land in memory already faulted in.
    this.store.prefault(Math.min(64 << 20, rounds[rounds.length - 1]?.bytes ?? 0) + (4 << 20));
    let untrackedMappings = 0;
    for (const t of this.trackers.values()) untrackedMappings += t.refusedBytes;
    return { rounds, stop, untracked: [...this.untracked], untrackedMappings };
  }

  private async round(n: number): Promise<PreCopyRound> {
    const t0 = process.hrtime.bigint();
    this.copiedNow = new Map();
    let trackNs = 0n;
    let bytes = 0;
    for (const t of [...this.trackers.values()]) {
      try {
        const r = await this.roundOf(t, n);
        bytes += r.bytes;
        trackNs += r.trackNs;
      } catch (err) {
        // A process of the tree may exit while the tree runs: it is simply not in the dump's tree any more.
        if (!isGone(err) && !exited(t.pid)) throw err;
        await this.drop(t, 'it exited during pre-copy');
      }
    }
    return { round: n, bytes, ms: Number(process.hrtime.bigint() - t0) / 1e6, trackMs: Number(trackNs) / 1e6 };
  }

  private async roundOf(t: Tracker, n: number): Promise<{ bytes: number; trackNs: bigint }> {
    const vmas = readMaps(t.pid);
    this.forgetRefusals(t, vmas);
    const known = t.regions;
    // Mappings not registered yet (all of them in round 1, new ones later).
    const fresh = subtractSpans(anonSpans(vmas), known).filter((s) => !t.refused.has(key(s)));
    const tt = process.hrtime.bigint();
    const added: Span[] = [];
    if (fresh.length) {
      const errnos = await this.helper.trackRegister(t.pid, fresh);
      fresh.forEach((s, i) => {
        if (errnos[i] === 0) added.push(s);
        else {
          t.refused.add(key(s));
          t.refusedBytes += s.end - s.start;
        }
      });
    }
    let written: Span[] = [];
    if (n > 1 && known.length) {
      const scan = await this.helper.trackScan(t.pid, known, true);
      written = scan.written;
      if (scan.failed.length) this.forget(t, scan.failed.map((i) => known[i]!));
    }
    const trackNs = process.hrtime.bigint() - tt;
    t.regions = mergeSpans(t.regions, added);
    const want = mergeSpans(written, this.presentPages(t.pid, vmas, added));
    return { bytes: await this.copy(t, want), trackNs };
  }

  /** Present (or swapped), non-zero pages of the spans, from /proc/PID/pagemap. */
  private presentPages(pid: number, vmas: ProcVma[], spans: Span[]): Span[] {
    if (!spans.length) return [];
    const parts: ProcVma[] = [];
    for (const v of vmas) {
      for (const s of intersectSpans([{ start: Number(v.start), end: Number(v.end) }], spans))
        parts.push({ ...v, start: BigInt(s.start), end: BigInt(s.end) });
    }
    const pm = Pagemap.open(pid);
    try {
      const { ranges, stats } = collectPageRanges(pm, buildMappings(pid, parts));
      // Copy-on-write pages shared with another process are read without un-sharing them (memreader.ts).
      if (stats.pagesShared) setSharedPages(pid, true);
      return rangesToSpans(ranges);
    } finally {
      pm.close();
    }
  }

  /** Reads `spans` of a running process into the store. Bytes that cannot be read (unmapped meanwhile) are dropped
   *  from the store: they are read while frozen if they still exist then. */
  private async copy(t: Tracker, spans: Span[]): Promise<number> {
    if (!spans.length) return 0;
    const { pieces, unplaced } = this.store.place(t.pid, spans);
    if (unplaced.length) this.storeFull = true;
    try {
      const n = await this.reader.read(t.pid, this.store.sab, pieces);
      const done = this.copiedNow.get(t.pid) ?? [];
      for (const p of pieces) pushSpan(done, { start: p.addr, end: p.addr + p.len });
      this.copiedNow.set(t.pid, done);
      return n;
    } catch (err) {
      const idx = this.store.index(t.pid);
      for (const p of pieces) idx.remove(p.addr, p.addr + p.len);
      if (isGone(err)) await this.drop(t, 'it exited during pre-copy');
      return 0;
    }
  }

  /** Refusals are remembered per exact mapping: a mapping that changed may be registrable now. */
  private forgetRefusals(t: Tracker, vmas: ProcVma[]): void {
    const current = new Set(anonSpans(vmas).map(key));
    for (const k of [...t.refused]) if (!current.has(k)) t.refused.delete(k);
    t.refusedBytes = 0;
    for (const s of anonSpans(vmas)) if (t.refused.has(key(s))) t.refusedBytes += s.end - s.start;
  }

  private forget(t: Tracker, spans: Span[]): void {
    const idx = this.store.index(t.pid);
    for (const s of spans) idx.remove(s.start, s.end);
    t.regions = subtractSpans(t.regions, mergeSpans(spans, []));
  }

  private async drop(t: Tracker, reason: string): Promise<void> {
    this.trackers.delete(t.pid);
    this.copiedNow.delete(t.pid);
    this.untracked.push({ pid: t.pid, reason });
    this.store.index(t.pid).remove(0, Number.MAX_SAFE_INTEGER);
    await this.helper.trackStop(t.pid).catch(() => undefined);
  }

  /**
   * The last round of a tracked process as an image of a pre-dump chain (checkpoint/precopy-chain.ts): `copied`
   * (address order) is what the round read, `stored` every page the store holds a copy of; stored pages outside
   * `copied` were copied, unchanged since, in an earlier round. Valid until the next round starts.
   */
  roundImage(pid: number): { copied: Span[]; stored: Span[] } {
    const stored = mergeSpans(this.store.index(pid).extents.map((e) => ({ start: e.addr, end: e.addr + e.len })), []);
    return { copied: this.copiedNow.get(pid) ?? [], stored };
  }

  /** The stored bytes of `spans` (sorted, all stored), as Buffers over the store, in address order. */
  storedData(pid: number, spans: Span[]): Buffer[] {
    return this.pageData({ pid, reads: [], overflow: [], bytes: 0, spans, fresh: [] });
  }

  /**
   * The tree is frozen and `ranges` is the process's pagemap: which of its bytes must be read now. Copies of
   * changed mappings are dropped, a last scan (without protecting) finds what was written since the last round,
   * and pages the store does not hold are placed in it.
   */
  async frozenPages(pid: number, ranges: PageRange[]): Promise<FrozenPages> {
    const spans = rangesToSpans(ranges);
    const t = this.trackers.get(pid);
    const idx = this.store.index(pid);
    let dirty: Span[] = [];
    if (t) {
      if (t.regions.length) {
        const scan = await this.helper.trackScan(pid, t.regions, false);
        if (scan.failed.length) this.forget(t, scan.failed.map((i) => t.regions[i]!));
        dirty = scan.written;
      }
    } else {
      idx.remove(0, Number.MAX_SAFE_INTEGER); // nothing stored for an untracked process can be trusted
    }
    const stored = mergeSpans(idx.extents.map((e) => ({ start: e.addr, end: e.addr + e.len })), []);
    const need = mergeSpans(intersectSpans(spans, dirty), subtractSpans(spans, stored));
    const { pieces, unplaced } = this.store.place(pid, need);
    return { pid, reads: pieces, overflow: unplaced, bytes: spanBytes(spans), spans, fresh: need };
  }

  /**
   * The page data of a process in pagemap order, as Buffers over the store (and `overflow`, which holds the
   * FrozenPages.overflow bytes back to back); contiguous pieces are merged, so a writer takes them without a copy.
   * `spans` (sorted, within f.spans): only those bytes (a streamed pre-copy's final image: FrozenPages.fresh).
   */
  pageData(f: FrozenPages, overflow?: Buffer, spans: Span[] = f.spans): Buffer[] {
    const idx = this.store.index(f.pid);
    const out: Buffer[] = [];
    let run: { buf: Buffer; at: number; len: number } | undefined;
    const flush = () => {
      if (run) out.push(run.buf.subarray(run.at, run.at + run.len));
      run = undefined;
    };
    const add = (buf: Buffer, at: number, len: number) => {
      if (run && run.buf === buf && run.at + run.len === at) run.len += len;
      else {
        flush();
        run = { buf, at, len };
      }
    };
    // Offsets of the overflow spans in `overflow`.
    let ovAt = 0;
    const ov = f.overflow.map((s) => {
      const o = { ...s, at: ovAt };
      ovAt += s.end - s.start;
      return o;
    });
    let oi = 0;
    for (const s of spans) {
      for (const seg of idx.segments(s.start, s.end)) {
        if (seg.at >= 0) {
          add(this.store.buf, seg.at, seg.len);
          continue;
        }
        // Not in the store: it lies in the overflow spans.
        let addr = seg.addr;
        const end = seg.addr + seg.len;
        while (addr < end) {
          while (oi < ov.length && ov[oi]!.end <= addr) oi++;
          const o = ov[oi];
          if (!o || !overflow || o.start > addr)
            throw new GodwitError(`pid ${f.pid}: page 0x${addr.toString(16)} is neither pre-copied nor read while frozen`);
          const n = Math.min(end, o.end) - addr;
          add(overflow, o.at + (addr - o.start), n);
          addr += n;
        }
      }
    }
    flush();
    return out;
  }

  /** Stops tracking every process (the kernel unprotects everything). Safe to call more than once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const errs: unknown[] = [];
    for (const pid of [...this.trackers.keys()]) {
      this.trackers.delete(pid);
      await this.helper.trackStop(pid).catch((err) => errs.push(err));
    }
    if (errs.length) throw new GodwitError(`stopping dirty tracking failed for ${errs.length} process(es)`, { cause: errs[0] });
  }
}
