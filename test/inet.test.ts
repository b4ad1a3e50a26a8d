/**
 * TCP and UDP sockets through dump and restore (checkpoint/inet.ts, restore/inet.ts, native/src/inet.c): the
 * inet-tcp workload (an echo server and its client in the tree, exchanging numbered messages without pause) and
 * inet-udp (bound, connected and never-bound sockets) verify themselves after a --leave-running dump and after
 * dump + kill + restore; a client outside the tree keeps its connection to a server inside it; failures leave
 * every connection as it was.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { decodeImage, encodeImage } from '../images';
import { describeError } from '../util/errors';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-inet-');
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await fx.cleanup();
});

const files = (dir: string) => entries(dir, 'files.img');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('inet-tcp: echo server and client in the tree', () => {
  test.each([['4'], ['6']])('IPv%s: dump --leave-running, the exchange continues unharmed; images as CRIU writes them', async (family) => {
    const w = await fx.start('inet-tcp', ['--family', family]);
    await sleep(100);
    const dir = fx.imageDir();
    await dump({ pid: w.pid, dir, leaveRunning: true });
    await sleep(100);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
    const isks = files(dir).filter((f) => f.isk).map((f) => f.isk as Record<string, unknown>);
    const port = Number(w.info.port);
    const listener = isks.find((i) => i.state === 10)!;
    expect(listener).toMatchObject({ family: family === '6' ? 10 : 2, type: 1, proto: 6, src_port: port, backlog: 7 });
    expect((listener.opts as Record<string, unknown>).reuseaddr).toBe(true);
    if (family === '6') expect(listener.v6only).toBe(true);
    const conns = isks.filter((i) => i.state === 1);
    expect(conns).toHaveLength(2); // the server's accepted end and the client's end
    for (const c of conns) {
      const stream = fs.readdirSync(dir).find((f) => f === `tcp-stream-${Number(c.ino).toString(16)}.img`);
      expect(stream).toBeDefined();
      const tse = decodeImage(fs.readFileSync(path.join(dir, stream!)), stream!).entries[0];
      expect(Number(tse.msg.mss_clamp)).toBeGreaterThan(0);
      expect((tse.extra as { inq: Buffer }).inq.length).toBe(Number(tse.msg.inq_len));
    }
  });

  test.each([['4'], ['6']])('IPv%s: dump, kill, restore into a new PID namespace: no byte lost or duplicated', async (family) => {
    const w = await fx.start('inet-tcp', ['--family', family]);
    await sleep(100);
    await fx.cycle(w);
    await sleep(200);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

describe('inet-udp: bound, connected and never-bound sockets', () => {
  test('dump --leave-running, then dump, kill, restore into the host PID namespace', async () => {
    const w = await fx.start('inet-udp');
    const dir = fx.imageDir();
    await dump({ pid: w.pid, dir, leaveRunning: true });
    const isks = files(dir).filter((f) => f.isk).map((f) => f.isk as Record<string, unknown>);
    expect(isks.filter((i) => i.proto === 17)).toHaveLength(5);
    expect(isks.filter((i) => i.proto === 6)).toEqual([expect.objectContaining({ state: 7, src_port: 0, family: 2 })]);
    await fx.cycle(w, { newPidns: false });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

/** A client outside the tree: one line out, the same line back. */
async function echo(s: net.Socket, line: string): Promise<void> {
  const got = await new Promise<string>((resolve, reject) => {
    let acc = '';
    const onData = (d: Buffer) => {
      acc += d.toString();
      if (acc.endsWith('\n')) done(undefined);
    };
    const timer = setTimeout(() => done(new Error(`no echo of ${line} within 10 s (got ${JSON.stringify(acc)})`)), 10000);
    const done = (err: Error | undefined) => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('error', done);
      if (err) reject(err);
      else resolve(acc);
    };
    s.on('data', onData);
    s.once('error', done);
    s.write(line + '\n');
  });
  expect(got).toBe(line + '\n');
}

async function connectOutside(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const s = net.connect(port, host);
  sockets.push(s);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return s;
}

describe('a client outside the tree connected to the server inside it', () => {
  test('keeps its connection through dump --leave-running and through dump, kill, restore', async () => {
    const w = await fx.start('inet-tcp');
    const client = await connectOutside(Number(w.info.port));
    await echo(client, 'before');
    await dump({ pid: w.pid, dir: fx.imageDir(), leaveRunning: true });
    await echo(client, 'after a snapshot');
    // Quiet while the server is gone: a segment to a port without its socket would be answered with a reset.
    await fx.cycle(w);
    await echo(client, 'after the restore');
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

describe('data in flight in every queue', () => {
  test('an outside client stops reading while it sends 2 MiB to the echo server: every byte comes back after dump, kill, restore', async () => {
    const w = await fx.start('inet-tcp');
    const client = await connectOutside(Number(w.info.port));
    const total = 2 << 20;
    const data = Buffer.alloc(total);
    for (let i = 0; i < total; i++) data[i] = (i * 2654435761) >>> 24;
    const got: Buffer[] = [];
    let n = 0;
    client.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
    });
    client.pause(); // the echo backs up: the server's send queue (sent and unsent) and receive queue fill
    client.write(data);
    await sleep(300);
    const { dir } = await fx.cycle(w);
    const streams = fs.readdirSync(dir).filter((f) => f.startsWith('tcp-stream-'));
    const queued = streams
      .map((f) => decodeImage(fs.readFileSync(path.join(dir, f)), f).entries[0].msg)
      .reduce((a, m) => a + Number(m.inq_len) + Number(m.outq_len), 0);
    expect(queued).toBeGreaterThan(64 << 10);
    client.resume();
    const end = Date.now() + 20000;
    while (n < total && Date.now() < end) await sleep(50);
    expect(n).toBe(total);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

describe('failures leave every connection as it was', () => {
  test('a listener with a connection not accepted yet: clear error after the freeze, connections out of repair mode, the exchange goes on', async () => {
    const w = await fx.start('inet-tcp');
    await sleep(100);
    process.kill(w.pid, 'SIGSTOP'); // the server cannot accept: the next connection waits in its accept queue
    let resumed = false;
    try {
      const client = await connectOutside(Number(w.info.port));
      const dir = fx.imageDir();
      const err = await dump({ pid: w.pid, dir, leaveRunning: true }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(describeError(err)).toMatch(
        new RegExp(`pid ${w.pid} fd \\d+: listening inet socket \\(tcp\\) has 1 connection\\(s\\) not accepted yet`),
      );
      expect(fs.existsSync(dir)).toBe(false);
      const status = fs.readFileSync(`/proc/${w.pid}/status`, 'utf8');
      expect(status).toMatch(/^TracerPid:\s+0$/m);
      expect(status).toMatch(/^State:\s+T \(stopped\)$/m); // stopped as it was before the dump
      process.kill(w.pid, 'SIGCONT');
      resumed = true;
      await echo(client, 'accepted late');
      // Still in repair mode, the connection would queue the server's replies without sending them.
      await sleep(200);
      expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
    } finally {
      if (!resumed) process.kill(w.pid, 'SIGCONT');
    }
  });
});

describe('restore preflight', () => {
  test('a socket bound to an address this host lacks: clear error naming it and the fix, nothing created', async () => {
    const w = await fx.start('inet-udp');
    const dir = fx.imageDir();
    await dump({ pid: w.pid, dir, leaveRunning: true, compress: 'none' });
    // The image as it would come from a host that has 198.18.255.254 (a plain CRIU directory: no manifest).
    fs.rmSync(path.join(dir, 'godwit-manifest.json'));
    const img = decodeImage(fs.readFileSync(path.join(dir, 'files.img')), 'files.img');
    const udp4 = img.entries.find((e) => (e.msg.isk as Record<string, unknown> | undefined)?.family === 2 && (e.msg.isk as Record<string, unknown>).proto === 17)!;
    (udp4.msg.isk as Record<string, unknown>).src_addr = [Buffer.from([198, 18, 255, 254]).readUInt32LE(0)];
    fs.writeFileSync(path.join(dir, 'files.img'), encodeImage('FILES', img.entries));
    const err = await fx.restore(w, dir).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(describeError(err)).toMatch(/address 198\.18\.255\.254, which 1 socket\(s\) of the image are bound to, is not configured on this host: .*ip addr add 198\.18\.255\.254/);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});
