/**
 * `godwit migrate`: move a running process tree to another host, transactionally. One flat list of listr2 steps:
 *
 *   connect (SSH; `godwit receive --migrate` started there, version handshake)
 *   -> checkpoint and stream (the dump's own steps, nested; the tree stays frozen; every image file goes into the
 *      stream as it is produced, pages compressed once by the dump and passed through: no local copy)
 *   -> target verifies the files -> target restores, holding the tree stopped (Ready)
 *   -> commit: the target lets it run (Running), then the source tree is killed
 *
 * The transaction rules are transport/migrate-channel.ts's: before Commit any failure (connection lost, corrupt
 * data, full disk, restore failure, timeout, Ctrl-C) resumes the source exactly as it was and the target removes
 * everything; after Commit silence is "in doubt" and the source is kept stopped (SIGSTOP, since the dump's ptrace
 * hold cannot outlive this process), never resumed: the workload never runs twice and is never lost.
 */
import { Listr, ListrTask } from 'listr2';
import { abortDump, DumpOptions, DumpState, DumpSummary, dumpTasks, finishDump, killTree, newDumpState, refreezeText } from '../checkpoint/dump';
import type { Endpoint } from '../transport/endpoint';
import { InDoubtError, MigrateTimeouts, SourceState, SourceTransaction } from '../transport/migrate-channel';
import type { SendProgress } from '../transport/send';
import { connectTarget, SshTiming, TargetOptions } from '../transport/ssh-endpoint';
import { GodwitError, UsageError } from '../util/errors';
import { endSourceContainer, holdFrozen, MigrateTargetOptions, ownCgroupDirs, targetContainerArgs } from './container';
import { StreamImageOutput } from './stream-output';
import { treeMemoryBytes } from './memory-hint';
import type { RoundSent } from '../checkpoint/precopy-chain';
import type { PreCopyOptions } from '../checkpoint/precopy';

export { receiveMigration, restoreHeld } from './target';
export type { MigrateTargetOptions } from './container';
export type { ReceiveMigrationOptions } from './target';

export interface MigrateTimeoutOptions extends MigrateTimeouts {
  /** TCP connect + SSH handshake (default 15 s). */
  connectMs?: number;
  /** SSH keepalive period (default 5 s) and unanswered keepalives before the connection counts as lost (default 3). */
  keepaliveMs?: number;
  keepaliveCountMax?: number;
  /** The target gives up after this long without a byte from the source (default 60 s). */
  idleMs?: number;
}

/** port, identity, knownHosts, fingerprint, godwitPath: how to reach the target over SSH (TargetOptions). */
export interface MigrateOptions extends TargetOptions {
  /** Root of the process tree to move (0 with dump.container or dump.cgroup; a tree with namespaces of its own moves
   *  as a container). */
  pid: number;
  /** "[user@]host[:port]" over SSH, or "local" (a child process on this machine, no SSH). Ignored with `endpoint`. */
  to?: string;
  /** Where godwit runs on the target, instead of `to` (containers, tests, a connection made by the caller). */
  endpoint?: Endpoint;
  /** Image directory on the target (new or empty; its parent must exist). Default /var/tmp/godwit-migrate-PID-TIME. */
  targetDir?: string;
  /** Restore into a new PID namespace on the target (when the PIDs may be taken there). */
  newPidns?: boolean;
  /** Keep the images on the target after the workload runs there. */
  keepImages?: boolean;
  timeouts?: MigrateTimeoutOptions;
  /** Flow-control window asked of the target, bytes. */
  window?: number;
  /** Ctrl-C: aborts (and resumes the source) until Commit is sent. */
  signal?: AbortSignal;
  /** Every step, state change and (throttled) progress, as events: `--json` prints them. */
  onEvent?: (e: MigrateEvent) => void;
  /**
   * Passed to the dump (page reader and read-ahead, ghost file limit, freeze timeout, pre-copy). With pre-copy each
   * round is streamed to the target while the tree runs (preCopyChain, default true with preCopy), so only what
   * changed since travels after the freeze; preCopyChain: false keeps the rounds in the source's memory and sends
   * every page after the freeze (shorter reads while frozen only).
   */
  dump?: Pick<DumpOptions, 'ghostLimit' | 'freezeTimeoutMs' | 'pageReader' | 'pageBufferMax' | 'preCopy' | 'preCopyChain'
    | 'container' | 'runtime' | 'cgroup' | 'rootfsMode' | 'rootfsBase'>;
  /** A container: how the target sets it up (veth host end, cgroup root, rootfs location there). */
  target?: MigrateTargetOptions;
}

export interface MigrateSummary {
  pid: number;
  target: string;
  targetDir: string;
  /** The restored root task and every task, image pid -> pid on the target (as its PID namespace shows them). */
  targetRootPid: number;
  targetPids: Record<string, number>;
  /** Source frozen (first seize) -> target's Running received: the workload's stop, measured on the source. */
  downtimeMs: number;
  /** Command start -> done (connection included). */
  totalMs: number;
  /** From the start of the checkpoint (before the freeze) to the target's Complete (every file checked there). */
  streamMs: number;
  /**
   * The transfer proper: from the moment every page has been read out of the frozen tree (compression and sending
   * run from there) to the target's Complete. wireBytes over this is the stream's throughput.
   */
  transferMs: number;
  /** The target's restore, as it measured it, and Commit -> Running. */
  restoreMs: number;
  /** The target's restore steps, ms each (a container's parts as `container: cgroups`, `container: net`, ...). */
  targetTimingsMs: Record<string, number>;
  /**
   * The target's reserve (migrate/reserve.ts): bytes it set out to hold for the restore (the tree's memory, capped by
   * what the target can spare) and what it had faulted in when the restore started. Absent: none was made.
   */
  targetReserve?: { bytes: number; heldBytes: number };
  /** What the target said it held (Reserved) when the source froze the tree; absent if it had not said. */
  targetReservedAtFreeze?: number;
  commitMs: number;
  files: number;
  /** Image bytes sent (compressed pages counted as compressed), and bytes on the wire (frames included). */
  rawBytes: number;
  wireBytes: number;
  /** Wire bytes per second of the transfer (transferMs). */
  wireBytesPerSecond: number;
  /** Bytes of page data read from the tree. */
  pageBytes: number;
  /**
   * A streamed pre-copy: the rounds sent while the tree ran, their image bytes in total, the image bytes sent after
   * the freeze (rawBytes - streamedBytes) and the page bytes among them (only what changed since its copy).
   */
  preCopy?: { rounds: RoundSent[]; streamedBytes: number; afterFreezeBytes: number; afterFreezePageBytes: number };
  dump: DumpSummary;
  steps: { title: string; ms: number }[];
}

export type MigrateEvent =
  | { event: 'step'; step: string; status: 'start' | 'done' | 'skipped'; ms?: number }
  | { event: 'state'; state: SourceState }
  | { event: 'progress'; files: number; rawBytes: number; wireBytes: number; seconds: number; wireBytesPerSecond: number }
  /** A streamed pre-copy round is on the target (sent while the tree runs); rawBytes: image bytes sent so far. */
  | { event: 'pre-copy round'; round: number; pageBytes: number; imageBytes: number; sendMs: number; rawBytes: number }
  | { event: 'done'; summary: MigrateSummary };

/** The state the steps share (one per migration). */
export interface MigrateState {
  opts: MigrateOptions;
  targetDir: string;
  label: string;
  startedAt: bigint;
  endpoint?: Endpoint;
  tx?: SourceTransaction;
  dump?: DumpState;
  streamStartedAt?: bigint;
  streamEndedAt?: bigint;
  ready?: Record<string, unknown>;
  running?: Record<string, unknown>;
  progress?: SendProgress;
  steps: { title: string; ms: number }[];
  /** When each step ended (hrtime). */
  stepEnds: Map<string, bigint>;
  /** A container: its cgroup directories on the source (removed once the target runs it). */
  ownCgroups?: string[];
  summary?: MigrateSummary;
  /** The target's Reserved (bytes), as the source had it before the freeze. */
  reservedAtFreeze?: number;
}

const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
/** Progress events at most this often: enough to watch, few enough not to cost anything. */
const PROGRESS_EVERY_MS = 250;

export function newMigrateState(opts: MigrateOptions): MigrateState {
  const byName = opts.dump?.container ?? opts.dump?.cgroup;
  if (byName === undefined && (!Number.isInteger(opts.pid) || opts.pid <= 0)) throw new UsageError(`--pid must be a process id, got ${String(opts.pid)}`);
  if (byName !== undefined && opts.pid) throw new UsageError('give one of --pid, --container and --cgroup');
  if (!opts.endpoint && !opts.to) throw new UsageError('--to is required: [user@]HOST[:port] of the target');
  const what = opts.dump?.container ?? (opts.dump?.cgroup !== undefined ? 'cgroup' : String(opts.pid));
  const targetDir = opts.targetDir ?? `/var/tmp/godwit-migrate-${what.replace(/[^\w.-]/g, '_')}-${Date.now()}`;
  if (!targetDir.startsWith('/')) throw new UsageError(`--target-dir ${targetDir}: give an absolute path on the target`);
  targetContainerArgs(opts.target); // refuses a value that cannot travel on the command line, before connecting
  return { opts, targetDir, label: opts.endpoint?.label ?? opts.to!, startedAt: process.hrtime.bigint(), steps: [],
    stepEnds: new Map() };
}

async function connect(s: MigrateState): Promise<Endpoint> {
  const o = s.opts;
  if (o.endpoint) return o.endpoint;
  const ssh: SshTiming = {};
  if (o.timeouts?.connectMs !== undefined) ssh.connectTimeoutMs = o.timeouts.connectMs;
  if (o.timeouts?.keepaliveMs !== undefined) ssh.keepaliveIntervalMs = o.timeouts.keepaliveMs;
  if (o.timeouts?.keepaliveCountMax !== undefined) ssh.keepaliveCountMax = o.timeouts.keepaliveCountMax;
  return connectTarget(o.to!, o, ssh);
}

/**
 * How long the tree may keep running while the target faults its reserve in (about 2-4 s per GiB on these VMs,
 * where fresh memory waits for the hypervisor); past it the freeze goes ahead and the reserve finishes meanwhile.
 */
const RESERVE_WAIT_MS = 30_000;

/** Before the freeze: the target's reserve is faulted in (its Reserved), so none of that runs in the downtime. */
async function awaitTargetReserve(s: MigrateState, progress: (line: string) => void): Promise<void> {
  const t0 = process.hrtime.bigint();
  progress('waiting for the target to fault in the memory of the restore');
  const bytes = await s.tx!.sender!.targetReserved(RESERVE_WAIT_MS);
  if (bytes !== undefined) s.reservedAtFreeze = bytes;
  const waited = Number(process.hrtime.bigint() - t0) / 1e6;
  progress(bytes === undefined ? `the target did not say within ${waited.toFixed(0)} ms: freezing` :
    `the target holds ${(bytes / 2 ** 20).toFixed(0)} MiB for the restore (waited ${waited.toFixed(0)} ms)`);
}

function targetArgs(o: MigrateOptions): string[] {
  const a: string[] = [];
  if (o.newPidns) a.push('--new-pidns');
  if (o.keepImages) a.push('--keep-images');
  if (o.timeouts?.idleMs !== undefined) a.push('--idle-timeout', String(Math.max(1, Math.round(o.timeouts.idleMs / 1000))));
  // The target faults the tree's memory in while the source prepares and streams, so that its restore does not pay
  // for fresh memory in the downtime (migrate/reserve.ts). With pre-copy the rounds give it all the time it needs.
  // Without, it runs while the source faults in its own page buffer, before the freeze (1 GiB plain, quiet
  // machine, alternating pairs: downtime 2.45-3.31 s with it, 3.41-3.74 s without; the page buffer took 1.4-4.0 s
  // instead of 0.7-1.0 s, the workload still running). It once cost more than it saved, while the target still
  // wrote these images through the page cache, which wanted fresh memory at the same time (1 GiB plain at load 9:
  // target rebuild 1.2-1.9 s with it, 0.9-1.3 s without); they are written O_DIRECT now.
  const mem = treeMemoryBytes(o);
  if (mem) a.push('--reserve-memory', String(mem));
  // A streamed pre-copy's rounds arrive while the tree runs: through the target's page cache, so its restore reads
  // them from memory. Otherwise every page arrives while the tree is frozen, and the target writes them O_DIRECT.
  if (o.dump?.preCopy && (o.dump.preCopyChain ?? true)) a.push('--cache-images');
  a.push(...targetContainerArgs(o.target));
  return a;
}

/** A listr task that records its time and reports start/done as events. */
function timed<C>(s: MigrateState, t: ListrTask<C>): ListrTask<C> {
  const title = String(t.title);
  return {
    ...t,
    task: async (ctx, task) => {
      s.opts.onEvent?.({ event: 'step', step: title, status: 'start' });
      const t0 = process.hrtime.bigint();
      const r = await (t.task as (c: C, tk: typeof task) => unknown)(ctx, task);
      const end = process.hrtime.bigint();
      const took = ms(t0, end);
      s.stepEnds.set(title, end);
      s.steps.push({ title, ms: took });
      s.opts.onEvent?.({ event: 'step', step: title, status: 'done', ms: took });
      return r as never;
    },
  };
}

const mb = (n: number) => (n / 1e6).toFixed(1);

/** The dump's pre-copy options with a 'pre-copy round' event after each streamed round. */
function roundEvents(s: MigrateState, pc: true | PreCopyOptions): PreCopyOptions {
  const o = pc === true ? {} : pc;
  return {
    ...o,
    onRound: async (r) => {
      const sent = s.dump?.roundsSent.find((x) => x.round === r.round);
      if (sent) s.opts.onEvent?.({ event: 'pre-copy round', round: sent.round, pageBytes: sent.pageBytes, imageBytes: sent.imageBytes,
        sendMs: sent.sendMs, rawBytes: s.progress?.rawBytes ?? 0 });
      await o.onRound?.(r);
    },
  };
}

/** The steps; run them with one Listr (see migrate()) and call abortMigrate() if it fails. */
export function migrateTasks(s: MigrateState): ListrTask[] {
  const o = s.opts;
  let lastShown = 0;
  const onProgress = (p: SendProgress, task?: { title: string }) => {
    s.progress = p;
    const now = Date.now();
    if (now - lastShown < PROGRESS_EVERY_MS) return;
    lastShown = now;
    const seconds = s.streamStartedAt ? ms(s.streamStartedAt, process.hrtime.bigint()) / 1000 : 0;
    const rate = seconds > 0 ? p.wireBytes / seconds : 0;
    o.onEvent?.({ event: 'progress', files: p.files, rawBytes: p.rawBytes, wireBytes: p.wireBytes, seconds, wireBytesPerSecond: rate });
    if (task) task.title = `checkpoint and stream: ${mb(p.wireBytes)} MB sent, ${mb(rate)} MB/s`;
  };
  let streamTask: { title: string } | undefined;
  return [
    timed(s, {
      title: `connect to ${s.label}, start godwit receive there`,
      task: async () => {
        s.endpoint = await connect(s);
        s.label = s.endpoint.label;
        s.tx = new SourceTransaction({
          endpoint: s.endpoint,
          dir: s.targetDir,
          // Exactly one of these runs, at most once (the transaction's rules).
          source: {
            resume: async () => {
              if (s.dump) await abortDump(s.dump);
            },
            kill: async () => {
              if (s.dump!.container) await endSourceContainer(s.dump!, killTree, s.ownCgroups ?? []);
              else await killTree(s.dump!);
            },
          },
          targetArgs: targetArgs(o),
          send: { onProgress: (p) => onProgress(p, streamTask) },
          ...(o.timeouts ? { timeouts: o.timeouts } : {}),
          ...(o.signal ? { signal: o.signal } : {}),
          ...(o.window !== undefined ? { window: o.window } : {}),
          onState: (state) => o.onEvent?.({ event: 'state', state }),
        });
        await s.tx.open();
      },
    }),
    timed(s, {
      title: 'checkpoint and stream',
      task: (_ctx, task) => {
        streamTask = task;
        s.streamStartedAt = process.hrtime.bigint();
        s.dump = newDumpState({
          pid: o.pid,
          dir: `${s.label}:${s.targetDir}`,
          ...o.dump,
          ...(o.dump?.preCopy ? { preCopy: roundEvents(s, o.dump.preCopy), preCopyChain: o.dump.preCopyChain ?? true } : {}),
          keepFrozen: true,
          output: new StreamImageOutput(s.tx!.sender!, { options: { command: 'migrate', pid: o.pid } }),
          beforeFreeze: (progress) => awaitTargetReserve(s, progress),
        });
        // 'resume' and 'kill' never run here (keepFrozen: the transaction decides): not shown.
        const steps = dumpTasks(s.dump).filter((t) => t.title !== 'resume' && t.title !== 'kill');
        steps.push({
          title: 'container: frozen (cgroup freezer) until the target runs it',
          skip: () => !s.dump!.container && 'not a container',
          task: async () => {
            const d = s.dump!;
            s.ownCgroups = ownCgroupDirs(d.container!, (d.tree?.processes ?? []).map((p) => p.pid));
            await holdFrozen(d);
          },
        });
        return task.newListr(steps.map((t) => timed(s, t)), { exitOnError: true });
      },
    }),
    timed(s, {
      title: 'target: check the files',
      task: async () => {
        await s.tx!.finishStream();
        s.streamEndedAt = process.hrtime.bigint();
      },
    }),
    timed(s, {
      title: 'target: restore, held stopped',
      task: async (_ctx, task) => {
        s.ready = await s.tx!.waitReady();
        const rms = Number(s.ready.restoreMs ?? 0);
        task.title = `target: restored in ${rms.toFixed(0)} ms, held stopped`;
      },
    }),
    timed(s, {
      title: 'commit: the target runs it, the source tree ends',
      task: async () => {
        const r = await s.tx!.commit();
        s.running = r.running;
        s.progress = r;
      },
    }),
  ];
}

/**
 * After a failed list: applies the transaction's rules (source resumed before Commit, kept stopped when in doubt)
 * and returns the error to report. Never throws.
 */
export async function abortMigrate(s: MigrateState, err: unknown): Promise<Error> {
  let out: unknown = err;
  if (s.tx) {
    try {
      await s.tx.fail(err);
    } catch (e) {
      out = e;
    }
  }
  if (out instanceof InDoubtError && s.dump?.holding) {
    out = await keepStopped(s.dump, out);
  } else if (s.dump) {
    await abortDump(s.dump); // not frozen any more, or never frozen: lets go of everything (idempotent)
  }
  s.endpoint?.close();
  return out instanceof Error ? out : new GodwitError(String(out));
}

/**
 * In doubt: the ptrace hold ends with this process, so each process is sent SIGSTOP while still held; once let go
 * it enters a job-control stop and stays there until someone decides (SIGCONT or SIGKILL).
 */
async function keepStopped(d: DumpState, err: InDoubtError): Promise<Error> {
  const pids = (d.tree?.processes ?? []).filter((p) => !p.zombie).map((p) => p.pid);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGSTOP');
    } catch {
      // gone: nothing to keep
    }
  }
  await abortDump(d);
  return new InDoubtError(`${err.message}. The source processes ${pids.join(' ')} are stopped (SIGSTOP): ` +
    `if the target does not run the workload, \`kill -CONT ${pids.join(' ')}\`; if it does, \`kill -KILL ${pids.join(' ')}\``,
  { cause: err.cause });
}

/** After a successful list: the helper let go, the summary made. */
export async function finishMigrate(s: MigrateState): Promise<MigrateSummary> {
  const dump = await finishDump(s.dump!);
  s.endpoint?.close();
  const end = process.hrtime.bigint();
  const tx = s.tx!;
  const p = s.progress!;
  const streamMs = s.streamStartedAt && s.streamEndedAt ? ms(s.streamStartedAt, s.streamEndedAt) : 0;
  const pagesRead = s.stepEnds.get('dump pages');
  const transferMs = pagesRead && s.streamEndedAt ? ms(pagesRead, s.streamEndedAt) : streamMs;
  const running = s.running ?? {};
  s.summary = {
    pid: s.dump!.options.pid,
    target: s.label,
    targetDir: s.targetDir,
    targetRootPid: Number(running.rootPid ?? 0),
    targetPids: (running.pids ?? {}) as Record<string, number>,
    downtimeMs: s.dump!.frozenAt && tx.runningAt ? ms(s.dump!.frozenAt, tx.runningAt) : 0,
    totalMs: ms(s.startedAt, end),
    streamMs,
    transferMs,
    restoreMs: Number(s.ready?.restoreMs ?? 0),
    targetTimingsMs: (s.ready?.timingsMs ?? {}) as Record<string, number>,
    ...(s.ready?.reserve ? { targetReserve: s.ready.reserve as { bytes: number; heldBytes: number } } : {}),
    ...(s.reservedAtFreeze !== undefined ? { targetReservedAtFreeze: s.reservedAtFreeze } : {}),
    commitMs: tx.commitAt && tx.runningAt ? ms(tx.commitAt, tx.runningAt) : 0,
    files: p.files,
    rawBytes: p.rawBytes,
    wireBytes: p.wireBytes,
    wireBytesPerSecond: transferMs > 0 ? p.wireBytes / (transferMs / 1000) : 0,
    pageBytes: dump.pageBytes,
    ...(dump.preCopy?.sent?.length ? { preCopy: preCopySent(dump.preCopy.sent, p.rawBytes, dump.preCopy.finalPageBytes ?? 0) } : {}),
    dump,
    steps: s.steps,
  };
  s.opts.onEvent?.({ event: 'done', summary: s.summary });
  return s.summary;
}

function preCopySent(rounds: RoundSent[], rawBytes: number, finalPageBytes: number): NonNullable<MigrateSummary['preCopy']> {
  const streamedBytes = rounds.reduce((n, r) => n + r.imageBytes, 0);
  return { rounds, streamedBytes, afterFreezeBytes: rawBytes - streamedBytes, afterFreezePageBytes: finalPageBytes };
}

export type Renderer = 'default' | 'simple' | 'silent';

/** The whole migration; the library entry point (cli/migrate.ts, containers, tests). */
export async function migrate(options: MigrateOptions, renderer: Renderer = 'silent'): Promise<MigrateSummary> {
  const s = newMigrateState(options);
  // listr2's own SIGINT handler would exit(127) on the spot, skipping the transaction's clean-up: Ctrl-C goes
  // through options.signal instead.
  const list = new Listr(migrateTasks(s), { renderer, exitOnError: true, registerSignalListeners: false,
    rendererOptions: { collapseErrors: false } } as never);
  try {
    await list.run();
  } catch (err) {
    throw await abortMigrate(s, err);
  }
  return finishMigrate(s);
}

/** One line for people. */
export function describeSummary(r: MigrateSummary): string {
  const pc = r.preCopy;
  return `migrated pid ${r.pid} to ${r.target} (root pid ${r.targetRootPid} there): downtime ${r.downtimeMs.toFixed(0)} ms, ` +
    `total ${(r.totalMs / 1000).toFixed(2)} s; ${mb(r.pageBytes)} MB of memory, ${mb(r.wireBytes)} MB on the wire ` +
    `(${mb(r.wireBytesPerSecond)} MB/s once the pages were read); target restore ${r.restoreMs.toFixed(0)} ms` +
    (pc ? `; pre-copy: ${pc.rounds.length} round(s), ${mb(pc.streamedBytes)} MB sent while running, ` +
      `${mb(pc.afterFreezeBytes)} MB after the freeze (${mb(pc.afterFreezePageBytes)} MB of changed pages)` : '') +
    (r.dump.refreeze ? `; ${refreezeText(r.dump.refreeze)}` : '');
}
