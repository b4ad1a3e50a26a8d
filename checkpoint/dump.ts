/**
 * `godwit dump`: one flat list of named steps (CRIU's cr_dump_tasks is the model), exported so that `migrate`
 * can nest them:
 *
 *   resolve target -> open image directory -> scan tree -> preflight -> prepare page buffer -> start helper
 *   -> pre-copy (--pre-copy) -> freeze -> collect -> dump pages -> resume (--leave-running) -> write images
 *   -> write manifest -> kill (without --leave-running)
 *
 * Failure anywhere before the end: every task is let go exactly as it was (the helper detaches; group-stopped
 * tasks stay stopped), the partial directory is removed (it never has a manifest), and the error names the
 * pid, fd or mapping and kind. The tree is killed only after the manifest is safely on disk.
 */
import * as fs from 'node:fs';
import { Listr, ListrTask } from 'listr2';
import { GodwitError, UsageError } from '../util/errors';
import { interruptedError } from '../util/interrupt';
import { Helper } from '../native/helper';
import { ImageDirWriter } from '../images/imagedir';
import type { PageWriter } from '../images/container-writer';
import type { ImageProvenance } from '../images/manifest';
import { encodeHeader, EntryEncoder } from '../images/framing';
import { fileNameFor, kindByName } from '../images/registry';
import { schema } from '../images/schema';
import { newContext, CollectContext } from './context';
import { collectAll, ProcessPlan } from './collect';
import { freezeSettled, freezeTree } from './freeze';
import { unlockConnections } from './inet';
import { NamespaceIds, namespacePids, virtualizePids } from './namespaces';
import {
  containerPreflight,
  ContainerDump,
  ContainerOptions,
  dumpContainerState,
  externalKinds,
  freezeContainerCgroup,
  resolveContainerTarget,
  thawContainerCgroup,
} from './container-dump';
import { preflight } from './preflight';
import { addPagemap, pageRangesBytes, readProcessPages } from './pages';
import { bufferSizeFor, PageBuffer } from './pagebuffer';
import { MemReader } from './memreader';
import { PageStore, spanBytes } from './pagestore';
import { FrozenPages, PreCopy, PreCopyOptions, PreCopyReport } from './precopy';
import { chainPagemap, RoundSent, sendRound } from './precopy-chain';
import { allThreads, resolveTarget, scanTree, Tree } from './tree';
import { dumpShmem } from './shmem';

export type Compression = 'zstd' | 'none';

export interface DumpOptions extends ContainerOptions {
  /** The tree's root; with --container or --cgroup it is found there (0 until then). */
  pid: number;
  dir: string;
  /** Resume the tree after the dump (a snapshot); default: kill it once the images are safely written. */
  leaveRunning?: boolean;
  compress?: Compression;
  /** Largest deleted-file content carried in the image, bytes (default 64 MiB). */
  ghostLimit?: number;
  /** How long seizing may wait for all threads to stop, ms (default: the helper's, 5 s). */
  freezeTimeoutMs?: number;
  /**
   * Ctrl-C: once aborted, the dump stops before its next step (a step in flight runs to its end: the helper's
   * requests are not cut half-way) and fails; abortDump() then resumes the tree and removes the images.
   */
  signal?: AbortSignal;
  /**
   * How page contents leave the frozen tree: 'procmem' (default) preads /proc/PID/mem straight into the
   * read-ahead buffer; 'helper' streams them through the helper's process_vm_readv and bulk pipe.
   */
  pageReader?: 'procmem' | 'helper';
  /** Largest read-ahead buffer between the frozen tree and the compressors, bytes (default 1 GiB; the pre-copy
   *  store: 4 GiB). Either is also kept within a quarter of MemAvailable. */
  pageBufferMax?: number;
  /**
   * Copy memory while the tree runs, in rounds, tracking writes (checkpoint/precopy.ts); the frozen window then
   * reads only what changed. `true` for the defaults. Falls back to a plain dump (summary.preCopy.fallback says
   * why) when the pages would not fit the read-ahead limit or no process can be tracked.
   */
  preCopy?: boolean | PreCopyOptions;
  /**
   * With preCopy: send each round, as it ends, into `output` as an image of a pre-dump chain (pre-1/, pre-2/, ...:
   * checkpoint/precopy-chain.ts); the final image then carries only the pages changed since their copy and marks
   * the others PE_PARENT. Needs an output with subdirectories (migrate's stream); a local dump stays one image.
   */
  preCopyChain?: boolean;
  /**
   * Where the images go instead of a new directory `dir` (migrate: an image stream to the target; `dir` then only
   * names it in messages). Must honour the same contract as ImageDirWriter: manifest last, abort removes all.
   */
  output?: ImageOutput;
  /**
   * Neither resume nor kill at the end: the tree stays frozen, held by the helper, until the caller decides
   * (migrate: resumeTree() if the target fails, killTree() once it runs the workload), then finishDump().
   */
  keepFrozen?: boolean;
  /**
   * Awaited right before the freeze, the tree still running (its own step, 'ready to freeze'): migrate waits there
   * for the target's memory reserve, so that its faulting never runs in the downtime.
   */
  beforeFreeze?: (progress: (line: string) => void) => Promise<void>;
}

/** What the dump writes its images into: an ImageDirWriter, or migrate's stream to the target. */
export interface ImageOutput {
  createPageWriter(pagesId: number): Promise<PageWriter>;
  writeFile(name: string, data: Uint8Array | Uint8Array[]): Promise<unknown>;
  /** Writes the manifest: the image is complete. */
  finish(extra?: Partial<ImageProvenance>): Promise<unknown>;
  /** Removes whatever was written. Never throws. */
  abort(): Promise<void>;
  /** Files written so far (sizes for the summary). */
  readonly files: { size: number }[];
  /** An image directory inside this one with its own manifest (a streamed pre-copy round). */
  openSubdir?(name: string): ImageOutput;
}

export interface DumpSummary {
  pid: number;
  dir: string;
  pids: number[];
  threads: number;
  pages: number;
  /** Bytes of page data read from the tree. */
  pageBytes: number;
  /** Bytes of all image files written (compressed pages included). */
  imageBytes: number;
  /** From the first seize of the freeze that held (see refreeze) to the resume (leave-running) or to the end of page reading (kill). */
  frozenMs: number;
  totalMs: number;
  leftRunning: boolean;
  compress: Compression;
  steps: { title: string; ms: number }[];
  /** With --pre-copy: the rounds (bytes copied and time each), and what the frozen window still had to read. */
  preCopy?: PreCopySummary;
  /** A container dump: ms of its parts (freeze, namespaces, mounts, rootfs, cgroups). */
  container?: Record<string, number>;
  /** The tree was frozen more than once (frozenMs is the last freeze): how often, why, and the time around it. */
  refreeze?: Refreeze;
}

export interface Refreeze {
  freezes: number;
  reason: string;
  /** Time frozen in the freezes that were let go, and time the tree ran between them (ms). */
  earlierFrozenMs: number;
  waitedMs: number;
}

export function refreezeText(r: Refreeze): string {
  return `froze ${r.freezes} times: ${r.reason} (${r.earlierFrozenMs.toFixed(1)} ms frozen before, ${r.waitedMs.toFixed(0)} ms run between)`;
}

export interface PreCopySummary {
  rounds: { round: number; bytes: number; ms: number }[];
  /** Why the rounds ended (see PreCopyReport.stop). */
  stop: string;
  /** Page bytes read while the tree was frozen (written since their copy, never copied, or untrackable). */
  frozenBytes: number;
  /** Processes that were not pre-copied, with the reason. */
  untracked: { pid: number; reason: string }[];
  /** Set when pre-copy was asked for but the dump ran without it, with the reason. */
  fallback?: string;
  /** A streamed pre-copy (preCopyChain): what each round sent while the tree ran. */
  sent?: RoundSent[];
  /** A streamed pre-copy: page bytes in the final image (all that was sent after the freeze; the rest is PE_PARENT). */
  finalPageBytes?: number;
}

/** The state the steps share; migrate keeps one per dump. */
export interface DumpState {
  options: Required<Pick<DumpOptions, 'pid' | 'dir' | 'leaveRunning' | 'compress' | 'ghostLimit'>> & DumpOptions;
  startedAt: bigint;
  writer?: ImageOutput;
  tree?: Tree;
  ns?: NamespaceIds;
  /** A container with its own pid namespace: host pid -> pid inside, read while the tree is frozen. */
  nsPids?: Map<number, number>;
  helper?: Helper;
  frozenAt?: bigint;
  thawedAt?: bigint;
  groupStopped?: Map<number, number>;
  ctx?: CollectContext;
  plans?: ProcessPlan[];
  pageWriters: PageWriter[];
  /** Settle when the writers are done with every page read (compression may still run after the resume). */
  pagesFlushed: Promise<void>[];
  estimatedPageBytes: number;
  pageBuffer?: PageBuffer;
  memReader?: MemReader;
  pageStore?: PageStore;
  preCopy?: PreCopy;
  preCopyReport?: PreCopyReport;
  preCopyFallback?: string;
  /** Rounds sent as images of a pre-dump chain (preCopyChain); the final pagemap refers to them when any. */
  roundsSent: RoundSent[];
  finalPageBytes: number;
  frozenReadBytes: number;
  pageBytes: bigint;
  /** The helper holds tasks: a failure must detach them. */
  holding: boolean;
  killed: boolean;
  steps: { title: string; ms: number }[];
  summary?: DumpSummary;
  /** A container dump: its namespaces, mounts, rootfs and cgroups go with the tree. */
  container?: ContainerDump;
  refreeze?: Refreeze;
}

export interface DumpStep {
  title: string;
  /** Skipped when this returns true. */
  /** Why the step does not run for this dump (shown in place of the work), or false when it runs. */
  skip?: (s: DumpState) => string | false;
  /** `progress` shows a line under the step (listr2 task output). */
  run: (s: DumpState, progress: (line: string) => void) => Promise<void>;
}

const DEFAULT_GHOST_LIMIT = 64 << 20;

export function newDumpState(o: DumpOptions): DumpState {
  const compress = o.compress ?? 'zstd';
  if (compress !== 'zstd' && compress !== 'none') throw new UsageError(`--compress must be zstd or none, got ${String(compress)}`);
  if (!o.dir && !o.output) throw new UsageError('--dir is required: the directory to write the images to');
  if (!o.pid && !o.container && !o.cgroup) throw new UsageError('give the tree to dump: --pid PID, --container ID or --cgroup PATH');
  return {
    options: { ...o, leaveRunning: o.leaveRunning ?? false, compress, ghostLimit: o.ghostLimit ?? DEFAULT_GHOST_LIMIT },
    startedAt: process.hrtime.bigint(),
    pageWriters: [],
    pagesFlushed: [],
    estimatedPageBytes: 0,
    roundsSent: [],
    finalPageBytes: 0,
    frozenReadBytes: 0,
    pageBytes: 0n,
    holding: false,
    killed: false,
    steps: [],
  };
}

const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;

/** Lets the frozen tree run on exactly as it was (group-stopped tasks stay stopped). */
export async function resumeTree(s: DumpState): Promise<void> {
  if (!s.holding) return;
  s.holding = false;
  // TCP connections out of repair mode before their tasks run (a failure here still detaches: the helper's
  // exit ends repair mode too).
  if (s.ctx) await unlockConnections(s.helper!, s.ctx.inet, false).finally(() => s.helper!.detach());
  else await s.helper!.detach();
  s.thawedAt = process.hrtime.bigint();
}

export const DUMP_STEPS: DumpStep[] = [
  {
    title: 'resolve target',
    run: async (s) => {
      s.container = resolveContainerTarget(s.options);
      if (s.container) s.options.pid = s.container.pid;
      resolveTarget(s.options.pid);
    },
  },
  {
    title: 'open image directory',
    run: async (s) => {
      s.writer = s.options.output ?? await ImageDirWriter.create(s.options.dir, {
        compress: s.options.compress,
        options: { leaveRunning: s.options.leaveRunning },
      });
    },
  },
  {
    title: 'scan tree',
    run: async (s) => {
      s.tree = scanTree(s.options.pid);
      s.ns = new NamespaceIds(s.container ? s.options.pid : undefined, { external: externalKinds(s.container, s.options.externalNs) });
    },
  },
  {
    title: 'preflight',
    run: async (s) => {
      s.estimatedPageBytes = preflight(s.tree!, s.ns!).estimatedPageBytes;
      if (s.container) await containerPreflight(s.container, s.ns!, s.tree!);
    },
  },
  {
    title: 'prepare page buffer',
    run: async (s) => {
      if (s.options.preCopy) {
        // The store holds every page until the images are written: pre-copy only when the tree fits in it
        // (room for growth included); beyond that, the plain path streams slot by slot.
        const want = Math.ceil(s.estimatedPageBytes * PRECOPY_GROWTH) + PRECOPY_SLACK;
        const size = bufferSizeFor(want, s.options.pageBufferMax ?? PRECOPY_MAX_STORE);
        if (size >= s.estimatedPageBytes + PRECOPY_SLACK / 4) s.pageStore = new PageStore(size);
        else
          s.preCopyFallback = `the tree's ${(s.estimatedPageBytes / 2 ** 20).toFixed(0)} MiB of pages do not fit the read-ahead limit (${(size / 2 ** 20).toFixed(0)} MiB)`;
      }
      if (!s.pageStore) s.pageBuffer = new PageBuffer(bufferSizeFor(s.estimatedPageBytes, s.options.pageBufferMax));
      s.memReader = new MemReader();
      // The root's pages file (pages id 1) is opened now: that starts the compression workers outside the freeze.
      s.pageWriters.push(await s.writer!.createPageWriter(1));
    },
  },
  {
    title: 'start helper',
    run: async (s) => {
      const helper = Helper.start();
      // The image schemas are parsed on first use (~26 ms): now, while the helper starts, not in 'write images',
      // where it would hold up the stream in the freeze.
      schema();
      s.helper = await helper;
    },
  },
  {
    title: 'pre-copy',
    skip: (s) => !s.pageStore && 'no --pre-copy',
    run: async (s, progress) => {
      const o: PreCopyOptions = typeof s.options.preCopy === 'object' ? s.options.preCopy : {};
      const pids = s.tree!.processes.filter((p) => !p.zombie).map((p) => p.pid);
      const chain = s.options.preCopyChain ? s.writer! : undefined;
      if (chain && !chain.openSubdir) throw new GodwitError('a streamed pre-copy (preCopyChain) needs an image output with subdirectories (migrate)');
      const virtual = s.container && s.ns!.own.includes('pid');
      const imageId = (pid: number) => (virtual ? namespacePids([pid]).get(pid)! : pid);
      s.preCopy = await PreCopy.start(s.helper!, pids, s.pageStore!, s.memReader!);
      const pc = s.preCopy;
      s.preCopyReport = await pc.run({
        ...o,
        onRound: async (r) => {
          let line = `round ${r.round}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${r.ms.toFixed(0)} ms`;
          if (chain) {
            // Sent before the next round re-reads anything over these copies (and under the transport's credit).
            const sent = await sendRound(chain, pc, r.round, imageId);
            s.roundsSent.push(sent);
            line += `, sent ${(sent.imageBytes / 2 ** 20).toFixed(1)} MiB in ${sent.sendMs.toFixed(0)} ms`;
          }
          progress(line);
          await o.onRound?.(r);
        },
      });
      if (s.preCopy.trackedPids.length === 0) s.preCopyFallback = s.preCopyReport.untracked.map((u) => `pid ${u.pid}: ${u.reason}`).join('; ') || 'nothing to track';
    },
  },
  {
    title: 'ready to freeze',
    skip: (s) => !s.options.beforeFreeze && 'nothing to wait for',
    run: async (s, progress) => {
      await s.options.beforeFreeze!(progress);
    },
  },
  {
    title: 'freeze',
    run: async (s, progress) => {
      s.holding = true;
      const f = await freezeSettled(
        s.helper!,
        async () => {
          if (s.container) await freezeContainerCgroup(s.container);
          try {
            return await freezeTree(s.helper!, s.options.pid, s.options.freezeTimeoutMs);
          } finally {
            // Seized tasks stay in their ptrace stops: the cgroup freezer is never left set.
            if (s.container) thawContainerCgroup(s.container);
          }
        },
        () => s.helper!.detach().then(() => undefined),
      );
      s.tree = f.tree;
      s.groupStopped = f.groupStopped;
      // The frozen time is the freeze that held; the earlier ones are reported beside it (summary.refreeze).
      s.frozenAt = f.frozenAt;
      if (f.freezes > 1) {
        s.refreeze = { freezes: f.freezes, reason: f.reason!, earlierFrozenMs: f.earlierFrozenMs, waitedMs: f.waitedMs };
        progress(refreezeText(s.refreeze));
      }
    },
  },
  {
    title: 'collect tree, threads, memory, files',
    run: async (s) => {
      s.ctx = newContext(s.helper!, s.tree!, s.options.ghostLimit);
      const r = await collectAll(s.ctx, s.ns!, s.groupStopped!);
      s.plans = r.plans;
      // A streamed pre-copy writes its pagemaps once it knows what is still clean (dumpStoredPages).
      if (!s.roundsSent.length) for (const p of r.plans) if (!p.zombie) addPagemap(s.ctx.images, p);
    },
  },
  {
    title: 'container: namespaces, mounts, rootfs, cgroups',
    skip: (s) => !s.container && 'not a container',
    run: async (s) => {
      await dumpContainerState(s.container!, s.ctx!.images, s.ns!, s.options);
      // Read now, while frozen: with --leave-running the images are written after the resume, when a
      // short-lived task may be gone. Zombies too: their pstree entry and core image carry their pid.
      if (s.ns!.own.includes('pid'))
        s.nsPids = namespacePids([...allThreads(s.tree!), ...s.tree!.processes.filter((p) => p.zombie).map((p) => p.pid)]);
    },
  },
  {
    title: 'dump pages',
    run: async (s) => {
      if (s.pageStore) return dumpStoredPages(s);
      for (const p of s.plans!) {
        if (p.zombie) continue;
        let w = p.pagesId === 1 ? s.pageWriters[0] : undefined;
        if (!w) s.pageWriters.push((w = await s.writer!.createPageWriter(p.pagesId)));
        let flushed: Promise<void>;
        if (s.options.pageReader === 'helper') {
          const stream = s.pageBuffer!.stream(w);
          s.pageBytes += await readProcessPages(s.helper!, p, stream.sink);
          flushed = stream.end();
        } else {
          const r = await s.pageBuffer!.readInto(p.pid, pageRangesBytes(p), w, s.memReader);
          s.pageBytes += BigInt(r.bytes);
          flushed = r.flushed;
        }
        flushed.catch(() => undefined); // awaited in 'write images'; a failure surfaces there
        s.pagesFlushed.push(flushed);
      }
      // Every page is out of the tree: compression starts now, overlapping the resume and the image writes.
      s.pageBuffer!.startWriting();
    },
  },
  {
    // Shared memory objects (shared anonymous, memfd) once each, however many processes map them; still frozen.
    title: 'dump shared memory',
    skip: (s) => (!s.ctx || s.ctx.shmem.size === 0) && 'no shared memory',
    run: async (s) => {
      const first = Math.max(0, ...s.plans!.map((p) => p.pagesId)) + 1;
      const r = await dumpShmem(s.ctx!, s.ctx!.shmem, first, async (id) => {
        const w = await s.writer!.createPageWriter(id);
        s.pageWriters.push(w);
        return w;
      });
      s.pageBytes += BigInt(r.bytes);
    },
  },
  {
    title: 'resume',
    skip: (s) => (!s.options.leaveRunning || !!s.options.keepFrozen) && (s.options.keepFrozen ? 'kept frozen' : 'no --leave-running: the tree is killed'),
    run: resumeTree,
  },
  {
    title: 'write images',
    run: async (s) => {
      // The tree runs again (or is about to be killed): tracking ends before anything else.
      await stopPreCopy(s);
      // The page writers' first jobs go to the compression workers before the images are encoded below (~8 ms of
      // JavaScript that would otherwise hold them back, and the stream with them).
      await new Promise<void>((resolve) => setImmediate(resolve));
      // A container's tasks are recorded with their pids inside its pid namespace (its root is 1 there).
      if (s.container && s.nsPids) virtualizePids(s.ctx!.images, s.nsPids);
      const images = s.ctx!.images.images;
      for (const f of s.container?.files ?? []) await s.writer!.writeFile(f.name, f.data);
      await Promise.all(
        images.map((img) => {
          const name = fileNameFor(img.kind, img.arg);
          const kind = kindByName(img.kind)!;
          const enc = new EntryEncoder(kind, name);
          const parts: Buffer[] = [encodeHeader(kind)];
          for (const e of img.entries) parts.push(...enc.encode(e.msg, e.extra));
          return s.writer!.writeFile(name, parts);
        }),
      );
      await closeReader(s);
      await Promise.all(s.pagesFlushed);
      for (const w of s.pageWriters) await w.finish();
      s.pageWriters = [];
      s.pageBuffer = undefined;
    },
  },
  {
    title: 'write manifest',
    run: async (s) => {
      await s.writer!.finish({});
    },
  },
  {
    title: 'kill',
    skip: (s) => (s.options.leaveRunning || !!s.options.keepFrozen) && (s.options.keepFrozen ? 'kept frozen' : '--leave-running: the tree runs on'),
    run: killTree,
  },
];

/** The store grows by this share of the estimate (the tree allocates while pre-copy runs) plus PRECOPY_SLACK. */
const PRECOPY_GROWTH = 1.25;
const PRECOPY_SLACK = 64 << 20;
/**
 * The store's default limit (still at most a quarter of MemAvailable): larger than the plain read-ahead's 1 GiB,
 * which can stream slot by slot when full, because pre-copied pages must all be held until the freeze.
 */
const PRECOPY_MAX_STORE = 4 * 2 ** 30;

async function stopPreCopy(s: DumpState): Promise<void> {
  const pc = s.preCopy;
  s.preCopy = undefined;
  if (pc) await pc.stop();
}

/**
 * The frozen part of a pre-copy dump: per process, what was written since its copy and what was never copied is
 * read into the store (and what found no room in it into a buffer of its own); then every pages file is fed from
 * memory in pagemap order. Compression runs from here on, overlapping the resume.
 */
async function dumpStoredPages(s: DumpState): Promise<void> {
  const store = s.pageStore!;
  const pc = s.preCopy!;
  const frozen: { plan: ProcessPlan; f: FrozenPages; overflow?: Buffer }[] = [];
  for (const p of s.plans!) {
    if (p.zombie) continue;
    const fp = await pc.frozenPages(p.pid, p.ranges);
    s.frozenReadBytes += await s.memReader!.read(p.pid, store.sab, fp.reads);
    let overflow: Buffer | undefined;
    const ovBytes = spanBytes(fp.overflow);
    if (ovBytes) {
      const sab = new SharedArrayBuffer(ovBytes);
      let at = 0;
      const pieces = fp.overflow.map((x) => {
        const piece = { addr: x.start, len: x.end - x.start, at };
        at += piece.len;
        return piece;
      });
      s.frozenReadBytes += await s.memReader!.read(p.pid, sab, pieces);
      overflow = Buffer.from(sab);
    }
    s.pageBytes += BigInt(fp.bytes);
    frozen.push({ plan: p, f: fp, overflow });
  }
  // Every page is in memory: the tree may go; the pages files are written from the store. After streamed rounds
  // only what was read while frozen goes into them: the rest is in the chain (PE_PARENT).
  const chained = s.roundsSent.length > 0;
  for (const { plan, f, overflow } of frozen) {
    let w = plan.pagesId === 1 ? s.pageWriters[0] : undefined;
    if (!w) s.pageWriters.push((w = await s.writer!.createPageWriter(plan.pagesId)));
    const writer = w;
    if (chained) {
      addPagemap(s.ctx!.images, { ...plan, ranges: chainPagemap(plan.ranges, f.fresh) });
      s.finalPageBytes += spanBytes(f.fresh);
    }
    const data = pc.pageData(f, overflow, chained ? f.fresh : f.spans);
    const flushed = Promise.all(data.map((b) => writer.write(b))).then(() => undefined);
    flushed.catch(() => undefined); // awaited in 'write images'
    s.pagesFlushed.push(flushed);
  }
}

/** Ends the frozen tree (its images are safe, or it runs elsewhere now). */
export async function killTree(s: DumpState): Promise<void> {
  const pids = s.tree!.processes.filter((p) => !p.zombie).map((p) => p.pid);
  // Children before parents: a parent that dies first would reparent them (and wake a subreaper).
  await s.helper!.kill(pids.reverse());
  // The helper's copies of repaired connections go last, still in repair mode: they close silently.
  if (s.ctx) await unlockConnections(s.helper!, s.ctx.inet, true);
  s.holding = false;
  s.killed = true;
  s.thawedAt ??= process.hrtime.bigint();
}

/** Undo after a failure: tasks let go as they were, partial images removed, helper gone. Never throws. */
export async function abortDump(s: DumpState): Promise<void> {
  // Tracking goes first: the workload must be left exactly as it was (closing the helper would end it too).
  await stopPreCopy(s).catch(() => undefined);
  if (s.container) thawContainerCgroup(s.container);
  if (s.holding) {
    try {
      await resumeTree(s);
    } catch {
      // the helper's exit below detaches every tracee too (the kernel does it when a tracer exits)
    }
  }
  // Pending page writes are dropped with their writers (never awaited here: nothing may keep a failed dump waiting).
  for (const w of s.pageWriters) await w.abort().catch(() => undefined);
  s.pageWriters = [];
  if (s.writer) await s.writer.abort().catch(() => undefined);
  // The names given to removed files that still had links (link remaps): no image will need them.
  for (const p of s.ctx?.linkRemaps.splice(0) ?? []) fs.rmSync(p, { force: true });
  await closeHelper(s);
}

async function closeReader(s: DumpState): Promise<void> {
  const r = s.memReader;
  s.memReader = undefined;
  if (r) await r.close().catch(() => undefined);
}

async function closeHelper(s: DumpState): Promise<void> {
  await closeReader(s);
  const h = s.helper;
  s.helper = undefined;
  if (h) await h.close().catch(() => undefined);
}

function summarize(s: DumpState): DumpSummary {
  const end = process.hrtime.bigint();
  const plans = s.plans ?? [];
  const manifestFiles = s.writer?.files ?? [];
  return {
    pid: s.options.pid,
    dir: s.options.dir,
    pids: plans.map((p) => p.pid),
    threads: plans.reduce((n, p) => n + p.threads.length, 0),
    pages: plans.reduce((n, p) => n + p.stats.pagesDumped, 0),
    pageBytes: Number(s.pageBytes),
    imageBytes: manifestFiles.reduce((n, f) => n + f.size, 0),
    frozenMs: s.frozenAt && s.thawedAt ? ms(s.frozenAt, s.thawedAt) : 0,
    totalMs: ms(s.startedAt, end),
    leftRunning: s.options.leaveRunning,
    compress: s.options.compress,
    steps: s.steps,
    ...(s.options.preCopy
      ? {
          preCopy: {
            rounds: (s.preCopyReport?.rounds ?? []).map((r) => ({ round: r.round, bytes: r.bytes, ms: r.ms })),
            stop: s.preCopyReport?.stop ?? 'not run',
            frozenBytes: s.frozenReadBytes,
            untracked: s.preCopyReport?.untracked ?? [],
            ...(s.preCopyFallback ? { fallback: s.preCopyFallback } : {}),
            ...(s.options.preCopyChain ? { sent: s.roundsSent, finalPageBytes: s.finalPageBytes } : {}),
          },
        }
      : {}),
    ...(s.container ? { container: s.container.timings } : {}),
    ...(s.refreeze ? { refreeze: s.refreeze } : {}),
  };
}

/** listr2 tasks for the steps, sharing `s`; the caller runs abortDump(s) if the list fails. */
export function dumpTasks(s: DumpState): ListrTask[] {
  return DUMP_STEPS.map((step) => ({
    title: step.title,
    skip: () => (step.skip ? step.skip(s) : false),
    task: async (_ctx: unknown, task: { output?: string }) => {
      const signal = s.options.signal;
      if (signal?.aborted) throw interruptedError(signal, `before "${step.title}"`);
      const t0 = process.hrtime.bigint();
      await step.run(s, (line) => {
        task.output = line;
      });
      s.steps.push({ title: step.title, ms: ms(t0, process.hrtime.bigint()) });
    },
  }));
}

/** Completes a successful dump: helper closed, summary made. */
export async function finishDump(s: DumpState): Promise<DumpSummary> {
  await closeHelper(s);
  s.summary = summarize(s);
  return s.summary;
}

export type Renderer = 'default' | 'simple' | 'silent';

/** Runs the whole dump; the library entry point (cli/dump.ts and tests call this). */
export async function dump(options: DumpOptions, renderer: Renderer = 'silent'): Promise<DumpSummary> {
  const s = newDumpState(options);
  // No listr2 SIGINT handler (it exits on the spot): options.signal stops the dump, abortDump cleans up.
  const list = new Listr(dumpTasks(s), {
    renderer,
    exitOnError: true,
    registerSignalListeners: false,
    rendererOptions: { collapseErrors: false },
  } as never);
  try {
    await list.run();
  } catch (err) {
    await abortDump(s);
    if (options.signal?.aborted) {
      throw new GodwitError(`dump of pid ${s.options.pid} stopped: the tree runs on as it was, nothing of the dump is left in ` +
        options.dir, { cause: interruptedError(options.signal, 'while dumping', err), code: 'EABORTED' });
    }
    if (err instanceof GodwitError) throw err;
    throw new GodwitError(`dump of pid ${options.pid} failed`, { cause: err });
  }
  return finishDump(s);
}
