/**
 * Filesystem places CRIU's zdtm static tests found godwit losing (chroot, chroot-file, memfd02, proc-self,
 * unlink_fstat03), each reproduced by the fs-places workload: dump + kill + restore (and --leave-running
 * snapshots), then the workload checks itself.
 */
import { WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3fs-');
afterEach(() => fx.cleanup());

test.each([
  ['1', 'outside the root (chroot without chdir)'],
  ['2', 'inside the root'],
])('fs-places --chroot %s: a chrooted child keeps its root and a cwd %s, files opened before and after the chroot', async (mode) => {
  await fx.restoredPasses('fs-places', ['--chroot', mode]);
});

test('fs-places --chroot 1 snapshot: the chrooted child runs on unharmed', async () => {
  const w = await fx.start('fs-places', ['--chroot', '1']);
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([true, false])('fs-places --proc 1 (new pid namespace: %s): an fd on /proc/self/maps reads the restored task\'s own maps', async (newPidns) => {
  const w = await fx.start('fs-places', ['--proc', '1']);
  await fx.cycle(w, { newPidns });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
