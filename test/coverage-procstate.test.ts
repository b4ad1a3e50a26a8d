/**
 * File locks (flock, POSIX, OFD; a flock shared with a child through an inherited fd) and per-process settings
 * (child subreaper, dumpable, oom_score_adj, personality, rlimits, umask, names, parent-death signal) through
 * dump + kill + restore and a --leave-running snapshot.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-cov-');
afterEach(() => fx.cleanup());

test('file-locks: every lock is held again after a restore, by the right owner', async () => {
  await fx.restoredPasses('file-locks');
});

test('file-locks snapshot: each lock once in filelocks.img with its kind, type and range', async () => {
  const w = await fx.start('file-locks');
  const { dir } = await fx.snapshot(w);
  const locks = entries(dir, 'filelocks.img').map((l) => ({ flag: l.flag, type: l.type, start: Number(l.start), len: Number(l.len) }));
  expect(locks).toEqual(
    expect.arrayContaining([
      { flag: 2, type: 1, start: 0, len: 0 }, // exclusive flock (shared by parent and child: once)
      { flag: 2, type: 0, start: 0, len: 0 }, // shared flock
      { flag: 1, type: 1, start: 100, len: 100 }, // POSIX write lock
      { flag: 1, type: 0, start: 4096, len: 0 }, // POSIX read lock to EOF
      { flag: 4, type: 1, start: 0, len: 10 }, // OFD lock
    ]),
  );
  expect(locks).toHaveLength(5);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('proc-state: subreaper, dumpable, oom_score_adj, personality, rlimits, umask, names, pdeathsig come back', async () => {
  await fx.restoredPasses('proc-state');
});

test('proc-state: two cycles in the host PID namespace', async () => {
  const w = await fx.start('proc-state');
  await fx.cycle(w, { newPidns: false });
  await fx.cycle(w, { newPidns: false, compress: 'none' });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a process waiting in vfork() is refused before freezing, naming the pid', async () => {
  const w = await fx.start('proc-state', ['--vfork', '1']);
  const [, child] = w.pids;
  const dir = fx.imageDir();
  const err = await dump({ pid: w.pid, dir }).catch((e: Error) => e);
  expect((err as Error).message).toMatch(new RegExp(`pid ${child} process: waiting in vfork\\(\\)`));
  expect((err as Error).message).toContain('nothing was frozen');
  expect(fs.existsSync(dir)).toBe(false);
  expect(w.alivePids().sort()).toEqual([...w.pids].sort());
});

test('maps: mprotect-split, mremap-moved, grows-down and madvise-flagged regions keep shape, flags and bytes', async () => {
  await fx.restoredPasses('maps');
});
