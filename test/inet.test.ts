/**
 * TCP and UDP sockets through dump and restore (checkpoint/inet.ts, restore/inet.ts, native/src/inet.c): the
 * inet-tcp workload (an echo server and its client in the tree, exchanging numbered messages without pause) and
 * inet-udp (bound, connected and never-bound sockets) verify themselves after a --leave-running dump and after
 * dump + kill + restore; a client outside the tree keeps its connection to a server inside it; failures leave
 * every connection as it was.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { decodeImage } from '../images';
import { restore, RestoreResult } from '../restore';
import { startWorkload, Workload, WorkloadName } from '../scenarios/workload';

const live: Workload[] = [];
const restored: RestoreResult[] = [];
const dirs: string[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const w of live.splice(0)) await w.cleanup().catch(() => undefined);
  for (const r of restored.splice(0)) {
    for (const pid of r.pids.values()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (r.restorer) {
      try {
        process.kill(r.restorer.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await r.restorer.waitExit();
    }
  }
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function imageDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-inet-'));
  dirs.push(d);
  return path.join(d, 'img');
}

async function start(name: WorkloadName, args: string[] = []): Promise<Workload> {
  const w = await startWorkload(name, { args });
  live.push(w);
  return w;
}

async function cycle(w: Workload, newPidns = true): Promise<{ dir: string; r: RestoreResult }> {
  const dir = imageDir();
  await dump({ pid: w.pid, dir });
  expect(w.alivePids()).toEqual([]);
  const r = await restore({ dir, newPidns, detach: true }, { silent: true });
  restored.push(r);
  w.setPids(w.pids.map((p) => r.pids.get(p) ?? p));
  return { dir, r };
}

function files(dir: string): Record<string, unknown>[] {
  return decodeImage(fs.readFileSync(path.join(dir, 'files.img')), 'files.img').entries.map((e) => e.msg);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('inet-tcp: echo server and client in the tree', () => {
  test.each([['4'], ['6']])('IPv%s: dump --leave-running, the exchange continues unharmed; images as CRIU writes them', async (family) => {
    const w = await start('inet-tcp', ['--family', family]);
    await sleep(100);
    const dir = imageDir();
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
    const w = await start('inet-tcp', ['--family', family]);
    await sleep(100);
    await cycle(w);
    await sleep(200);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});
