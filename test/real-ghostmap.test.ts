/**
 * Mappings of deleted files, found by checkpointing real programs: Python's multiprocessing (a sem_open()ed
 * semaphore in /dev/shm, mapped MAP_SHARED by the parent and its forked workers, then unlinked) and a program whose
 * executable was deleted or replaced by a package upgrade. Each comes back from a ghost file: one inode per deleted
 * file, shared by every task that maps it. Workload `ghostmap`: dump -> kill -> restore (and a --leave-running
 * snapshot), then the workload checks itself.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { describeError } from '../util/errors';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-ghostmap-');
afterEach(() => fx.cleanup());

test('ghostmap --sem: a deleted semaphore and data file mapped MAP_SHARED by three processes stay one inode, with their content', async () => {
  const w = await fx.start('ghostmap', ['--sem', '1']);
  const { dir } = await fx.cycle(w);
  // One ghost per deleted inode (semaphore, data file), however many processes and mappings hold it.
  expect(fs.readdirSync(dir).filter((f) => /^ghost-file-\d+\.img$/.test(f)).length).toBe(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('ghostmap --sem: a snapshot (--leave-running) of the tree, which then goes on and verifies', async () => {
  const w = await fx.start('ghostmap', ['--sem', '1']);
  const { dir } = await fx.snapshot(w);
  const remaps = entries(dir, 'remap-fpath.img');
  expect(remaps.length).toBeGreaterThanOrEqual(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('ghostmap --exe 1: a program whose executable was deleted runs on from it after restore (text, data, RELRO, /proc/self/exe)', async () => {
  await fx.restoredPasses('ghostmap', ['--exe', '1']);
});

test('ghostmap --exe 2: a new file now at the executable\'s path is left alone; the deleted one comes back beside it', async () => {
  const w = await fx.start('ghostmap', ['--exe', '2']);
  await fx.snapshot(w);
  await fx.cycle(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  // The ghost's temporary name is gone again.
  expect(fs.readdirSync(w.dir).filter((f) => f.includes('godwit-ghost'))).toEqual([]);
});

test('the ghost limit applies to mapped deleted files: a clear error naming the mapping, the tree left running', async () => {
  const w = await fx.start('ghostmap', ['--exe', '1']);
  const dir = fx.imageDir();
  const err = await dump({ pid: w.pid, dir, ghostLimit: 4096 }).then(() => undefined, (e: unknown) => e);
  expect(describeError(err)).toMatch(
    new RegExp(`pid ${w.pid} (mapping [0-9a-f]+-[0-9a-f]+|executable): deleted file .*exe-copy holds \\d+ bytes, more than the ghost limit of 4096; raise --ghost-limit`),
  );
  expect(fs.existsSync(dir)).toBe(false);
  expect(w.alivePids()).toEqual(w.pids);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
