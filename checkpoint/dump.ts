/**
 * `godwit dump`: one flat list of named steps (CRIU's cr_dump_tasks is the model), exported so that `migrate`
 * can nest them:
 *
 *   resolve target -> open image directory -> scan tree -> preflight -> start helper -> freeze -> collect
 *   -> dump pages -> resume (--leave-running) -> write images -> write manifest -> kill (without --leave-running)
 *
 * Failure anywhere before the end: every task is let go exactly as it was (the helper detaches; group-stopped
 * tasks stay stopped), the partial directory is removed (it never has a manifest), and the error names the
 * pid, fd or mapping and kind. The tree is killed only after the manifest is safely on disk.
 */
import { Listr, ListrTask } from 'listr2';
import { GodwitError, UsageError } from '../util/errors';
import { Helper } from '../native/helper';
import { ImageDirWriter } from '../images/imagedir';
import type { PageWriter } from '../images/container-writer';
import { encodeHeader, EntryEncoder } from '../images/framing';
import { fileNameFor, kindByName } from '../images/registry';
import { dumpHelper } from './adapt';
import type { DumpHelper } from './helperapi';
import { newContext, CollectContext } from './context';
import { collectAll, ProcessPlan } from './collect';
import { freezeTree } from './freeze';
import { unlockConnections } from './inet';
import { NamespaceIds } from './namespaces';
import { preflight } from './preflight';
import { addPagemap, pageRangesBytes, readProcessPages } from './pages';
import { bufferSizeFor, PageBuffer } from './pagebuffer';
import { MemReader } from './memreader';
import { resolveTarget, scanTree, Tree } from './tree';

export type Compression = 'zstd' | 'none';

export interface DumpOptions {
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
   * How page contents leave the frozen tree: 'procmem' (default) preads /proc/PID/mem straight into the
   * read-ahead buffer; 'helper' streams them through the helper's process_vm_readv and bulk pipe.
   */
  pageReader?: 'procmem' | 'helper';
  /** Largest read-ahead buffer between the frozen tree and the compressors, bytes (default 1 GiB). */
  pageBufferMax?: number;
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
  /** From the first seize to the resume (leave-running) or to the end of page reading (kill). */
  frozenMs: number;
  totalMs: number;
  leftRunning: boolean;
  compress: Compression;
  steps: { title: string; ms: number }[];
}

/** The state the steps share; migrate keeps one per dump. */
export interface DumpState {
  options: Required<Pick<DumpOptions, 'pid' | 'dir' | 'leaveRunning' | 'compress' | 'ghostLimit'>> & DumpOptions;
  startedAt: bigint;
  writer?: ImageDirWriter;
  tree?: Tree;
  ns?: NamespaceIds;
  rawHelper?: Helper;
  helper?: DumpHelper;
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
  pageBytes: bigint;
  /** The helper holds tasks: a failure must detach them. */
  holding: boolean;
  killed: boolean;
  steps: { title: string; ms: number }[];
  summary?: DumpSummary;
}

export interface DumpStep {
  title: string;
  /** Skipped when this returns true. */
  skip?: (s: DumpState) => boolean;
  run: (s: DumpState) => Promise<void>;
}

const DEFAULT_GHOST_LIMIT = 64 << 20;

export function newDumpState(o: DumpOptions): DumpState {
  const compress = o.compress ?? 'zstd';
  if (compress !== 'zstd' && compress !== 'none') throw new UsageError(`--compress must be zstd or none, got ${String(compress)}`);
  if (!o.dir) throw new UsageError('--dir is required: the directory to write the images to');
  return {
    options: { ...o, leaveRunning: o.leaveRunning ?? false, compress, ghostLimit: o.ghostLimit ?? DEFAULT_GHOST_LIMIT },
    startedAt: process.hrtime.bigint(),
    pageWriters: [],
    pagesFlushed: [],
    estimatedPageBytes: 0,
    pageBytes: 0n,
    holding: false,
    killed: false,
    steps: [],
  };
}

const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;

async function resume(s: DumpState): Promise<void> {
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
      resolveTarget(s.options.pid);
    },
  },
  {
    title: 'open image directory',
    run: async (s) => {
      s.writer = await ImageDirWriter.create(s.options.dir, {
        compress: s.options.compress,
        options: { leaveRunning: s.options.leaveRunning },
      });
    },
  },
  {
    title: 'scan tree',
    run: async (s) => {
      s.tree = scanTree(s.options.pid);
      s.ns = new NamespaceIds();
    },
  },
  {
    title: 'preflight',
    run: async (s) => {
      s.estimatedPageBytes = preflight(s.tree!, s.ns!).estimatedPageBytes;
    },
  },
  {
    title: 'prepare page buffer',
    run: async (s) => {
      s.pageBuffer = new PageBuffer(bufferSizeFor(s.estimatedPageBytes, s.options.pageBufferMax));
      s.memReader = new MemReader();
      // The root's pages file (pages id 1) is opened now: that starts the compression workers outside the freeze.
      s.pageWriters.push(await s.writer!.createPageWriter(1));
    },
  },
  {
    title: 'start helper',
    run: async (s) => {
      s.rawHelper = await Helper.start();
      s.helper = dumpHelper(s.rawHelper);
    },
  },
  {
    title: 'freeze',
    run: async (s) => {
      s.frozenAt = process.hrtime.bigint();
      s.holding = true;
      const f = await freezeTree(s.helper!, s.options.pid, s.options.freezeTimeoutMs);
      s.tree = f.tree;
      s.groupStopped = f.groupStopped;
    },
  },
  {
    title: 'collect tree, threads, memory, files',
    run: async (s) => {
      s.ctx = newContext(s.helper!, s.tree!, s.options.ghostLimit);
      const r = await collectAll(s.ctx, s.ns!, s.groupStopped!);
      s.plans = r.plans;
      for (const p of r.plans) if (!p.zombie) addPagemap(s.ctx.images, p);
    },
  },
  {
    title: 'dump pages',
    run: async (s) => {
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
    title: 'resume',
    skip: (s) => !s.options.leaveRunning,
    run: resume,
  },
  {
    title: 'write images',
    run: async (s) => {
      const images = s.ctx!.images.images;
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
    skip: (s) => s.options.leaveRunning,
    run: async (s) => {
      const pids = s.tree!.processes.filter((p) => !p.zombie).map((p) => p.pid);
      // Children before parents: a parent that dies first would reparent them (and wake a subreaper).
      await s.helper!.kill(pids.reverse());
      // The helper's copies of repaired connections go last, still in repair mode: they close silently.
      if (s.ctx) await unlockConnections(s.helper!, s.ctx.inet, true);
      s.holding = false;
      s.killed = true;
      s.thawedAt ??= process.hrtime.bigint();
    },
  },
];

/** Undo after a failure: tasks let go as they were, partial images removed, helper gone. Never throws. */
export async function abortDump(s: DumpState): Promise<void> {
  if (s.holding) {
    try {
      await resume(s);
    } catch {
      // the helper's exit below detaches every tracee too (the kernel does it when a tracer exits)
    }
  }
  // Pending page writes are dropped with their writers (never awaited here: nothing may keep a failed dump waiting).
  for (const w of s.pageWriters) await w.abort().catch(() => undefined);
  s.pageWriters = [];
  if (s.writer) await s.writer.abort().catch(() => undefined);
  await closeHelper(s);
}

async function closeReader(s: DumpState): Promise<void> {
  const r = s.memReader;
  s.memReader = undefined;
  if (r) await r.close().catch(() => undefined);
}

async function closeHelper(s: DumpState): Promise<void> {
  await closeReader(s);
  const h = s.rawHelper;
  s.rawHelper = undefined;
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
  };
}

/** listr2 tasks for the steps, sharing `s`; the caller runs abortDump(s) if the list fails. */
export function dumpTasks(s: DumpState): ListrTask[] {
  return DUMP_STEPS.map((step) => ({
    title: step.title,
    skip: () => (step.skip ? step.skip(s) : false),
    task: async () => {
      const t0 = process.hrtime.bigint();
      await step.run(s);
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
  const list = new Listr(dumpTasks(s), {
    renderer,
    exitOnError: true,
    rendererOptions: { collapseErrors: false },
  } as never);
  try {
    await list.run();
  } catch (err) {
    await abortDump(s);
    if (err instanceof GodwitError) throw err;
    throw new GodwitError(`dump of pid ${options.pid} failed`, { cause: err });
  }
  return finishDump(s);
}
