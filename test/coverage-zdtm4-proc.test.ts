/**
 * Process and memory state that CRIU's zdtm static tests of the fourth set (seccomp_filter_tsync, membarrier)
 * found godwit losing, each reproduced by a workload of ours: dump + kill + restore (and a --leave-running
 * snapshot), then the workload checks itself.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz4-proc-');
afterEach(() => fx.cleanup());

test('seccomp --tsync: threads sharing filters share them after restore, so a later TSYNC still works', async () => {
  await fx.restoredPasses('seccomp', ['--tsync', '1']);
});

test('seccomp --tsync in the host PID namespace, and a snapshot before it', async () => {
  const w = await fx.start('seccomp', ['--tsync', '1']);
  await fx.snapshot(w);
  await fx.cycle(w, { newPidns: false });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('proc-state --membarrier: the process stays registered for expedited membarrier() (zdtm membarrier)', async () => {
  await fx.restoredPasses('proc-state', ['--membarrier', '1']);
});

test('proc-state --membarrier snapshot: the core image carries the registrations', async () => {
  const w = await fx.start('proc-state', ['--membarrier', '1']);
  const { dir } = await fx.snapshot(w);
  const tc = entries(dir, `core-${w.pid}.img`)[0].tc as { membarrier_registration_mask?: number };
  expect(tc.membarrier_registration_mask! & 0x10).toBe(0x10); // MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('proc-state --groups: 900 supplementary groups (a /proc/PID/status longer than 8 KiB) are dumped and restored', async () => {
  await fx.restoredPasses('proc-state', ['--groups', '1']);
});

test('shmem-more --exec: a memfd holding a script can still be executed after restore (zdtm memfd04)', async () => {
  await fx.restoredPasses('shmem-more', ['--exec', '1']);
});

test('maps --guards: guard regions (MADV_GUARD_INSTALL) stay guards, the pages around them keep their data (zdtm maps12)', async () => {
  await fx.restoredPasses('maps', ['--guards', '1']);
});

test('maps --guards 2: guard regions of a big process (PAGEMAP_SCAN path) are left out of the pages and restored', async () => {
  const w = await fx.start('maps', ['--guards', '2']);
  const { dir } = await fx.snapshot(w);
  const vmas = entries(dir, `mm-${w.pid}.img`)[0].vmas as { status: number }[];
  expect(vmas.filter((v) => v.status === 1 << 16).length).toBe(4); // 1-2, 5, 100-103, the last page
  await fx.cycle(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('proc-state --thp-off: THP stays disabled for the restored mm (zdtm thp_disable)', async () => {
  await fx.restoredPasses('proc-state', ['--thp-off', '1']);
});

test('fd-sharing --pidfd 2: pidfds of reaped children come back (one inode per child, its exit status) (zdtm pidfd_dead)', async () => {
  const w = await fx.start('fd-sharing', ['--pidfd', '2']);
  await fx.cycle(w, { newPidns: false });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fd-sharing --pidfd 2 snapshot, then refused into a new PID namespace (the stand-ins live in this one)', async () => {
  const w = await fx.start('fd-sharing', ['--pidfd', '2']);
  const { dir } = await fx.snapshot(w);
  const dead = entries(dir, 'files.img').filter((f) => (f.pidfd as { nspid?: number } | undefined)?.nspid === -1);
  // Wait statuses: exit(7) twice (two descriptions of one child), SIGKILL once.
  expect(dead.map((f) => (f.pidfd as { exit_status?: number }).exit_status).sort((a, b) => a! - b!)).toEqual([9, 0x700, 0x700]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  await expect(fx.restore(w, dir)).rejects.toThrow(/reaped process: restoring it into a new PID namespace is not supported yet/);
});

test('maps --droppable: a MAP_DROPPABLE region stays droppable (zdtm maps11)', async () => {
  await fx.restoredPasses('maps', ['--droppable', '1']);
});
