/**
 * seccomp: filter chains (per thread, TSYNC-shared, inherited by a child and extended there, with flags), strict
 * mode and no_new_privs through dump + kill + restore and through a --leave-running snapshot.
 */
import { entries, WorkloadFixture, info } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-cov-');
afterEach(() => fx.cleanup());

test('seccomp: every thread gets its filters back and strict mode holds (restore into a new PID namespace)', async () => {
  await fx.restoredPasses('seccomp');
});

test('seccomp: two dump/restore cycles in the host PID namespace', async () => {
  const w = await fx.start('seccomp');
  await fx.cycle(w, { newPidns: false });
  await fx.cycle(w, { newPidns: false, compress: 'none' });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('seccomp snapshot: each filter once, chains by prev, per-thread tops, flags, strict mode, no_new_privs', async () => {
  const w = await fx.start('seccomp');
  const [main, child, strict] = w.pids;
  const worker = Number(info(w, 'worker')[0]);
  const { dir } = await fx.snapshot(w);
  const filters = (entries(dir, 'seccomp.img')[0].seccomp_filters as Record<string, unknown>[]);
  expect(filters).toHaveLength(4); // A and B shared by all three, C (worker only), D (child only)
  const tc = (tid: number) => {
    const core = entries(dir, `core-${tid}.img`)[0];
    return core.thread_core as Record<string, unknown>;
  };
  const chain = (tid: number) => {
    const out: number[] = [];
    for (let i: number | undefined = Number(tc(tid).seccomp_filter); i !== undefined; i = filters[i].prev as number | undefined) out.push(i);
    return out;
  };
  for (const t of [main, worker, child]) expect(tc(t).seccomp_mode).toBe(2);
  expect(chain(main)).toHaveLength(2);
  expect(chain(worker)).toHaveLength(3);
  expect(chain(child)).toHaveLength(3);
  expect(chain(worker).slice(1)).toEqual(chain(main)); // TSYNC: the worker's chain continues main's
  expect(chain(child).slice(1)).toEqual(chain(main)); // inherited across fork
  expect(filters[chain(child)[0]].flags).toBe(2); // SECCOMP_FILTER_FLAG_LOG
  for (const f of filters) expect((f.filter as Buffer).length).toBe(7 * 8);
  expect(tc(strict).seccomp_mode).toBe(1);
  expect(tc(strict).seccomp_filter).toBeUndefined();
  for (const t of [main, worker, child, strict]) expect((tc(t).creds as Record<string, unknown>).no_new_privs).toBe(1);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
