/**
 * More state that CRIU's conformance tests (zdtm static, a second set) found godwit losing, each reproduced by a
 * workload of ours: dump + kill + restore (and a --leave-running snapshot), then the workload checks itself.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { readStatus } from '../checkpoint/proc/status';
import { describeError } from '../util/errors';
import { entries, info, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz2-');
afterEach(() => fx.cleanup());

test('fd sharing: two alike opens of one file stay two descriptions, dups and inherited fds one; self-connected and one-way connected datagram sockets; a stream socket whose peer closed keeps its bytes', async () => {
  await fx.restoredPasses('fd-sharing');
});

test('fd sharing snapshot: files.img holds the data file twice (two descriptions), the workload keeps running unharmed', async () => {
  const w = await fx.start('fd-sharing');
  const { dir } = await fx.snapshot(w);
  const data = entries(dir, 'files.img').filter((e) => String((e.reg as { name?: string } | undefined)?.name ?? '').endsWith('/data'));
  expect(data).toHaveLength(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([
  ['1', 'fd table (CLONE_FILES)'],
  ['2', 'cwd, root and umask (CLONE_FS)'],
])('fd sharing --share %s: a child sharing its %s with its parent is refused by name, the tree left running', async (share, what) => {
  const w = await fx.start('fd-sharing', ['--share', share]);
  const sharer = Number(info(w, 'sharer')[0]);
  const err = await dump({ pid: w.pid, dir: fx.imageDir() }).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  expect(describeError(err)).toContain(`pid ${sharer} shares its ${what} with its parent ${w.pid}`);
  expect(readStatus(sharer).state).not.toBe('T');
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('ghosts: an unlinked sparse file keeps its holes and its two opens one inode, an unlinked FIFO its data, mode, owner and second open, a removed open directory stays one', async () => {
  await fx.restoredPasses('ghosts');
});

test('ghosts snapshot: the FIFO and the directory travel as ghost files, the workload keeps running unharmed', async () => {
  const w = await fx.start('ghosts');
  const { dir } = await fx.snapshot(w);
  const modes = fs
    .readdirSync(dir)
    .filter((f) => f.startsWith('ghost-file-'))
    .map((f) => Number(entries(dir, f)[0].mode) & 0o170000);
  expect(modes.sort((a, b) => a - b)).toEqual([0o010000, 0o040000, 0o100000]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('sockopts: SOL_SOCKET options of never-connected TCP and unix sockets, a root task’s supplementary groups and login uid come back', async () => {
  const w = await fx.start('sockopts');
  expect(info(w, 'loginuid')).toEqual(['set']); // this machine's kernel has audit: the check must run here
  await fx.cycle(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([
  ['0', 'the root'],
  ['1', 'a child of the root'],
])('dead-leader --child %s: %s whose main thread has exited while a thread runs is refused by name, not dumped as a zombie', async (child) => {
  const w = await fx.start('dead-leader', ['--child', child]);
  const pid = child === '1' ? Number(info(w, 'child')[0]) : w.pid;
  const err = await dump({ pid: w.pid, dir: fx.imageDir() }).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  const m = describeError(err).match(new RegExp(`pid ${pid} \\(dead-leader\\): its main thread has exited while thread\\(s\\) (\\d+) still run`));
  expect(m).not.toBeNull();
  // Nothing was frozen: the surviving thread runs on (the harness cannot verify a root whose leader is a zombie).
  expect(readStatus(pid, Number(m![1])).state).not.toBe('T');
  if (child === '1') expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  else process.kill(pid, 'SIGKILL'); // it cannot answer the harness: end it here
});

test('inet-tcp snapshot: a connection keeps SO_REUSEADDR through the repair mode of dump --leave-running', async () => {
  const w = await fx.start('inet-tcp');
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
