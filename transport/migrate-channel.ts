/**
 * The transport half of `godwit migrate`: a transaction in which the workload is never lost and never runs twice.
 *
 *   source (frozen tree)                         target (`godwit receive --migrate`)
 *   ---- Hello / FileBegin, Data..., FileEnd ---->   files written, checked, synced
 *   ---- End ------------------------------------>
 *   <--- Complete --------------------------------   every file verified on disk
 *                                                    restore, the restored tree kept stopped
 *   <--- Ready {info} ----------------------------
 *   ---- Commit ---------------------------------->  resume the restored tree
 *   <--- Running {info} --------------------------
 *   kill the source tree; done                      done (images removed unless kept)
 *
 * Failure rules:
 * - Anything before the source sends Commit (connection lost, corrupt data, full disk, restore failed, timeout,
 *   Ctrl-C): the source sends Abort (best effort), resumes its tree as it was, and fails. The target, on Abort,
 *   EOF or its own error, kills any restored tree (never resumed) and removes everything it wrote; a target
 *   killed outright is swept afterwards by `godwit receive --discard`.
 * - After Commit: the target's explicit Error (resume failed; it kills its tree) lets the source resume. Silence
 *   (connection lost or timeout before Running) is "in doubt": the target may be running the workload, so the
 *   source is neither resumed nor killed but kept frozen, and the error says so. That window is one message long.
 */
import { GodwitError, describeError } from '../util/errors';
import { Endpoint } from './endpoint';
import { FrameType } from './frames';
import { DEFAULT_WINDOW, ImageReceiver, ReceiveResult } from './receive';
import { ImageSender, RemoteError, SendOptions, SendProgress } from './send';
import type { Channel } from './wire';

// ---------------------------------------------------------------------------------------------- source side

/** The frozen source tree, as checkpoint/ leaves it: exactly one of these is called, at most once. */
export interface FrozenSource {
  /** Let the tree run on as it was (every failure before the target runs it). */
  resume(): Promise<void>;
  /** The target runs the workload now: end the source tree. */
  kill(): Promise<void>;
}

export type SourceState =
  | 'connecting' | 'streaming' | 'verifying' | 'restoring' | 'committing' | 'done' | 'resumed' | 'in-doubt';

export interface MigrateTimeouts {
  /** From the end of the stream to the target's Complete (syncing the files). */
  completeMs?: number;
  /** From Complete to Ready (the target's restore). */
  restoreMs?: number;
  /** From Commit to Running (resuming the restored tree). */
  runningMs?: number;
}

export interface MigrateSourceOptions {
  endpoint: Endpoint;
  /** Image directory on the target (new or empty). */
  dir: string;
  /** Streams the images into the sender as they are produced (the dump). The tree is frozen by then. */
  produce: (sender: ImageSender) => Promise<void>;
  source: FrozenSource;
  timeouts?: MigrateTimeouts;
  /** Ctrl-C: aborts the migration until Commit is sent (after that only the outcome is awaited). */
  signal?: AbortSignal;
  onState?: (state: SourceState) => void;
  send?: SendOptions;
  window?: number;
  /** Extra arguments for the target's `godwit receive` (e.g. --keep-images). */
  targetArgs?: string[];
}

export interface MigrateResult extends SendProgress {
  /** Target's Ready and Running info (restored pids and what the restore reports). */
  ready: Record<string, unknown>;
  running: Record<string, unknown>;
  /** Seconds from the start of the stream to Running. */
  seconds: number;
  /** Seconds from Commit sent to Running received. */
  commitSeconds: number;
}

export class MigrationFailedError extends GodwitError {
  constructor(message: string, options: { cause: unknown; code?: string }) {
    super(message, options);
  }
}

/** Connection lost after Commit: the target may run the workload; the source is kept frozen. */
export class InDoubtError extends GodwitError {
  constructor(message: string, options: { cause: unknown }) {
    super(message, { ...options, code: 'EINDOUBT' });
  }
}

const DEFAULTS: Required<MigrateTimeouts> = { completeMs: 120_000, restoreMs: 300_000, runningMs: 60_000 };

export async function migrateSource(opts: MigrateSourceOptions): Promise<MigrateResult> {
  const t = { ...DEFAULTS, ...opts.timeouts };
  const started = process.hrtime.bigint();
  const set = (s: SourceState) => opts.onState?.(s);
  const args = ['receive', '--dir', opts.dir, '--migrate', '--quiet', ...(opts.targetArgs ?? [])];
  if (opts.window !== undefined) args.push('--window', String(opts.window));
  let channel: Channel | undefined;
  let sender: ImageSender | undefined;
  let committed = false;
  set('connecting');
  try {
    if (opts.signal?.aborted) throw new GodwitError('interrupted before the migration started', { code: 'EABORTED' });
    channel = await opts.endpoint.run(args);
    sender = await ImageSender.open(channel, { ...opts.send, ...(opts.signal ? { signal: opts.signal } : {}) });
    set('streaming');
    await opts.produce(sender);
    set('verifying');
    await sender.finish(t.completeMs);
    set('restoring');
    const ready = await sender.waitFor([FrameType.Ready], t.restoreMs, `waiting for ${opts.endpoint.label} to restore`);
    if (opts.signal?.aborted) throw new GodwitError('interrupted before commit', { code: 'EABORTED' });
    set('committing');
    const commitAt = process.hrtime.bigint();
    committed = true;
    await sender.send({ type: FrameType.Commit });
    const running = await sender.waitFor([FrameType.Running], t.runningMs, `waiting for ${opts.endpoint.label} to resume the restored tree`);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const commitSeconds = Number(process.hrtime.bigint() - commitAt) / 1e9;
    // The target runs it: the source tree must go. A failure to kill is reported, never "resumed".
    await opts.source.kill();
    set('done');
    await sender.close().catch(() => undefined);
    return { ...sender.progress, ready: infoOf(ready), running: infoOf(running), seconds, commitSeconds };
  } catch (err) {
    const remoteRefusal = err instanceof RemoteError || sender?.failed instanceof RemoteError;
    if (committed && !remoteRefusal) {
      set('in-doubt');
      channel?.close();
      throw new InDoubtError(
        `the connection to ${opts.endpoint.label} was lost after the commit: the target may be running the workload. ` +
          `The source tree is kept frozen (neither resumed nor killed): check on ${opts.endpoint.label}, then kill or resume the source`,
        { cause: err },
      );
    }
    if (sender) sender.abort(describeError(err).split('\n')[0]!);
    else channel?.close();
    // The target cleans up on Abort or EOF; one killed outright is swept.
    if (channel?.exited) await Promise.race([channel.exited, new Promise((r) => setTimeout(r, 15_000).unref())]);
    let sweepNote = '';
    if (sender) {
      try {
        const ch = await opts.endpoint.run(['receive', '--dir', opts.dir, '--discard']);
        ch.toPeer.end();
        await Promise.race([ch.exited, new Promise((r) => setTimeout(r, 15_000).unref())]);
        ch.close();
      } catch (sweepErr) {
        sweepNote = `; cleaning ${opts.dir} on ${opts.endpoint.label} failed too (${describeError(sweepErr)}): remove it by hand`;
      }
    }
    try {
      await opts.source.resume();
    } catch (resumeErr) {
      throw new MigrationFailedError(`migration to ${opts.endpoint.label} failed, and resuming the source failed: ${describeError(resumeErr)}`,
        { cause: err });
    }
    set('resumed');
    throw new MigrationFailedError(`migration to ${opts.endpoint.label} failed; the source was resumed as it was${sweepNote}`,
      { cause: err, code: (err as { code?: string }).code ?? 'EMIGRATE' });
  }
}

function infoOf(m: { type: FrameType } & Partial<{ info: Record<string, unknown> }>): Record<string, unknown> {
  return m.info ?? {};
}

// ---------------------------------------------------------------------------------------------- target side

/** A restored tree held stopped until the source commits. */
export interface RestoredTree {
  /** Shown to the source in Ready (pids, timings). */
  info: Record<string, unknown>;
  /** Let it run; the result is shown to the source in Running. */
  resume(): Promise<Record<string, unknown>>;
  /** Kill it (never resumed) and remove whatever the restore created. */
  kill(): Promise<void>;
}

export interface MigrateTargetOptions {
  dir: string;
  channel: Channel;
  window?: number;
  /** Restore from the received directory, leaving the tree stopped. Honour the signal (the source gave up). */
  restore: (dir: string, signal: AbortSignal) => Promise<RestoredTree>;
  /** How long to wait for Commit after Ready. */
  commitTimeoutMs?: number;
  /** Keep the images after a successful migration (default: remove them). */
  keepImages?: boolean;
  log?: (line: string) => void;
}

export type TargetState = 'receiving' | 'restoring' | 'ready' | 'running' | 'discarded';

export async function migrateTarget(opts: MigrateTargetOptions & { onState?: (s: TargetState) => void }): Promise<ReceiveResult> {
  const r = new ImageReceiver({ dir: opts.dir, channel: opts.channel, window: opts.window ?? DEFAULT_WINDOW, ...(opts.log ? { log: opts.log } : {}) });
  const set = (s: TargetState) => opts.onState?.(s);
  let tree: RestoredTree | undefined;
  const giveUp = new AbortController();
  set('receiving');
  try {
    const result = await r.receive();
    set('restoring');
    // Watch the source while restoring: an Abort or a lost connection stops waiting for Commit.
    const nextMsg = r.next();
    nextMsg.then(() => giveUp.abort(), () => giveUp.abort());
    tree = await opts.restore(r.dir, giveUp.signal);
    await r.send({ type: FrameType.Ready, info: tree.info });
    set('ready');
    let timer: NodeJS.Timeout | undefined;
    const m = await Promise.race([
      nextMsg,
      new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), opts.commitTimeoutMs ?? 600_000))),
    ]).finally(() => clearTimeout(timer));
    if (m === 'timeout') throw new GodwitError('the source did not commit in time', { code: 'ETIMEDOUT' });
    if (!m) throw new GodwitError('the source closed the connection before committing', { code: 'ECONNLOST' });
    if (m.type === FrameType.Abort) throw new GodwitError(`the source aborted: ${m.reason}`, { code: 'EABORTED' });
    if (m.type !== FrameType.Commit) throw new GodwitError(`expected Commit, got ${FrameType[m.type]}`, { code: 'EPROTO' });
    const running = await tree.resume();
    tree = undefined; // it runs: from here on, nothing on this side may kill it
    set('running');
    await r.send({ type: FrameType.Running, info: running });
    if (!opts.keepImages) await r.discard();
    r.endOutput();
    return result;
  } catch (err) {
    opts.log?.(`migration abandoned: ${describeError(err)}`);
    r.reportError(err);
    giveUp.abort();
    if (tree) await tree.kill().catch((e) => opts.log?.(`killing the restored tree failed: ${describeError(e)}`));
    await r.discard();
    set('discarded');
    r.endOutput();
    throw err;
  }
}
