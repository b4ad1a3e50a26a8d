/**
 * The transport half of `godwit migrate`: a transaction in which the workload is never lost and never runs twice.
 *
 *   source (tree running, then frozen)           target (`godwit receive --migrate`)
 *   ---- Hello ---------------------------------->   (its memory reserve faulting in)
 *   <--- Reserved {bytes} ------------------------   the reserve is held: the source may freeze ('reserve' cap.)
 *   ---- FileBegin, Data..., FileEnd ------------>   files written, checked (synced if kept)
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
import type { Readable } from 'node:stream';
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
/** Time given to a failed stream's last frames (our Abort) before its connection is torn down. */
const FAILED_LINGER_MS = 300;

/**
 * The source side, one phase per method so that a caller can show each as a step (migrate/ nests the dump between
 * open() and finishStream()). Any failure goes to fail(), which applies the failure rules above.
 */
export class SourceTransaction {
  private readonly t: Required<MigrateTimeouts>;
  private readonly started = process.hrtime.bigint();
  private channel: Channel | undefined;
  private _sender: ImageSender | undefined;
  private committed = false;
  private running = false;
  private ready: Record<string, unknown> = {};
  state: SourceState = 'connecting';
  /** When Commit was sent and Running received (hrtime): the target's tree runs from before runningAt. */
  commitAt: bigint | undefined;
  runningAt: bigint | undefined;

  constructor(private readonly opts: Omit<MigrateSourceOptions, 'produce'>) {
    this.t = { ...DEFAULTS, ...opts.timeouts };
  }

  private set(s: SourceState): void {
    this.state = s;
    this.opts.onState?.(s);
  }

  get sender(): ImageSender | undefined {
    return this._sender;
  }

  /** Start `godwit receive --migrate` on the target and handshake (an old or missing godwit fails here). */
  async open(): Promise<ImageSender> {
    const o = this.opts;
    this.set('connecting');
    const args = ['receive', '--dir', o.dir, '--migrate', '--quiet', ...(o.targetArgs ?? [])];
    if (o.window !== undefined) args.push('--window', String(o.window));
    if (o.signal?.aborted) throw new GodwitError('interrupted before the migration started', { code: 'EABORTED' });
    this.channel = await o.endpoint.run(args);
    this._sender = await ImageSender.open(this.channel, { ...o.send, ...(o.signal ? { signal: o.signal } : {}) });
    this.watchFailure();
    this.set('streaming');
    return this._sender;
  }

  /**
   * Once the stream has failed (the target's Error, a lost connection, an abort), a producer may still be blocked
   * writing into a connection nobody reads any more: after a moment for our Abort to leave, the connection is torn
   * down so that every pending write fails at once and the failure path runs.
   */
  private watchFailure(): void {
    const timer = setInterval(() => {
      if (!this._sender?.failed || this.committed) return;
      clearInterval(timer);
      // Read the peer to its end (nobody else does now): an SSH channel reports 'close', which wakes a blocked
      // writer, only once its readable side has ended.
      if (this.channel) drainInput(this.channel.fromPeer);
      setTimeout(() => this.channel?.toPeer.destroy(), FAILED_LINGER_MS).unref();
    }, 50);
    timer.unref();
    this.stopWatch = () => clearInterval(timer);
  }

  private stopWatch: () => void = () => undefined;

  /** Everything is produced: end the stream and wait until the target has every file verified on disk. */
  async finishStream(): Promise<void> {
    this.set('verifying');
    await this._sender!.finish(this.t.completeMs);
    this.set('restoring');
  }

  /** Wait until the target has restored the tree and holds it stopped. */
  async waitReady(): Promise<Record<string, unknown>> {
    const ready = await this._sender!.waitFor([FrameType.Ready], this.t.restoreMs, `waiting for ${this.opts.endpoint.label} to restore`);
    this.ready = infoOf(ready);
    return this.ready;
  }

  /**
   * Commit: the target lets its tree run, says Running, and only then the source tree is killed. Before Commit an
   * interruption (signal) still aborts; after it only the outcome is awaited.
   */
  async commit(): Promise<MigrateResult> {
    const o = this.opts;
    if (o.signal?.aborted) throw new GodwitError('interrupted before commit', { code: 'EABORTED' });
    this.set('committing');
    this.stopWatch();
    const commitAt = (this.commitAt = process.hrtime.bigint());
    this.committed = true;
    await this._sender!.send({ type: FrameType.Commit });
    const running = await this._sender!.waitFor([FrameType.Running], this.t.runningMs,
      `waiting for ${o.endpoint.label} to resume the restored tree`);
    this.running = true;
    const end = (this.runningAt = process.hrtime.bigint());
    const seconds = Number(end - this.started) / 1e9;
    const commitSeconds = Number(end - commitAt) / 1e9;
    // The target runs it: the source tree must go.
    await o.source.kill();
    this.set('done');
    await this._sender!.close().catch(() => undefined);
    return { ...this._sender!.progress, ready: this.ready, running: infoOf(running), seconds, commitSeconds };
  }

  /**
   * The failure path (always throws): before Commit, Abort to the target, resume the source, then make sure the
   * target cleaned up (sweep one killed outright); after Commit, keep the source frozen unless the target
   * explicitly refused.
   */
  async fail(err: unknown): Promise<never> {
    const o = this.opts;
    const label = o.endpoint.label;
    const sender = this._sender;
    const channel = this.channel;
    if (this.running) {
      this.set('done');
      channel?.close();
      throw new MigrationFailedError(`the workload runs on ${label} now, but ending the source tree failed: ` +
        `${describeError(err)}; kill the source tree by hand`, { cause: err, code: 'EKILLSOURCE' });
    }
    const remoteRefusal = err instanceof RemoteError || sender?.failed instanceof RemoteError;
    if (this.committed && !remoteRefusal) {
      this.set('in-doubt');
      channel?.close();
      throw new InDoubtError(
        `the connection to ${label} was lost after the commit: the target may be running the workload. ` +
          `The source tree is kept frozen (neither resumed nor killed): check on ${label}, then kill or resume the source`,
        { cause: err },
      );
    }
    this.stopWatch();
    if (sender) sender.abort(describeError(err).split('\n')[0]!);
    else channel?.close();
    // Nobody reads the target's answers any more: drain them, or the connection cannot finish closing.
    if (channel) drainInput(channel.fromPeer);
    // Before Commit the target never runs the workload: resuming the source first is safe and shortens its stop.
    let resumeErr: unknown;
    try {
      await o.source.resume();
    } catch (e) {
      resumeErr = e;
    }
    // The target cleans up on Abort or EOF; one killed outright is swept.
    if (channel?.exited) await Promise.race([channel.exited, new Promise((r) => setTimeout(r, 15_000).unref())]);
    let sweepNote = '';
    if (sender) {
      try {
        const ch = await o.endpoint.run(['receive', '--dir', o.dir, '--discard']);
        drainInput(ch.fromPeer);
        ch.toPeer.end();
        await Promise.race([ch.exited, new Promise((r) => setTimeout(r, 15_000).unref())]);
        ch.close();
      } catch (sweepErr) {
        sweepNote = `; cleaning ${o.dir} on ${label} failed too (${describeError(sweepErr)}): ` +
          `the receiver there removes it when it notices the loss, or remove it by hand`;
      }
    }
    if (resumeErr !== undefined) {
      throw new MigrationFailedError(`migration to ${label} failed, and resuming the source failed: ${describeError(resumeErr)}`,
        { cause: err });
    }
    this.set('resumed');
    throw new MigrationFailedError(`migration to ${label} failed; the source was resumed as it was${sweepNote}`,
      { cause: err, code: (err as { code?: string }).code ?? 'EMIGRATE' });
  }
}

export async function migrateSource(opts: MigrateSourceOptions): Promise<MigrateResult> {
  const tx = new SourceTransaction(opts);
  try {
    const sender = await tx.open();
    await opts.produce(sender);
    await tx.finishStream();
    await tx.waitReady();
    return await tx.commit();
  } catch (err) {
    return tx.fail(err);
  }
}

/**
 * Reads and drops whatever else comes (a reader's 'readable' listener may be attached: resume() would then do
 * nothing, so read explicitly). An SSH channel emits 'close' only after its readable side has ended.
 */
function drainInput(input: Readable): void {
  const drop = () => {
    while (input.read() !== null);
  };
  input.on('readable', drop);
  drop();
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
  /**
   * Write large images through the page cache (default: O_DIRECT, see ReceiveOptions.directIo). For images that
   * arrive while the workload still runs (a streamed pre-copy): the restore then reads them from memory. Images
   * that arrive while it is frozen bypass the cache: copying them there would take CPU from the stream, in the
   * downtime, and the restorer reads an uncached pages file with O_DIRECT too.
   */
  cacheImages?: boolean;
  /**
   * This host's memory reserve for the restore (migrate/reserve.ts): resolves with the bytes held once faulted in.
   * Told to the source (Reserved), which freezes the tree only then, so that the faulting never runs in the
   * downtime. Absent: Reserved says 0 at once.
   */
  memoryReserved?: Promise<number>;
  log?: (line: string) => void;
}

export type TargetState = 'receiving' | 'restoring' | 'ready' | 'running' | 'discarded';

export async function migrateTarget(opts: MigrateTargetOptions & { onState?: (s: TargetState) => void }): Promise<ReceiveResult> {
  // Durable only when kept: the restore reads the images at once and removes them (ReceiveOptions.durable).
  const r = new ImageReceiver({ dir: opts.dir, channel: opts.channel, window: opts.window ?? DEFAULT_WINDOW, directIo: !opts.cacheImages,
    durable: !!opts.keepImages,
    onHandshake: (peer) => {
      if (!peer.caps.includes('reserve')) return;
      // Best effort: a stream that fails meanwhile reports that itself.
      void (opts.memoryReserved ?? Promise.resolve(0)).then((bytes) => r.send({ type: FrameType.Reserved, bytes })).catch(() => undefined);
    },
    ...(opts.log ? { log: opts.log } : {}) });
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
