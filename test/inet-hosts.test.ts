/**
 * TCP connections inside a test network namespace and across the veth between two test hosts
 * (scenarios/hosts.ts, addresses in 198.18.0.0/15 only): the inet-tcp workload runs on host A, listening on
 * A's address; a client on host B keeps one connection to it. godwit runs inside host A (same network and PID
 * namespace as the workload): a --leave-running dump, then dump + kill + restore; B's connection carries data
 * after each, and the workload verifies itself (no byte lost or duplicated between its server and client).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHosts, type TestBed } from '../scenarios/hosts';
import type { HostProcess } from '../scenarios/host-process';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
const WORKLOAD = path.resolve(__dirname, '..', '..', 'scenarios', 'build', 'inet-tcp');

/** Host B's client: each stdin line goes to the server; whatever comes back is printed. */
const CLIENT = `
const s = require('net').connect(Number(process.argv[2]), process.argv[1], () => console.log('connected'));
s.on('data', (d) => process.stdout.write(d));
s.on('error', (e) => { console.log('error ' + e.code); process.exit(1); });
s.on('close', () => { console.log('closed'); process.exit(1); });
require('readline').createInterface({ input: process.stdin }).on('line', (l) => s.write(l + '\\n'));
`;

let bed: TestBed | undefined;
let tmp: string;
const procs: HostProcess[] = [];

beforeAll(async () => {
  bed = await createHosts({ sshd: false });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-inet-hosts-'));
});

afterAll(async () => {
  for (const p of procs.splice(0)) await p.stop().catch(() => undefined);
  await bed?.destroy();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function waitFile(file: string, ms: number): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      if (Date.now() > end) throw new Error(`${file} did not appear within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Reads the client's stdout until `want` appears. */
function expectOutput(p: HostProcess, want: string, ms = 10000): Promise<void> {
  return new Promise((resolve, reject) => {
    let acc = '';
    const onData = (d: Buffer) => {
      acc += d.toString();
      if (acc.includes(want)) finish();
    };
    const timer = setTimeout(() => finish(new Error(`host B's client did not print ${JSON.stringify(want)} within ${ms} ms: ${JSON.stringify(acc)}`)), ms);
    const finish = (err?: Error) => {
      clearTimeout(timer);
      p.child.stdout!.off('data', onData);
      if (err) reject(err);
      else resolve();
    };
    p.child.stdout!.on('data', onData);
  });
}

async function roundTrip(client: HostProcess, line: string): Promise<void> {
  const got = expectOutput(client, line + '\n');
  client.child.stdin!.write(line + '\n');
  await got;
}

test('a server on host A keeps the connection of a client on host B through a snapshot and a dump, kill, restore', async () => {
  const [a, b] = bed!.hosts as [TestBed['hosts'][0], TestBed['hosts'][0]];
  const state = fs.mkdtempSync(path.join(tmp, 'state-'));
  const addr = a!.address.split('.').reduce((n, x) => n * 256 + Number(x), 0);
  const w = a!.spawn(WORKLOAD, ['--state', state, '--addr', String(addr)], { stdio: 'ignore' });
  procs.push(w);
  const ready = await waitFile(path.join(state, 'ready'), 10000);
  const pid = Number(/^pids (\d+)/m.exec(ready)![1]);
  const port = Number(/^port (\d+)$/m.exec(ready)![1]);

  const client = b!.spawn(process.execPath, ['-e', CLIENT, a!.address, String(port)]);
  procs.push(client);
  await expectOutput(client, 'connected\n');
  await roundTrip(client, 'hello from B');

  const godwit = (...args: string[]) => a!.execOk(process.execPath, [CLI, ...args], { timeoutMs: 60000 });
  await godwit('dump', '--pid', String(pid), '--dir', path.join(tmp, 'snap'), '--leave-running');
  await roundTrip(client, 'after the snapshot');

  await godwit('dump', '--pid', String(pid), '--dir', path.join(tmp, 'img'));
  // The host's own PID namespace: the pids are free again once the tree is gone.
  await godwit('restore', '--dir', path.join(tmp, 'img'), '--detach');
  await roundTrip(client, 'after the restore');

  fs.writeFileSync(path.join(state, 'go'), '');
  expect((await waitFile(path.join(state, 'result'), 20000)).trim()).toBe('PASS');
});
