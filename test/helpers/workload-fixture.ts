/**
 * The harness the dump/restore tests share (restore-workloads, inet, pre-copy, the coverage tests): workloads started
 * per test, dumped (killed or left running), restored detached, and everything ended by pid afterwards, also when
 * the test fails. Starting, verifying and killing a workload is scenarios/workload.ts; this adds the image
 * directories and the restored trees (their restorer is a detached reaper that must be killed and waited for).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump, DumpSummary } from '../../checkpoint/dump';
import { decodeImage } from '../../images';
import { restore, RestoreOptions, RestoreResult } from '../../restore';
import { startWorkload, Workload, WorkloadName } from '../../scenarios/workload';

function killIfThere(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export class WorkloadFixture {
  private live: Workload[] = [];
  private restored: RestoreResult[] = [];
  private dirs: string[] = [];

  /** PREFIX names the temporary directories (e.g. 'godwit-inet-'), so that a leftover says which test left it. */
  constructor(private readonly prefix = 'godwit-test-') {}

  /** prefix: a command that execs the workload in place (e.g. nsenter into a namespace), as startWorkload takes it. */
  async start(name: WorkloadName, args: string[] = [], o: { prefix?: string[] } = {}): Promise<Workload> {
    const w = await startWorkload(name, { args, ...(o.prefix ? { prefix: o.prefix } : {}) });
    this.live.push(w);
    return w;
  }

  /** A path for an image directory that does not exist yet (its parent is removed by cleanup). */
  imageDir(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), this.prefix));
    this.dirs.push(d);
    return path.join(d, 'img');
  }

  /**
   * Restores DIR detached (into a new PID namespace unless newPidns is false) and points W at the restored pids.
   */
  async restore(w: Workload, dir: string, o: { newPidns?: boolean; joinNs?: RestoreOptions['joinNs'] } = {}): Promise<RestoreResult> {
    const r = await restore({ dir, newPidns: o.newPidns ?? true, detach: true, ...(o.joinNs ? { joinNs: o.joinNs } : {}) }, { silent: true });
    this.restored.push(r);
    w.setPids(w.pids.map((p) => r.pids.get(p) ?? p));
    return r;
  }

  /**
   * Dump (the tree killed), restore detached (into a new PID namespace unless newPidns is false: a tree in its
   * own PID namespace cannot be dumped again yet), point the workload at the new pids.
   */
  async cycle(
    w: Workload,
    o: { compress?: 'zstd' | 'none'; newPidns?: boolean } = {},
  ): Promise<{ dir: string; summary: DumpSummary; restored: RestoreResult }> {
    const dir = this.imageDir();
    const summary = await dump({ pid: w.pid, dir, compress: o.compress ?? 'zstd' });
    expect(w.alivePids()).toEqual([]);
    const restored = await this.restore(w, dir, o);
    return { dir, summary, restored };
  }

  /** Starts workload `name`, dumps, kills and restores it (cycle), and expects it to check itself and pass. */
  async restoredPasses(name: WorkloadName, args: string[] = []): Promise<Workload> {
    const w = await this.start(name, args);
    await this.cycle(w);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
    return w;
  }

  /** A snapshot: dump with --leave-running. */
  async snapshot(w: Workload, compress: 'zstd' | 'none' = 'none'): Promise<{ dir: string; summary: DumpSummary }> {
    const dir = this.imageDir();
    const summary = await dump({ pid: w.pid, dir, compress, leaveRunning: true });
    return { dir, summary };
  }

  /**
   * Ends every workload and restored tree and removes the directories. Goes on past a failure so that the rest is
   * still cleaned up, then throws the first one: a process that would not die fails the test instead of lingering.
   */
  async cleanup(): Promise<void> {
    let first: unknown;
    const attempt = async (step: () => unknown): Promise<void> => {
      try {
        await step();
      } catch (err) {
        first ??= err;
      }
    };
    for (const w of this.live.splice(0)) await attempt(() => w.cleanup());
    for (const r of this.restored.splice(0)) {
      for (const pid of r.pids.values()) await attempt(() => killIfThere(pid));
      const restorer = r.restorer;
      if (restorer) {
        await attempt(() => killIfThere(restorer.pid));
        await attempt(() => restorer.waitExit());
      }
    }
    for (const d of this.dirs.splice(0)) await attempt(() => fs.rmSync(d, { recursive: true, force: true }));
    if (first !== undefined) throw first;
  }
}

/** Entries of one image file of a dump (decoded as `godwit decode` does). */
export function entries(dir: string, file: string): Record<string, unknown>[] {
  return decodeImage(fs.readFileSync(path.join(dir, file)), file).entries.map((e) => e.msg as Record<string, unknown>);
}

/** The ready-file value of `key` split on spaces. */
export function info(w: Workload, key: string): string[] {
  const v = (w.info as Record<string, string | undefined>)[key];
  if (v === undefined) throw new Error(`workload ${w.pid} reported no ${key}`);
  return v.split(' ');
}
