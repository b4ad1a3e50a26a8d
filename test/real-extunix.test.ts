/**
 * A unix datagram socket connected to a socket outside the dumped tree, as every syslog(3) client holds one to
 * /dev/log (found by checkpointing real daemons): the workload unix-ext is the client, a second unix-ext
 * (--receiver 1) started by the test is the receiver outside the tree. Dump records the receiver's name, restore
 * connects to it again; what a reconnection cannot carry is refused with a clear error.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { restore } from '../restore';
import { findWorkloadPids, Workload } from '../scenarios/workload';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-extunix-');
let keys: number[] = [];
afterEach(async () => {
  await fx.cleanup();
  for (const k of keys.splice(0)) for (const ext of ['sock', 'name']) fs.rmSync(`/tmp/godwit-unix-ext-${k}.${ext}`, { force: true });
});

let next = 0;
/** A key of its own for each receiver: it names the receiver's socket (/tmp/godwit-unix-ext-KEY.sock). */
function newKey(): number {
  const k = (process.pid % 100000) * 100 + next++;
  keys.push(k);
  return k;
}

async function pair(peer: number, extra: string[] = []): Promise<{ key: number; receiver: Workload; client: Workload }> {
  const key = newKey();
  const receiver = await fx.start('unix-ext', ['--key', String(key), '--receiver', '1', '--peer', String(peer), ...extra]);
  const client = await fx.start('unix-ext', ['--key', String(key), '--peer', String(peer), ...extra]);
  return { key, receiver, client };
}

interface Usk {
  ino: number;
  peer: number;
  uflags: number;
  state: number;
  type: number;
  name: Buffer;
}
const usks = (dir: string) => entries(dir, 'files.img').map((e) => e.usk as Usk | undefined).filter((u): u is Usk => u !== undefined);

test('a datagram socket connected to a path outside the tree: dump, kill, restore; it sends to the same receiver again', async () => {
  const { key, receiver, client } = await pair(0);
  const { dir } = await fx.cycle(client);
  const [own, ext] = [usks(dir).find((u) => !(u.uflags & 1)), usks(dir).find((u) => u.uflags & 1)];
  // The peer as CRIU's --ext-unix-sk writes it: its inode and name, listening, no peer of its own.
  expect(ext).toMatchObject({ ino: own!.peer, type: 2, state: 10, peer: 0 });
  expect(Buffer.from(ext!.name).toString()).toBe(`/tmp/godwit-unix-ext-${key}.sock`);
  expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
  expect(await receiver.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a datagram socket connected to an abstract name outside the tree comes back connected to it', async () => {
  const { receiver, client } = await pair(1);
  await fx.cycle(client);
  expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
  expect(await receiver.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test("a bound client with the outside receiver's datagram in its queue: the datagram reads back after restore", async () => {
  const { receiver, client } = await pair(0, ['--queued', '1']);
  await fx.cycle(client);
  expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
  expect(await receiver.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('--leave-running: the image holds the outside peer once, and client and receiver go on unharmed', async () => {
  const { client, receiver } = await pair(0);
  const { dir } = await fx.snapshot(client);
  expect(usks(dir).filter((u) => u.uflags & 1)).toHaveLength(1);
  expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
  expect(await receiver.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([
  [3, /is a stream connection to socket \d+ outside the dumped tree, whose end of the connection cannot be carried/],
  [2, /whose name @[0-9a-f]{5} is one the kernel gave it \(autobind\)/],
])('peer kind %d outside the tree is refused at dump with the reason; the client runs on', async (peer, why) => {
  const { client } = await pair(peer);
  await expect(dump({ pid: client.pid, dir: fx.imageDir(), compress: 'none' })).rejects.toThrow(why);
  expect(client.alivePids()).toEqual(client.pids);
});

test('restore with no receiver at the name: refused before anything runs, naming the socket, the name and what to start; nothing left behind', async () => {
  const { key, receiver, client } = await pair(0);
  const dir = fx.imageDir();
  await dump({ pid: client.pid, dir, compress: 'none' });
  await receiver.kill();
  // The socket file left behind by the dead receiver: connect() is refused.
  await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(
    new RegExp(`was connected to /tmp/godwit-unix-ext-${key}\\.sock, a socket outside the dumped tree, .*start the program that receives on`),
  );
  expect(findWorkloadPids(client.dir)).toEqual([]);
  // No file at all: the preflight says so.
  fs.rmSync(`/tmp/godwit-unix-ext-${key}.sock`);
  await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(
    new RegExp(`connected to /tmp/godwit-unix-ext-${key}\\.sock, a socket outside the dumped tree, and there is nothing there on this host`),
  );
  expect(findWorkloadPids(client.dir)).toEqual([]);
});
