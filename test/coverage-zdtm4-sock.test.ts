/**
 * Socket state that CRIU's conformance tests (zdtm static, fourth set: socket-tcp-fin-wait1/2, -close-wait,
 * -last-ack, -closing, -closed and their IPv6 variants) found godwit refusing or losing, reproduced by the workload
 * inet-halfclosed; socket-tcp-reuseport by sockopts --reuseport; socket_udplite by inet-udp --lite: dump + kill + restore (and a --leave-running
 * snapshot), then the workload checks itself.
 */
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz4-sock-');
afterEach(() => fx.cleanup());

const TCP_STATE = { FIN_WAIT1: 4, FIN_WAIT2: 5, CLOSE_WAIT: 8, LAST_ACK: 9, CLOSING: 11 };

test('half-closed TCP connections, without a dump: the workload’s own checks hold on this kernel', async () => {
  const w = await fx.start('inet-halfclosed');
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

for (const family of ['4', '6'])
  test(`half-closed TCP connections over IPv${family} (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING, both ends in the tree, data queued around the FINs) come back in their states and finish closing with every byte; a connection closed both ways keeps its addresses`, async () => {
    await fx.restoredPasses('inet-halfclosed', ['--family', family]);
  });

test('half-closed TCP connections snapshot: the image holds each state with its stream, FINs counted in the sequence numbers only, closed connections with their peers; the workload keeps running unharmed', async () => {
  const w = await fx.start('inet-halfclosed');
  const { dir } = await fx.snapshot(w);
  const states = entries(dir, 'files.img')
    .map((e) => e.isk as { state: number; ino: number } | undefined)
    .filter((s) => s !== undefined)
    .map((s) => s!.state)
    .sort((a, b) => a - b);
  expect(states).toEqual(
    [1, TCP_STATE.FIN_WAIT1, TCP_STATE.FIN_WAIT2, TCP_STATE.FIN_WAIT2, TCP_STATE.FIN_WAIT2, TCP_STATE.CLOSE_WAIT, TCP_STATE.LAST_ACK, TCP_STATE.CLOSING, 7, 7].sort((a, b) => a - b),
  );
  const closed = entries(dir, 'files.img')
    .map((e) => e.isk as { state: number; dst_port: number } | undefined)
    .filter((s) => s?.state === 7);
  for (const s of closed) expect(s!.dst_port).not.toBe(0);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('listeners sharing a port through SO_REUSEPORT, one of which dropped it after bind, are bound again and keep their SO_REUSEPORT values', async () => {
  await fx.restoredPasses('sockopts', ['--reuseport', '1']);
});

test('listeners sharing a port, without a dump: the workload’s own checks hold on this kernel', async () => {
  const w = await fx.start('sockopts', ['--reuseport', '1']);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('UDP-Lite sockets, bound and connected over IPv4 and IPv6, come back as UDP-Lite with their addresses and exchange datagrams', async () => {
  await fx.restoredPasses('inet-udp', ['--lite', '1']);
});

test('UDP-Lite sockets, without a dump: the workload’s own checks hold on this kernel', async () => {
  const w = await fx.start('inet-udp', ['--lite', '1']);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
