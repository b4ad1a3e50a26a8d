/**
 * CRIU's pre-dump chain: an image directory whose pagemap marks runs PE_PARENT (or in_parent) holds those pages
 * in its parent image, the directory its `parent` link points to (a symlink, relative to the directory), and so on
 * up the chain. Each link holds pagemap-ID.img (same ID as the child's) and that pagemap's own pages file
 * (pages-N.img or godwit's pages-N.gwz). godwit's migrate writes one such link per pre-copy round (pre-1/, pre-2/,
 * ... under the final image, linked by the receiver: linkPreDumpChain), so only what changed after the last round
 * travels while the tree is frozen.
 *
 * PageChain resolves every run of a pagemap to the image that holds its bytes and their offset in that image's
 * page stream: restore then reads each pages file once, in offset order. A missing or dangling link, a parent
 * without the pagemap, or a parent pagemap that does not cover the pages is an error naming the directory and the
 * pages, never zero-filled memory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GodwitError } from '../util/errors';
import { decodeImage } from './framing';
import { Pagemap, PageRun, PE_PARENT } from './pagemap';

/** Name of the link to the parent image, as CRIU's --prev-images-dir makes it. */
export const PARENT_LINK = 'parent';
/** A chain longer than this is taken for a loop (CRIU's chains are one link per pre-dump). */
const MAX_CHAIN = 64;
/** pre-copy rounds as the migrate target receives them: pre-1/, pre-2/, ... beside the final image. */
export const ROUND_DIR = /^pre-([1-9][0-9]{0,5})$/;
export const roundDirName = (round: number): string => `pre-${round}`;

/** Bytes of one run, resolved: `len` bytes at `addr` lie at `off` in the page stream of chain level `level`. */
export interface ResolvedPages {
  addr: bigint;
  len: bigint;
  off: bigint;
  level: number;
}

/** One image of the chain: level 0 is the directory restored, 1 its parent, ... */
export interface ChainLevel {
  dir: string;
  /** pages_id of the pagemap this level resolved runs from (its pages file). */
  pagesId: number;
}

const hex = (n: bigint) => `0x${n.toString(16)}`;

/** Runs of decoded pagemap entries (pagemap_head first), as images/pagemap.ts reads them. */
export function pagemapOf(entries: Record<string, unknown>[], file: string): Pagemap {
  return Pagemap.fromEntries(entries.map((msg, i) => ({ type: i === 0 ? 'pagemap_head' : 'pagemap_entry', msg })) as never, file);
}

export class PageChain {
  /** Directories by level (resolved lazily: a dump without PE_PARENT runs never looks for a parent). */
  private readonly dirs: string[];
  private readonly seen = new Set<string>();

  constructor(dir: string) {
    this.dirs = [dir];
    this.seen.add(realpathOr(dir));
  }

  /** The directory of level `level`, following `parent` links; clear errors for a missing or broken link. */
  dirAt(level: number, why: string): string {
    while (this.dirs.length <= level) {
      const child = this.dirs[this.dirs.length - 1]!;
      const link = path.join(child, PARENT_LINK);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(link);
      } catch {
        throw new GodwitError(`${why}, but ${child} has no \`${PARENT_LINK}\` link: a pre-dump chain needs ${link} pointing to the previous image directory`, { code: 'EBADIMAGE' });
      }
      let target: string;
      try {
        target = fs.realpathSync(link);
        if (!fs.statSync(target).isDirectory()) throw new Error('not a directory');
      } catch {
        const to = st.isSymbolicLink() ? fs.readlinkSync(link) : '(not a link)';
        throw new GodwitError(`${why}, but ${link} -> ${to} is not an image directory: the pre-dump chain is broken`, { code: 'EBADIMAGE' });
      }
      if (this.seen.has(target) || this.dirs.length > MAX_CHAIN)
        throw new GodwitError(`${link} -> ${target}: the parent chain loops or is longer than ${MAX_CHAIN} images`, { code: 'EBADIMAGE' });
      this.seen.add(target);
      this.dirs.push(target);
    }
    return this.dirs[level]!;
  }

  /**
   * Where the bytes of every run of `pm` (read from `file` at level 0) lie, in address order. Runs neither present
   * nor in the parent (lazy-only: a page server would serve them) are left out, as before chains existed.
   */
  resolve(pm: Pagemap, file: string): { pieces: ResolvedPages[]; levels: ChainLevel[] } {
    const pieces: ResolvedPages[] = [];
    const maps: Pagemap[] = [pm];
    const levels: ChainLevel[] = [{ dir: this.dirs[0]!, pagesId: pm.pagesId }];
    const mapAt = (level: number, a: bigint, b: bigint): Pagemap => {
      if (maps[level]) return maps[level]!;
      const up = path.join(this.dirs[level - 1]!, file);
      const dir = this.dirAt(level, `${up} marks pages ${hex(a)}-${hex(b)} as in the parent image`);
      const p = path.join(dir, file);
      let buf: Buffer;
      try {
        buf = fs.readFileSync(p);
      } catch (e) {
        throw new GodwitError(`${up} marks pages ${hex(a)}-${hex(b)} as in the parent image, but the parent ${dir} has no ${file}: the pre-dump chain is broken`, { cause: e, code: 'EBADIMAGE' });
      }
      const m = Pagemap.fromEntries(decodeImage(buf, p).entries, p);
      maps[level] = m;
      levels[level] = { dir, pagesId: m.pagesId };
      return m;
    };
    const push = (level: number, addr: bigint, end: bigint, off: bigint) => {
      const last = pieces[pieces.length - 1];
      if (last && last.level === level && last.addr + last.len === addr && last.off + last.len === off) last.len += end - addr;
      else pieces.push({ addr, len: end - addr, off, level });
    };
    const inParent = (level: number, a: bigint, b: bigint): void => {
      const m = mapAt(level, a, b);
      let pos = a;
      for (let i = firstRunEnding(m.runs, a); i < m.runs.length && pos < b; i++) {
        const r = m.runs[i]!;
        if (r.vaddr >= b) break;
        if (r.vaddr > pos) break; // a gap: reported below
        const e = r.end < b ? r.end : b;
        if (r.pagesOffset !== undefined) push(level, pos, e, BigInt(r.pagesOffset) + (pos - r.vaddr));
        else if (r.flags & PE_PARENT) inParent(level + 1, pos, e);
        else throw new GodwitError(`${m.file}: pages ${hex(pos)}-${hex(e)} are lazy there (no bytes in the image), but its child image needs them`, { code: 'EBADIMAGE' });
        pos = e;
      }
      if (pos < b)
        throw new GodwitError(`${path.join(this.dirs[level - 1]!, file)} marks pages ${hex(pos)}-${hex(b)} as in the parent image, but ${m.file} does not hold them: the pre-dump chain is broken`, { code: 'EBADIMAGE' });
    };
    for (const r of pm.runs) {
      if (r.pagesOffset !== undefined) push(0, r.vaddr, r.end, BigInt(r.pagesOffset));
      else if (r.flags & PE_PARENT) inParent(1, r.vaddr, r.end);
    }
    return { pieces, levels };
  }
}

/** Index of the first run that ends after `addr` (runs sorted, not overlapping). */
function firstRunEnding(runs: PageRun[], addr: bigint): number {
  let lo = 0;
  let hi = runs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (runs[mid]!.end <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function realpathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * The migrate target's part of a streamed pre-copy: the rounds arrived as plain directories pre-1 ... pre-K beside
 * the final image (a received name never is a link); the links of the chain are made here, by the receiver itself:
 * pre-k/parent -> ../pre-(k-1) and DIR/parent -> pre-K. Returns K (0: no rounds, nothing linked).
 */
export async function linkPreDumpChain(dir: string): Promise<number> {
  const rounds: number[] = [];
  for (const e of await fs.promises.readdir(dir, { withFileTypes: true })) {
    const m = ROUND_DIR.exec(e.name);
    if (!m) continue;
    if (!e.isDirectory()) throw new GodwitError(`${path.join(dir, e.name)} is not a directory: pre-copy rounds must be directories`, { code: 'EBADIMAGE' });
    rounds.push(Number(m[1]));
  }
  rounds.sort((a, b) => a - b);
  if (!rounds.length) return 0;
  rounds.forEach((k, i) => {
    if (k !== i + 1) throw new GodwitError(`${dir}: pre-copy rounds ${rounds.join(', ')} are not 1..${rounds.length}: round ${i + 1} is missing`, { code: 'EBADIMAGE' });
  });
  for (let k = 2; k <= rounds.length; k++) await fs.promises.symlink(`../${roundDirName(k - 1)}`, path.join(dir, roundDirName(k), PARENT_LINK));
  await fs.promises.symlink(roundDirName(rounds.length), path.join(dir, PARENT_LINK));
  return rounds.length;
}
