/**
 * The scenario workloads through dump (`godwit dump`, the tree killed) and restore, each verifying its own state
 * afterwards: into a new PID namespace, into the host's, three cycles in a row, from compressed and plain images.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { restore, RestoreResult } from '../restore';
import { startWorkload, Workload, WorkloadName } from '../scenarios/workload';

const live: Workload[] = [];
const restored: RestoreResult[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const w of live.splice(0)) await w.cleanup().catch(() => undefined);
  for (const r of restored.splice(0)) {
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
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function imageDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-rw-'));
  dirs.push(d);
  return path.join(d, 'img');
}

/** Dump (killing the tree), restore, point the workload at the restored pids. */
async function cycle(w: Workload, opts: { newPidns: boolean; compress?: 'zstd' | 'none' }): Promise<RestoreResult> {
  const dir = imageDir();
  await dump({ pid: w.pid, dir, compress: opts.compress ?? 'zstd' });
  expect(w.alivePids()).toEqual([]);
  const r = await restore({ dir, newPidns: opts.newPidns, detach: true }, { silent: true });
  restored.push(r);
  w.setPids(w.pids.map((p) => r.pids.get(p) ?? p));
  return r;
}

async function start(name: WorkloadName, args: string[] = []): Promise<Workload> {
  const w = await startWorkload(name, { args });
  live.push(w);
  return w;
}

describe('dump, kill, restore into a new PID namespace: the workload verifies itself', () => {
  const passing: [WorkloadName, string[]][] = [
    ['mem-counter', ['--mib', '32']],
    ['threads', []],
    ['signals', []],
    ['timers', []],
    ['files', []],
    ['unix-sockets', []],
  ];
  test.each(passing)('%s', async (name, args) => {
    const w = await start(name, args);
    await cycle(w, { newPidns: true });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('pipe-tree: every process, pipe, FIFO, buffer size and the zombie come back', async () => {
    const w = await start('pipe-tree');
    const r = await cycle(w, { newPidns: true });
    expect(r.pids.size).toBe(6); // five processes and the zombie child main has not reaped
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('eventfd-epoll: counts, epoll ready set, signalfd queue and a working inotify watch come back', async () => {
    const w = await start('eventfd-epoll');
    await cycle(w, { newPidns: true });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

describe('more cycles', () => {
  test('mem-counter: three dump/restore cycles in a row, in the host PID namespace, plain CRIU pages', async () => {
    const w = await start('mem-counter', ['--mib', '16']);
    // Verifying ends a workload: three cycles, then one verification of the state that went through all.
    for (let i = 0; i < 3; i++) await cycle(w, { newPidns: false, compress: 'none' });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('threads: three cycles in a row in the host PID namespace (same pids and tids each time), zstd pages', async () => {
    const w = await start('threads');
    for (let i = 0; i < 3; i++) await cycle(w, { newPidns: false });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});
