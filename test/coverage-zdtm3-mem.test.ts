/**
 * Memory state that CRIU's conformance tests (zdtm static maps02, maps_file_prot, memfd00) found godwit losing on a
 * dump + kill + restore, each reproduced by a workload of ours that checks itself after the restore.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3-mem-');
afterEach(() => fx.cleanup());

test('shmem-more --mode: a memfd keeps the mode fchmod gave it (memfd.img mode) and its owner', async () => {
  const w = await fx.start('shmem-more', ['--mode', '1']);
  const { dir } = await fx.cycle(w);
  const moded = entries(dir, 'memfd.img').find((e) => e.name === 'moded');
  expect(Number(moded?.mode) & 0o7777).toBe(0o642);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
