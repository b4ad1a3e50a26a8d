/**
 * Shared by the coverage tests (shared memory, seccomp, ttys, process state): a workload started per test,
 * dumped (killed or left running), restored detached into a new PID namespace, and everything ended by pid
 * afterwards, also when the test fails.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump, DumpSummary } from '../checkpoint/dump';
import { decodeImage } from '../images';
import { restore, RestoreResult } from '../restore';
import { startWorkload, Workload, WorkloadName } from '../scenarios/workload';

export class Fixture {
  private live: Workload[] = [];
  private restored: RestoreResult[] = [];
  private dirs: string[] = [];

  async start(name: WorkloadName, args: string[] = []): Promise<Workload> {
    const w = await startWorkload(name, { args });
    this.live.push(w);
    return w;
  }

  imageDir(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-cov-'));
    this.dirs.push(d);
    return path.join(d, 'img');
  }

  /**
   * Dump (the tree killed), restore detached (into a new PID namespace unless newPidns is false: a tree in its
   * own PID namespace cannot be dumped again yet), point the workload at the new pids.
   */
  async cycle(w: Workload, o: { compress?: 'zstd' | 'none'; newPidns?: boolean } = {}): Promise<{ dir: string; summary: DumpSummary; restored: RestoreResult }> {
    const dir = this.imageDir();
    const summary = await dump({ pid: w.pid, dir, compress: o.compress ?? 'zstd' });
    expect(w.alivePids()).toEqual([]);
    const r = await restore({ dir, newPidns: o.newPidns ?? true, detach: true }, { silent: true });
    this.restored.push(r);
    w.setPids(w.pids.map((p) => r.pids.get(p) ?? p));
    return { dir, summary, restored: r };
  }

  /** A snapshot: dump with --leave-running. */
  async snapshot(w: Workload, compress: 'zstd' | 'none' = 'none'): Promise<{ dir: string; summary: DumpSummary }> {
    const dir = this.imageDir();
    const summary = await dump({ pid: w.pid, dir, compress, leaveRunning: true });
    return { dir, summary };
  }

  async cleanup(): Promise<void> {
    for (const w of this.live.splice(0)) await w.cleanup().catch(() => undefined);
    for (const r of this.restored.splice(0)) {
      for (const pid of r.pids.values()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      if (r.restorer) {
        try {
          process.kill(r.restorer.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await r.restorer.waitExit();
      }
    }
    for (const d of this.dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
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
