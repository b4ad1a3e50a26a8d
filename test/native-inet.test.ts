/**
 * TCP_REPAIR through the helper (native/src/inet.c) on the inet-tcp workload, with a Node client outside the tree
 * connected to its server: what a connection in repair mode reports, and what becomes of it when the helper lets go
 * of it — repair mode off while its task lives (the connection carries data again), left on once its task is dead
 * (the socket closes silently: the outside client sees neither FIN nor RST), also when the helper simply exits.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Helper } from '../native/helper';
import { startWorkload, Workload } from '../scenarios/workload';
import { SysError } from '../util/errors';

let w: Workload;
let h: Helper | undefined;
const sockets: net.Socket[] = [];

afterEach(async () => {
  await h?.close().catch(() => undefined);
  h = undefined;
  for (const s of sockets.splice(0)) s.destroy();
  await w?.cleanup().catch(() => undefined);
});

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  sockets.push(s);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return s;
}

function echo(s: net.Socket, line: string, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no echo of ${line} within ${ms} ms`)), ms);
    s.once('data', (d) => {
      clearTimeout(timer);
      resolve(d.toString());
    });
    s.write(line);
  });
}

/** The server's fd for the connection whose peer is `client`, found through /proc/net/tcp. */
function serverFd(pid: number, client: net.Socket): number {
  const hexPort = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  const line = fs
    .readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((c) => c[1]?.endsWith(':' + hexPort(client.remotePort!)) && c[2]?.endsWith(':' + hexPort(client.localPort!)));
  const ino = line![9];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${ino}]`) return Number(fd);
  throw new Error(`no fd of ${pid} holds socket ${ino}`);
}

async function setUp(): Promise<{ client: net.Socket; fd: number }> {
  w = await startWorkload('inet-tcp');
  const client = await connect(Number(w.info.port));
  expect(await echo(client, 'one\n')).toBe('one\n');
  h = await Helper.start();
  await h.seize(w.pids.flatMap((p) => fs.readdirSync(`/proc/${p}/task`).map(Number)));
  return { client, fd: serverFd(w.pid, client) };
}

test('repair state of a connection; repair mode off again while the task lives: data flows as before', async () => {
  const { client, fd } = await setUp();
  expect(await h!.tcpRepairOn([{ pid: w.pid, fd }])).toBe(1);
  client.write('queued while frozen\n');
  await new Promise((r) => setTimeout(r, 100));
  const st = await h!.tcpRepairDump(w.pid, fd);
  expect(st.inq.toString()).toBe('queued while frozen\n');
  expect(st.outq.length).toBe(0);
  expect(st.mssClamp).toBeGreaterThan(0);
  expect(st.optMask & 1).toBe(1); // timestamps, as Linux negotiates on loopback
  expect(st.timestamp).toBeDefined();
  expect(st.window!.rcvWnd).toBeGreaterThan(0);
  // A fd that was not put into repair mode is refused by name.
  await expect(h!.tcpRepairDump(w.pid, 0)).rejects.toThrow(SysError);
  expect(await h!.tcpRepairOff(false)).toBe(1);
  const got = new Promise<string>((resolve) => client.once('data', (d) => resolve(d.toString())));
  await h!.close();
  h = undefined;
  expect(await got).toBe('queued while frozen\n');
  expect(await echo(client, 'two\n')).toBe('two\n');
  expect((await w.verify()).detail).toBe('PASS');
});

test('the helper exits holding a live task\'s connection in repair mode: it ends repair mode itself', async () => {
  const { client, fd } = await setUp();
  await h!.tcpRepairOn([{ pid: w.pid, fd }]);
  await h!.close();
  h = undefined;
  expect(await echo(client, 'three\n')).toBe('three\n');
});

test('the task is killed while its connection is in repair mode: the socket closes silently, also when the helper just exits', async () => {
  const { client, fd } = await setUp();
  let ended = '';
  client.on('end', () => (ended ||= 'FIN'));
  client.on('error', (e: NodeJS.ErrnoException) => (ended ||= e.code ?? 'error'));
  await h!.tcpRepairOn([{ pid: w.pid, fd }]);
  await h!.kill([...w.pids].reverse());
  await h!.close(); // no tcpRepairOff(true): the helper must see that the task is gone
  h = undefined;
  await new Promise((r) => setTimeout(r, 300));
  expect(ended).toBe('');
  expect(client.destroyed).toBe(false);
});
