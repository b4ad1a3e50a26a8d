/**
 * A tree in a namespace it shares with processes outside it (checkpoint/ns-shared.ts, restore/ns-shared.ts): the
 * inet-peer workload (a TCP client alone in its tree) talks to the inet-tcp workload's echo server, which runs in
 * a net namespace of its own and holds it; only the client is dumped. Found with a Python client and server in a
 * namespace made by `unshare -n` (restored "as a container" into a new, empty namespace, its connection was reset).
 * Dump refuses by default, nothing frozen; with --external-ns net the images record the namespace by inode,
 * restore without --join-ns is refused before anything runs, and with it the client goes on talking to the server.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { restore, RestoreResult } from '../restore';
import { RunningContainer, runContainer } from '../scenarios/container/bundle';
import type { Workload } from '../scenarios/workload';
import { endRestoredRoot } from './helpers/restored';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-sharedns-');
let ctr: RunningContainer | undefined;
let restored: RestoreResult | undefined;
let holder: ChildProcess | undefined;
let imgDir: string | undefined;
afterEach(async () => {
  await endRestoredRoot(restored);
  restored = undefined;
  await ctr?.destroy();
  ctr = undefined;
  if (holder?.exitCode === null && holder.signalCode === null) {
    const gone = new Promise((r) => holder!.once('exit', r));
    holder.kill('SIGKILL');
    await gone;
  }
  holder = undefined;
  if (imgDir) fs.rmSync(imgDir, { recursive: true, force: true });
  imgDir = undefined;
  await fx.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const netns = (pid: number): string => fs.readlinkSync(`/proc/${pid}/ns/net`);

/** The echo server in a fresh net namespace (lo up), and the client joined to it: two trees, one namespace. */
async function serverAndClient(): Promise<{ server: Workload; client: Workload; ino: number }> {
  const server = await fx.start('inet-tcp', [], { prefix: ['unshare', '--net', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"'] });
  const client = await fx.start('inet-peer', ['--port', String(server.info.port)], { prefix: ['nsenter', `--net=/proc/${server.pid}/ns/net`] });
  expect(netns(client.pid)).toBe(netns(server.pid));
  expect(netns(client.pid)).not.toBe(netns(process.pid));
  await sleep(100); // some round trips before the dump
  return { server, client, ino: Number(/\[(\d+)\]/.exec(netns(server.pid))![1]) };
}

const state = (pid: number): { state: string; tracer: number } => {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return { state: /^State:\s+(\S)/m.exec(s)![1]!, tracer: Number(/^TracerPid:\s+(\d+)/m.exec(s)![1]) };
};

test('a tree whose net namespace holds a process outside it: dump refuses, naming both, and the tree runs on unharmed', async () => {
  const { server, client, ino } = await serverAndClient();
  const dir = fx.imageDir();
  const err = await dump({ pid: client.pid, dir }).then(() => undefined, (e: Error) => e);
  expect(err?.message).toContain(`its net namespace (net:[${ino}]) is shared with process(es) outside the tree: ${server.pid} (inet-tcp)`);
  expect(err?.message).toContain('nothing was frozen');
  expect(err?.message).toContain('--external-ns net');
  expect(err?.message).toContain('--join-ns net:');
  expect((err as { code?: string }).code).toBe('ESHAREDNS');
  // Not frozen, not traced, no images left; it goes on talking to the server.
  expect(state(client.pid)).toEqual({ state: expect.stringMatching(/[RS]/), tracer: 0 });
  expect(fs.existsSync(dir) && fs.readdirSync(dir).length).toBeFalsy();
  await sleep(100);
  expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
  expect(await server.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('--external-ns net: restore needs --join-ns, then joins the namespace and the connection to the outside server works', async () => {
  const { server, client, ino } = await serverAndClient();
  const dir = fx.imageDir();
  await dump({ pid: client.pid, dir, externalNs: ['net'] });
  expect(client.alivePids()).toEqual([]);
  // The namespace is recorded by inode, not content: no netdev/ifaddr images, CRIU's external mark in netns-N.img.
  const rec = JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8')) as { ns: string[]; external?: Record<string, number> };
  expect(rec.external).toEqual({ net: ino });
  expect(rec.ns).not.toContain('net');
  expect(fs.readdirSync(dir).filter((f) => /^(netdev|ifaddr|route)-/.test(f))).toEqual([]);
  const netnsImg = fs.readdirSync(dir).find((f) => /^netns-\d+\.img$/.test(f))!;
  expect(entries(dir, netnsImg)).toEqual([{ ext_key: `net[${ino}]` }]);

  // Without --join-ns (or with a namespace of the wrong kind): refused before anything runs.
  await expect(restore({ dir, detach: true }, { silent: true })).rejects.toThrow(
    `the tree was in an external net namespace (net:[${ino}] at dump, shared with processes outside it), which restore joins rather than makes: give --join-ns net:PATH`,
  );
  await expect(restore({ dir, detach: true, joinNs: { net: `/proc/${server.pid}/ns/ipc` } }, { silent: true })).rejects.toThrow(/that is a ipc namespace .*, not a net one/);
  await expect(restore({ dir, detach: true, joinNs: { uts: `/proc/${server.pid}/ns/uts` } }, { silent: true })).rejects.toThrow(/--join-ns uts: .* not dumped with an external uts namespace/);
  expect(client.alivePids()).toEqual([]);

  const r = await fx.restore(client, dir, { newPidns: false, joinNs: { net: `/proc/${server.pid}/ns/net` } });
  expect(netns(r.rootPid)).toBe(`net:[${ino}]`);
  await sleep(200);
  // The client checks every echo and makes more round trips after the verify request; the server checks its own.
  expect(await client.verify()).toEqual({ pass: true, detail: 'PASS' });
  expect(await server.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('runc: a container whose config.json joins a net namespace (a pod\'s, held by a pause process) has it external by itself, and restore joins that path again', async () => {
  // The pod's pause process: a sleeping holder of a net namespace.
  holder = spawn('unshare', ['--net', 'sleep', '120'], { stdio: 'ignore' });
  const podNs = `/proc/${holder.pid}/ns/net`;
  for (let i = 0; i < 250 && fs.readlinkSync(podNs) === netns(process.pid); i++) await sleep(10);
  const ino = Number(/\[(\d+)\]/.exec(fs.readlinkSync(podNs))![1]);
  ctr = await runContainer({ hostname: 'gw-pod', netnsPath: podNs });
  expect(netns(ctr.pid)).toBe(`net:[${ino}]`);
  imgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-sharedns-img-'));
  const dir = path.join(imgDir, 'img');
  await dump({ pid: 0, container: ctr.id, dir });
  const rec = JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8')) as { ns: string[]; external?: Record<string, number> };
  expect(rec.external).toEqual({ net: ino });
  expect([...rec.ns].sort()).toEqual(['ipc', 'mnt', 'pid', 'uts']);
  for (let i = 0; i < 250 && fs.existsSync(`/run/runc/${ctr.id}`); i++) await sleep(20); // runc reaps its killed init
  restored = await restore({ dir, detach: true }, { silent: true });
  expect(netns(restored.rootPid)).toBe(`net:[${ino}]`);
  const before = ctr.count();
  await sleep(300);
  expect(Number(fs.readFileSync(`/proc/${restored.rootPid}/root/tmp/count`, 'utf8'))).toBeGreaterThan(before);
  expect(restored.runc).toEqual({ listed: true });
});
