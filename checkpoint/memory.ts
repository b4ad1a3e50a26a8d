/**
 * mm-PID.img: the memory layout (mm fields from /proc/PID/stat, auxv, exe, every VMA with CRIU's status bits)
 * and the page ranges to dump (pageranges.ts). The mm fields CRIU reads with prctl(PR_GET_MM...) come from
 * /proc/PID/stat fields 26-28 and 45-51, which carry the same values.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { readSmaps } from './proc/maps';
import { Pagemap } from './proc/pagemap';
import { readAuxv } from './proc/misc';
import { procPath } from './proc/read';
import type { ProcStat } from './proc/stat';
import { buildMappings, Mapping, VMA_AREA_GUARD, VMA_AREA_VSYSCALL, VmaEntry } from './vma';
import { collectPageRanges, GuardRegion, PageRange, PageStats, scanPageRanges, withoutGuards } from './pageranges';
import { setSharedPages } from './memreader';
import { aioRings } from './aio';
import { ghostMappedFile } from './ghosts';

/**
 * Processes with at least this much private memory (smaps' anonymous + swapped) get their page ranges from
 * PAGEMAP_SCAN in the helper; smaller ones from reading pagemap here, which then costs less than a helper round
 * trip. Measured at load 16: 1 GiB 49 ms against 202 ms; a process of a few hundred KiB 10 ms against 0.4 ms.
 */
const SCAN_MIN_BYTES = 64 << 20;

export interface ProcessMemory {
  mappings: Mapping[];
  ranges: PageRange[];
  stats: PageStats;
  mm: Record<string, unknown>;
}

/** Bytes of private memory smaps counts as anonymous or swapped: what the page step will roughly read. */
export function estimatePageBytes(mappings: Mapping[]): number {
  return mappings.reduce((n, m) => n + (m.proc.shared ? 0 : (m.proc.anonKb + m.proc.swapKb) * 1024), 0);
}

/** Guard regions of every mapping (PAGEMAP_SCAN's PAGE_IS_GUARD); none where the kernel cannot tell (EINVAL). */
async function guardRegions(ctx: CollectContext, pid: number, mappings: Mapping[]): Promise<GuardRegion[]> {
  const spans = mappings
    .filter((m) => !(m.entry.status & VMA_AREA_VSYSCALL))
    .map((m) => ({ start: Number(m.proc.start), end: Number(m.proc.end) }));
  try {
    return (await ctx.helper.presentPages(pid, spans, false, true)).regions;
  } catch (err) {
    if ((err as { errno?: number }).errno === 22) return []; // before Linux 6.14: no PAGE_IS_GUARD
    throw err;
  }
}

function guardEntry(g: GuardRegion): VmaEntry {
  return { start: BigInt(g.start), end: BigInt(g.end), pgoff: 0n, shmid: 0n, prot: 0, flags: 0, status: VMA_AREA_GUARD, fd: -1n };
}

/** Mappings alone (preflight: no file ids are registered). */
export function inspectMappings(pid: number): Mapping[] {
  return buildMappings(pid, readSmaps(pid));
}

/**
 * The files.img id of a mapped file or executable; a deleted one gets its ghost (one per inode, shared with the
 * fds that hold it). Its build-id is not read: the path may name another file now.
 */
function mappedFile(ctx: CollectContext, path: string, st: fs.BigIntStats, deleted: boolean, from: string, what: string): number {
  const id = ctx.files.regular(path, st, 0, 0n, undefined, !deleted);
  if (deleted) ghostMappedFile(ctx, id, st, from, what, path);
  return id;
}

export async function collectMemory(ctx: CollectContext, pid: number, stat: ProcStat, dumpable: number): Promise<ProcessMemory> {
  const mappings = buildMappings(pid, readSmaps(pid), (path, st, deleted, _flags, from) =>
    mappedFile(ctx, path, st, deleted, from, `pid ${pid} mapping ${from.slice(from.lastIndexOf('/') + 1)}`));
  for (const m of mappings)
    if (m.unsupported)
      throw new GodwitError(
        `pid ${pid} mapping 0x${m.proc.start.toString(16)}-0x${m.proc.end.toString(16)} ${m.proc.path}: ${m.unsupported} cannot be checkpointed yet`,
      );
  ctx.shmem.addMappings(ctx, pid, mappings);
  let exeLink: string;
  let exeStat: fs.BigIntStats;
  try {
    exeLink = fs.readlinkSync(procPath(pid, 'exe'), 'latin1');
    exeStat = fs.statSync(procPath(pid, 'exe'), { bigint: true });
  } catch (err) {
    throw new GodwitError(`pid ${pid}: cannot read its executable (/proc/${pid}/exe)`, { cause: err });
  }
  // Deleted (a package upgrade replaced it): the same ghost as its mappings, made again at restore.
  const exeDeleted = exeLink.endsWith(' (deleted)') && exeStat.nlink === 0n;
  const exeId = mappedFile(ctx, exeLink.replace(/ \(deleted\)$/, ''), exeStat, exeDeleted, procPath(pid, 'exe'), `pid ${pid} executable`);
  let ranges: PageRange[] | undefined;
  let stats: PageStats | undefined;
  let guards: GuardRegion[] = [];
  // PAGEMAP_SCAN cannot tell shared pages from exclusive ones: in a tree of several processes (where fork leaves
  // pages shared) the pagemap is read instead, so that shared pages are known (memreader.ts setSharedPages).
  if (estimatePageBytes(mappings) >= SCAN_MIN_BYTES && ctx.tree.processes.length === 1) {
    try {
      ({ ranges, stats } = await scanPageRanges(pid, mappings, (p, r, keepFile) => ctx.helper.presentPages(p, r, keepFile)));
      guards = await guardRegions(ctx, pid, mappings);
      ranges = withoutGuards(ranges, guards, stats);
    } catch (err) {
      // A kernel without PAGEMAP_SCAN (before 6.7): ENOTTY or EINVAL; the pagemap path below works everywhere.
      const errno = (err as { errno?: number }).errno;
      if (errno !== 25 && errno !== 22) throw err;
    }
  }
  if (!ranges || !stats) {
    const pagemap = Pagemap.open(pid);
    try {
      ({ ranges, stats, guards } = collectPageRanges(pagemap, mappings));
    } finally {
      pagemap.close();
    }
  }
  setSharedPages(pid, (stats.pagesShared ?? 0) > 0);
  const brk = mappings.find((m) => m.proc.path === '[heap]')?.proc.end ?? stat.startBrk;
  const mm: Record<string, unknown> = {
    mm_start_code: stat.startCode,
    mm_end_code: stat.endCode,
    mm_start_data: stat.startData,
    mm_end_data: stat.endData,
    mm_start_stack: stat.startStack,
    mm_start_brk: stat.startBrk,
    mm_brk: brk,
    mm_arg_start: stat.argStart,
    mm_arg_end: stat.argEnd,
    mm_env_start: stat.envStart,
    mm_env_end: stat.envEnd,
    exe_file_id: exeId,
    mm_saved_auxv: readAuxv(pid),
    vmas: [...mappings.map((m) => m.entry), ...guards.map(guardEntry)],
    dumpable,
    aios: aioRings(pid, mappings),
    thp_disabled: false, // from /proc/PID/status, set by collect.ts
  };
  return { mappings, ranges, stats, mm };
}
