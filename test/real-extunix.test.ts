/**
 * A unix datagram socket connected to a socket outside the dumped tree, as every syslog(3) client holds one to
 * /dev/log (found by checkpointing real daemons): the workload unix-ext is the client, a second unix-ext
 * (--receiver 1) started by the test is the receiver outside the tree. Dump records the receiver's name, restore
 * connects to it again; what a reconnection cannot carry is refused with a clear error.
 */
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { restore } from '../restore';
import { createHosts, TestBed } from '../scenarios/hosts';
import { findWorkloadPids, startWorkload, Workload } from '../scenarios/workload';
import { processesIn } from './helpers/host-procs';
import { runInHost } from './helpers/run-in-host';
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

describe('migration between two test hosts', () => {
  let bed: TestBed;
  const children = new Set<ChildProcess>();
  const started: Workload[] = [];
  beforeAll(async () => {
    bed = await createHosts();
  }, 60_000);
  afterEach(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    children.clear();
    for (const w of started.splice(0)) await w.cleanup().catch(() => undefined);
  });
  afterAll(async () => {
    await bed?.destroy();
  });

  test("the client migrates and sends to the target's own receiver at that path; the source's receiver gets nothing more", async () => {
    const key = newKey();
    const sock = `/tmp/godwit-unix-ext-${key}.sock`;
    const receiverA = await fx.start('unix-ext', ['--key', String(key), '--receiver', '1']);
    const client = await startWorkload('unix-ext', { args: ['--key', String(key), '--same-name', '0'], prefix: ['nsenter', `--net=${bed.source.nsPath('net')}`] });
    started.push(client);
    // Host B's own receiver: bound at a path of its own, mounted over the name in B's mount namespace, as a
    // second machine has its own syslog daemon at /dev/log (the bed's hosts share one filesystem).
    const keyB = newKey();
    const receiverB = await fx.start('unix-ext', ['--key', String(keyB), '--receiver', '1']);
    await bed.target.execOk('mount', ['--bind', `/tmp/godwit-unix-ext-${keyB}.sock`, sock]);
    try {
      const targetDir = path.join(path.dirname(client.dir), `godwit-extunix-img-${key}`);
      const NODE = process.execPath;
      const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
      const r = await runInHost(bed.source, [NODE, CLI, 'migrate', '--pid', String(client.pid), '--to', `root@${bed.target.address}`,
        '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', `${NODE} ${CLI}`, '--json', '--target-dir', targetDir], children);
      expect({ code: r.code, error: r.error }).toEqual({ code: 0, error: undefined });
      const now = findWorkloadPids(client.dir);
      expect(now).toHaveLength(1);
      expect(now).not.toContain(client.pid);
      client.setPids(now);
      expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
      expect(await receiverB.verify()).toEqual({ pass: true, detail: 'PASS' });
      expect((await receiverA.verify()).detail).toMatch(/no "verify" among them/);
      expect(processesIn(bed.target)).toEqual([]);
    } finally {
      await bed.target.execOk('umount', [sock]).catch(() => undefined);
    }
  }, 90_000);
});
