/**
 * Process-tree state that CRIU's zdtm static tests (cpu-affinity0, zombie01, session02) found godwit losing, each
 * reproduced by a workload of ours: dump + kill + restore (and a --leave-running snapshot), then the workload
 * checks itself.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { describeError } from '../util/errors';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3-tree-');
afterEach(() => fx.cleanup());

test('proc-state --affinity: each thread keeps its own CPU affinity (main on the last CPU, its thread on CPU 0)', async () => {
  await fx.restoredPasses('proc-state', ['--affinity', '1']);
});

test('proc-state --affinity snapshot: core images carry the masks, the workload keeps running unharmed', async () => {
  const w = await fx.start('proc-state', ['--affinity', '1']);
  const { dir } = await fx.snapshot(w);
  const tc = entries(dir, `core-${w.pid}.img`)[0].thread_core as { allowed_cpus?: bigint[] };
  expect(tc.allowed_cpus?.length).toBeGreaterThan(0);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('sessions --dead-group: a zombie and a live process in a group whose leader exited keep that group', async () => {
  await fx.restoredPasses('sessions', ['--dead-group', '1']);
});

test('sessions --dead-group in the host PID namespace: the group is made again by a helper with its pid', async () => {
  const w = await fx.start('sessions', ['--dead-group', '1']);
  const { restored } = await fx.cycle(w, { newPidns: false });
  expect(restored.warnings ?? []).toEqual([]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('sessions --dead-session: a child in a session whose leader exited is refused at dump, before the freeze, the tree left running', async () => {
  const w = await fx.start('sessions', ['--dead-session', '1']);
  const dir = fx.imageDir();
  const err = await dump({ pid: w.pid, dir }).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  expect(describeError(err)).toMatch(/must start in session \d+, which its parent \d+ \(session \d+\) cannot hand down to it/);
  expect(fs.existsSync(path.join(dir, 'inventory.img'))).toBe(false);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('proc-state --ids: a task whose real, effective, saved and filesystem ids all differ keeps all eight (zdtm pid00)', async () => {
  // Also the dump: root may lack CAP_SYS_RESOURCE, and then reads such a task's rlimits from inside it.
  await fx.restoredPasses('proc-state', ['--ids', '1']);
});
