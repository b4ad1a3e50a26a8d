/**
 * Unix socket state that CRIU's conformance tests (zdtm static: sk-unix-rel, socket_close_data01,
 * socket_close_data, socket_snd_addr) found godwit losing, reproduced by the workload unix-more: dump + kill +
 * restore (and a --leave-running snapshot), then the workload checks itself.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3-sock-');
afterEach(() => fx.cleanup());

test('relative names: sockets bound to names relative to the cwd are bound and reached there again, a queued datagram included', async () => {
  await fx.restoredPasses('unix-more', ['--case', '1']);
});

test('relative names snapshot: the image says which directory the names live in, the workload keeps running unharmed', async () => {
  const w = await fx.start('unix-more', ['--case', '1']);
  const { dir } = await fx.snapshot(w);
  const named = entries(dir, 'files.img')
    .map((e) => e.usk as { name?: Buffer; name_dir?: string } | undefined)
    .filter((u) => u?.name?.length);
  expect(named.length).toBeGreaterThanOrEqual(2);
  for (const u of named) expect(u!.name_dir).toBe(w.dir);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('closed datagram peer: a socketpair end whose other end was closed keeps the datagram it was sent, then refuses sends as before', async () => {
  const w = await fx.start('unix-more', ['--case', '2']);
  await fx.cycle(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('closed datagram peer, without a dump: the workload’s own checks hold on this kernel', async () => {
  const w = await fx.start('unix-more', ['--case', '2']);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('sender addresses: datagrams queued from senders closed since (abstract, path, unnamed) and from one still open come back with their senders’ addresses; a named socketpair end keeps the datagram of its unnamed peer', async () => {
  await fx.restoredPasses('unix-more', ['--case', '3']);
});

test('sender addresses snapshot: sk-queues.img names each datagram’s sender, the workload keeps running unharmed', async () => {
  const w = await fx.start('unix-more', ['--case', '3']);
  const { dir } = await fx.snapshot(w);
  const addrs = entries(dir, 'sk-queues.img').map((e) => Buffer.from(e.addr as Buffer));
  expect(addrs.map((a) => (a.length === 0 ? '' : a[0] === 0 ? a.subarray(1).toString().replace(/.*-/, '@') : 'path'))).toEqual(['@c1', 'path', '', '@c4', '']); // the last: from the pair's unnamed end
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('sender addresses, without a dump: the workload’s own checks hold on this kernel', async () => {
  const w = await fx.start('unix-more', ['--case', '3']);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('peer credentials, without a dump: the workload’s own checks hold on this kernel', async () => {
  const w = await fx.start('unix-more', ['--case', '4']);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

// Known gap (zdtm sock_peercred): SO_PEERCRED is taken from whoever calls socketpair()/connect()/listen(), and
// the restorer makes every socket itself, as root; carrying it needs the call made by a task with the recorded
// pid and credentials (a dead creator's pid included). Fails until that is done.
test.failing('peer credentials: a socketpair made by a child that changed its uid/gid and exited keeps the child as its peer', async () => {
  await fx.restoredPasses('unix-more', ['--case', '4']);
});
