/**
 * Memory state that CRIU's conformance tests (zdtm static maps02, maps_file_prot, memfd00) found godwit losing on a
 * dump + kill + restore, each reproduced by a workload of ours that checks itself after the restore.
 */
import { entries, info, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3-mem-');
afterEach(() => fx.cleanup());

const O_ACCMODE = 3;
const O_RDWR = 2;
const VMA_FILE_SHARED = 1 << 7;

test('maps --advice: MAP_LOCKED, MADV_SEQUENTIAL, MADV_RANDOM and MADV_MERGEABLE regions keep their VmFlags (lo, sr, rr, mg) and data', async () => {
  const w = await fx.start('maps', ['--advice', '1']);
  // KSM is built into this machine's kernel: the mergeable region must be there to be checked.
  expect(info(w, 'mergeable')).toEqual(['yes']);
  const pid = w.pid;
  const { dir } = await fx.cycle(w);
  const madvs = entries(dir, `mm-${pid}.img`)[0].vmas as { madv?: bigint }[];
  for (const adv of [1, 2, 12]) expect(madvs.some((v) => ((v.madv ?? 0n) >> BigInt(adv)) & 1n)).toBe(true);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('maps --file-prot: a shared file mapping made read-only through a read-write fd (now closed) restores, its writable page takes writes and the other can become writable', async () => {
  const w = await fx.start('maps', ['--file-prot', '1']);
  const pid = w.pid;
  const { dir } = await fx.cycle(w);
  const shared = (entries(dir, `mm-${pid}.img`)[0].vmas as { status: number; fdflags?: number }[]).filter((v) => v.status & VMA_FILE_SHARED);
  expect(shared).toHaveLength(2);
  for (const v of shared) expect((v.fdflags ?? 0) & O_ACCMODE).toBe(O_RDWR);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('shmem-more --mode: a memfd keeps the mode fchmod gave it (memfd.img mode) and its owner', async () => {
  const w = await fx.start('shmem-more', ['--mode', '1']);
  const { dir } = await fx.cycle(w);
  const moded = entries(dir, 'memfd.img').find((e) => e.name === 'moded');
  expect(Number(moded?.mode) & 0o7777).toBe(0o642);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('maps --advice --file-prot snapshot: the workload keeps running unharmed', async () => {
  const w = await fx.start('maps', ['--advice', '1', '--file-prot', '1']);
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
