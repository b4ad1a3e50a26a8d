/**
 * State that CRIU's own conformance tests (zdtm static) found godwit losing, each reproduced by a workload of
 * ours: dump + kill + restore (and a --leave-running snapshot), then the workload checks itself.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz-');
afterEach(() => fx.cleanup());

test('fown: SIGIO owners (process, process group), their signal and recorded credentials come back and still signal', async () => {
  const w = await fx.start('fown');
  await fx.cycle(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fown snapshot: files.img carries each owner once, the workload keeps running unharmed', async () => {
  const w = await fx.start('fown');
  const { dir } = await fx.snapshot(w);
  const owned = entries(dir, 'files.img')
    .map((e) => Object.values(e).find((v) => v && typeof v === 'object' && 'fown' in (v as object)) as { fown: Record<string, unknown> } | undefined)
    .map((x) => x?.fown)
    .filter((f) => f && Number(f.pid) !== 0);
  expect(owned).toEqual(
    expect.arrayContaining([
      expect.objectContaining({ pid: w.pid, pid_type: 1, signum: 29, uid: 0, euid: 1 }), // F_OWNER_PID, SIGIO
      expect.objectContaining({ pid: w.pid, pid_type: 2, signum: 35 }), // F_OWNER_PGRP, SIGRTMIN+1
    ]),
  );
  expect(owned).toHaveLength(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
