/**
 * The target side of `godwit migrate`: `godwit receive --dir DIR --migrate` run over an SSH exec channel. It
 * receives the image stream (transport/receive.ts), restores the tree for real but holds it stopped (restore's
 * `hold`: every thread in a ptrace stop of the restorer), answers Ready, and lets it run only on the source's
 * Commit (transport/migrate-channel.ts has the transaction and its failure rules). On Abort, a lost connection, a
 * timeout or its own failure it kills the held tree and removes the images: it holds nothing afterwards.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { Listr } from 'listr2';
import { abortRestore, newRestoreState, restoreSteps, resumeHeld } from '../restore';
import { liveTasks } from '../restore/load';
import type { RestoreContext, RestoreOptions } from '../restore/context';
import { migrateTarget, RestoredTree, TargetState } from '../transport/migrate-channel';
import type { ReceiveResult } from '../transport/receive';
import { stdioChannel } from '../transport/stdio';
import type { Channel } from '../transport/wire';
import { GodwitError, UsageError } from '../util/errors';
import { cgroupRootOf } from '../restore/container';
import { vethConfigFromFlags } from '../restore/net';
import { watchIdle } from './idle';
import { linkPreDumpChain } from '../images/pagechain';
import { MemoryReserve } from './reserve';
import { warningText } from '../restore/creds';

export interface ReceiveMigrationOptions {
  dir: string;
  /** Restore into a new PID namespace (when the workload's PIDs may be taken here). */
  newPidns?: boolean;
  /** Keep the images after the workload runs here (default: removed). */
  keepImages?: boolean;
  /** A container: how this host sets it up (veth host end, cgroup root, where its rootfs is). */
  container?: TargetContainerOptions;
  /**
   * Give up when the source sends nothing for this long while this side waits on it (a connection cut without a
   * reset is otherwise never noticed here). Default 60 s: longer than any pause of a healthy source.
   */
  idleTimeoutMs?: number;
  /**
   * The workload's memory as the source saw it before the dump: held here while the stream runs and freed as the
   * restore starts, so the restore's pages land in memory the host has already faulted in (migrate/reserve.ts).
   */
  reserveBytes?: number;
  /** Write the images through the page cache (MigrateTargetOptions.cacheImages): they arrive while the tree runs. */
  cacheImages?: boolean;
  /** How long the restored tree is held waiting for Commit (default 10 min). */
  commitTimeoutMs?: number;
  window?: number;
  /** Default: this process's stdin/stdout (the SSH exec channel). */
  channel?: Channel;
  log?: (line: string) => void;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** This host's configuration for a container restored here (restore's options of the same names). */
export type TargetContainerOptions = Pick<RestoreOptions, 'veth' | 'cgroupRoot' | 'rootfsBase' | 'rootfsPath'>;

/** `godwit receive --migrate`'s container flags, as given. */
export interface ContainerTargetFlags {
  bridge?: string;
  peerAddr?: string;
  vethHostName?: string;
  cgroupRoot?: string;
  rootfsBase?: string;
  rootfsPath?: string;
}

/** The container flags as restore options (UsageError on a bad or conflicting one); undefined when none is given. */
export function containerTargetFlags(f: ContainerTargetFlags): TargetContainerOptions | undefined {
  const c: TargetContainerOptions = {};
  if (f.bridge !== undefined || f.peerAddr !== undefined || f.vethHostName !== undefined) c.veth = vethConfigFromFlags(f);
  if (f.cgroupRoot !== undefined) {
    try {
      c.cgroupRoot = cgroupRootOf(f.cgroupRoot);
    } catch (e) {
      throw new UsageError(`--cgroup-root: ${(e as Error).message}`);
    }
  }
  for (const [k, flag] of [['rootfsBase', '--rootfs-base'], ['rootfsPath', '--rootfs-path']] as const) {
    const v = f[k];
    if (v === undefined) continue;
    if (!v.startsWith('/')) throw new UsageError(`${flag} ${JSON.stringify(v)}: give an absolute path on this host`);
    c[k] = v;
  }
  return Object.keys(c).length ? c : undefined;
}

/** Restores `dir` and holds the tree stopped; `signal` (the source gave up) stops the restore where it is. */
export async function restoreHeld(dir: string, opts: { newPidns?: boolean; container?: TargetContainerOptions; memoryReady?: Promise<unknown> },
  signal?: AbortSignal): Promise<RestoredTree> {
  // detach: the restorer is started in its own session and outlives this process as the tree's reaper.
  const s = newRestoreState({ dir, detach: true, hold: true, ...(opts.newPidns ? { newPidns: true } : {}), ...opts.container,
    ...(opts.memoryReady ? { memoryReady: opts.memoryReady } : {}) });
  // No listr2 SIGINT handler (it would exit on the spot): a signal ends the stream and the clean-up runs.
  const list = new Listr(restoreSteps(), { ctx: s, renderer: 'silent', exitOnError: true, registerSignalListeners: false });
  const onAbort = () => void abortRestore(s);
  signal?.addEventListener('abort', onAbort, { once: true });
  // Wall time: the steps' own timings overlap (a container's parts are timed inside its step too).
  let restoreMs = 0;
  try {
    const t0 = process.hrtime.bigint();
    await list.run(s);
    restoreMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (signal?.aborted) throw new GodwitError('restore abandoned: the source gave up', { code: 'EABORTED' });
  } catch (err) {
    await abortRestore(s);
    throw new GodwitError(`restoring the tree on ${os.hostname()} failed (nothing of it is left)`, { cause: err,
      code: (err as { code?: string }).code ?? 'ERESTORE' });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  const rootPid = s.hostPids.get(s.set!.tasks[0]!.pid) ?? 0;
  const pids = Object.fromEntries([...s.hostPids].map(([img, host]) => [String(img), host]));
  return {
    info: { rootPid, pids, pageBytes: s.pageBytes, restoreMs, timingsMs: s.timings,
      warnings: s.warnings.map(warningText) },
    async resume() {
      const t0 = process.hrtime.bigint();
      // A task that died while held (killed from outside) would make the commit run half a workload.
      checkAlive(s, 'while held stopped');
      await resumeHeld(s);
      try {
        checkAlive(s, 'as it was let go');
      } catch (err) {
        killRestored(s);
        throw err;
      }
      // The restorer lives on as the tree's reaper (PID 1 of the new namespace with newPidns); node may exit.
      s.restorer!.detach();
      const runc = (s as { runc?: unknown }).runc;
      return { rootPid, pids, resumeMs: Number(process.hrtime.bigint() - t0) / 1e6, ...(runc ? { runc } : {}) };
    },
    async kill() {
      await abortRestore(s);
    },
  };
}

/** Process state letter from /proc (undefined: gone). */
function procState(pid: number): string | undefined {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** Every task that should run exists and is not dead or a zombie. */
function checkAlive(s: RestoreContext, when: string): void {
  for (const t of liveTasks(s.set!)) {
    const pid = s.hostPids.get(t.pid);
    const st = pid === undefined ? undefined : procState(pid);
    if (st === undefined || st === 'Z' || st === 'X') {
      throw new GodwitError(`restored task ${t.pid} (pid ${pid ?? '?'} here) died ${when}: the restored tree is killed`,
        { code: 'ESRCH' });
    }
  }
}

/** After the restorer let go: SIGKILL what it restored (children first). */
function killRestored(s: RestoreContext): void {
  for (const t of [...s.set!.tasks].reverse()) {
    const pid = s.hostPids.get(t.pid);
    if (pid === undefined) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** `godwit receive --migrate`: the whole target side. Resolves once the workload runs here. */
export async function receiveMigration(o: ReceiveMigrationOptions): Promise<ReceiveResult> {
  const raw = o.channel ?? stdioChannel('the source');
  const idle = watchIdle(raw, o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
  const reserve = o.reserveBytes ? MemoryReserve.start(o.reserveBytes, o.log) : undefined;
  const onState = (st: TargetState) => {
    // While restoring, the source is silent by design (it waits for Ready).
    if (st === 'restoring') idle.pause();
    else if (st === 'ready') idle.resume();
    else if (st === 'running' || st === 'discarded') idle.stop();
  };
  try {
    return await migrateTarget({
      dir: o.dir,
      channel: idle.channel,
      restore: async (dir, signal) => {
        // The restore's pages come from the memory the reserve frees: freeing 1 GiB takes ~0.1 s, while the steps
        // before the pages run (reading the images, the restorer, the tree).
        const memoryReady = reserve?.release();
        await linkPreDumpChain(dir); // streamed pre-copy rounds (pre-1/, ...): the chain's links are made here
        const tree = await restoreHeld(dir, { ...(o.newPidns ? { newPidns: true } : {}), ...(o.container ? { container: o.container } : {}),
          ...(memoryReady ? { memoryReady } : {}) }, signal);
        if (reserve) tree.info.reserve = { bytes: reserve.bytes, heldBytes: reserve.heldAtRelease ?? 0 };
        return tree;
      },
      onState,
      ...(o.window !== undefined ? { window: o.window } : {}),
      ...(o.keepImages ? { keepImages: true } : {}),
      ...(o.cacheImages ? { cacheImages: true } : {}),
      ...(reserve ? { memoryReserved: reserve.ready() } : {}),
      ...(o.commitTimeoutMs !== undefined ? { commitTimeoutMs: o.commitTimeoutMs } : {}),
      ...(o.log ? { log: o.log } : {}),
    });
  } finally {
    idle.stop();
    await reserve?.release();
  }
}
