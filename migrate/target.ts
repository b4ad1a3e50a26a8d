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
import type { RestoreContext } from '../restore/context';
import { migrateTarget, RestoredTree, TargetState } from '../transport/migrate-channel';
import type { ReceiveResult } from '../transport/receive';
import { stdioChannel } from '../transport/stdio';
import type { Channel } from '../transport/wire';
import { GodwitError } from '../util/errors';
import { watchIdle } from './idle';
import { linkPreDumpChain } from '../images/pagechain';

export interface ReceiveMigrationOptions {
  dir: string;
  /** Restore into a new PID namespace (when the workload's PIDs may be taken here). */
  newPidns?: boolean;
  /** Keep the images after the workload runs here (default: removed). */
  keepImages?: boolean;
  /**
   * Give up when the source sends nothing for this long while this side waits on it (a connection cut without a
   * reset is otherwise never noticed here). Default 60 s: longer than any pause of a healthy source.
   */
  idleTimeoutMs?: number;
  /** How long the restored tree is held waiting for Commit (default 10 min). */
  commitTimeoutMs?: number;
  window?: number;
  /** Default: this process's stdin/stdout (the SSH exec channel). */
  channel?: Channel;
  log?: (line: string) => void;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** Restores `dir` and holds the tree stopped; `signal` (the source gave up) stops the restore where it is. */
export async function restoreHeld(dir: string, opts: { newPidns?: boolean }, signal?: AbortSignal): Promise<RestoredTree> {
  // detach: the restorer is started in its own session and outlives this process as the tree's reaper.
  const s = newRestoreState({ dir, detach: true, hold: true, ...(opts.newPidns ? { newPidns: true } : {}) });
  // No listr2 SIGINT handler (it would exit on the spot): a signal ends the stream and the clean-up runs.
  const list = new Listr(restoreSteps(), { ctx: s, renderer: 'silent', exitOnError: true, registerSignalListeners: false });
  const onAbort = () => void abortRestore(s);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await list.run(s);
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
  const restoreMs = Object.values(s.timings).reduce((a, b) => a + b, 0);
  return {
    info: { rootPid, pids, pageBytes: s.pageBytes, restoreMs, timingsMs: s.timings,
      warnings: s.warnings.map((w) => `task ${w.pid}: ${w.message}`) },
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
      return { rootPid, pids, resumeMs: Number(process.hrtime.bigint() - t0) / 1e6 };
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
        await linkPreDumpChain(dir); // streamed pre-copy rounds (pre-1/, ...): the chain's links are made here
        return restoreHeld(dir, { ...(o.newPidns ? { newPidns: true } : {}) }, signal);
      },
      onState,
      ...(o.window !== undefined ? { window: o.window } : {}),
      ...(o.keepImages ? { keepImages: true } : {}),
      ...(o.commitTimeoutMs !== undefined ? { commitTimeoutMs: o.commitTimeoutMs } : {}),
      ...(o.log ? { log: o.log } : {}),
    });
  } finally {
    idle.stop();
  }
}
