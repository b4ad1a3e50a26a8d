/**
 * Terminals that CRIU's conformance tests (zdtm static pty00, pty02, pty04, console) found godwit refusing on a
 * dump + kill + restore, each reproduced by a workload of ours that checks itself after the restore.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz4-tty-');
afterEach(() => fx.cleanup());

/** tty-data.img entries as (tty_info id, text). */
function queued(dir: string): [number, string][] {
  return entries(dir, 'tty-data.img')
    .map((e) => [Number(e.tty_id), Buffer.from(e.data as Uint8Array).toString('latin1')] as [number, string])
    .sort((a, b) => a[0] - b[0]);
}

test('pty --queued: bytes queued both ways in a canonical pair come back, the slave reading them line by line', async () => {
  const w = await fx.start('pty', ['--queued', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  // The second pair's slave (even id) has the two lines to read, its master (odd id) the echo and the slave's line.
  const q = queued(dir);
  expect(q.map(([, t]) => t)).toEqual(['one\ntwo\n', 'one\r\ntwo\r\nback\r\n']);
  expect(q[1][0]).toBe(q[0][0] + 1);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('pty --queued snapshot: the running pair holds its queued bytes again after they were read for the image', async () => {
  const w = await fx.start('pty', ['--queued', '1']);
  const { dir } = await fx.snapshot(w);
  expect(queued(dir)).toHaveLength(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('pty --ctty: a /dev/tty fd comes back as the controlling terminal of its holder, which answers through it', async () => {
  const w = await fx.start('pty', ['--ctty', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  // One CTTY tty_info (type 4, rdev 5:0) naming the pair's index.
  const ctty = entries(dir, 'tty-info.img').filter((e) => e.type === 4);
  expect(ctty).toHaveLength(1);
  expect(ctty[0].rdev).toBe((5 << 20) | 0);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
