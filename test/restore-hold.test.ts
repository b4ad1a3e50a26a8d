/**
 * restore's `hold` (what `godwit receive --migrate` uses): the restored tree is complete but every thread stays
 * stopped until resumeHeld(), and kill() leaves nothing. Real dumps of real workloads, restored on this machine.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { restoreHeld } from '../migrate/target';
import type { RestoredTree } from '../transport/migrate-channel';
import { findWorkloadPids, startWorkload, Workload } from '../scenarios/workload';

let work: string;
const workloads: Workload[] = [];
/** Held trees of the current test: killed afterwards whatever happened (a failed expect must not leave one). */
const held: Array<{ kill(): Promise<void> }> = [];

async function hold(dir: string): Promise<RestoredTree> {
  const tree = await restoreHeld(dir, {});
  held.push(tree);
  return tree;
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-hold-'));
});
afterEach(async () => {
  for (const t of held.splice(0)) await t.kill().catch(() => undefined);
  for (const w of workloads.splice(0)) await w.cleanup().catch(() => undefined);
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** [state letter, utime + stime] of every thread of pid. */
function threads(pid: number): Array<[string, number]> {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return [f[0]!, Number(f[11]) + Number(f[12])];
  });
}

async function dumped(name: 'mem-counter' | 'threads', args: string[]): Promise<{ w: Workload; dir: string }> {
  const w = await startWorkload(name, { args, tmpRoot: work });
  workloads.push(w);
  const dir = path.join(work, `img-${name}-${Date.now()}`);
  await dump({ pid: w.pid, dir }); // the tree is killed once its images are safe
  return { w, dir };
}

test('a held tree is stopped (every thread, no CPU used) until resumed, then verifies itself', async () => {
  // threads: several threads passing a token; a held one would burn no CPU and stay in a ptrace stop.
  const { w, dir } = await dumped('threads', []);
  const tree = await hold(dir);
  const pid = Number(tree.info.rootPid);
  expect(pid).toBe(w.pid); // same PID on this host (it was free again after the dump killed it)
  const before = threads(pid);
  expect(before.length).toBeGreaterThan(1);
  for (const [st] of before) expect(st).toBe('t');
  await sleep(300);
  expect(threads(pid)).toEqual(before); // still stopped, not one tick of CPU since
  const running = await tree.resume();
  expect(running.rootPid).toBe(pid);
  await sleep(50);
  for (const [st] of threads(pid)) expect(st).not.toBe('t');
  const v = await w.verify();
  expect(v.detail).toBe('PASS');
}, 60_000);

test('a held tree killed: nothing of it is left', async () => {
  const { w, dir } = await dumped('mem-counter', ['--mib', '16']);
  const tree = await hold(dir);
  const pid = Number(tree.info.rootPid);
  expect(findWorkloadPids(w.dir)).toEqual([pid]);
  await tree.kill();
  for (let i = 0; i < 100 && findWorkloadPids(w.dir).length > 0; i++) await sleep(20);
  expect(findWorkloadPids(w.dir)).toEqual([]);
  // No restorer of ours left either (it kills and reaps the tree, then exits).
  const restorers = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).filter((p) => {
    try {
      return fs.readlinkSync(`/proc/${p}/exe`).endsWith('/godwit-restorer') &&
        Number(/^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))![1]) === process.pid;
    } catch {
      return false;
    }
  });
  expect(restorers).toEqual([]);
}, 60_000);

test('a task killed while held fails the resume, and the rest is killed', async () => {
  const { w, dir } = await dumped('threads', []);
  const tree = await hold(dir);
  const pid = Number(tree.info.rootPid);
  process.kill(pid, 'SIGKILL');
  // Dead (a zombie, or reaped) before the commit comes:
  const state = () => {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    } catch {
      return undefined;
    }
  };
  for (let i = 0; i < 200 && !['Z', 'X', undefined].includes(state()); i++) await sleep(10);
  await expect(tree.resume()).rejects.toThrow(/died while held stopped/);
  await tree.kill();
  for (let i = 0; i < 100 && findWorkloadPids(w.dir).length > 0; i++) await sleep(20);
  expect(findWorkloadPids(w.dir)).toEqual([]);
}, 60_000);
