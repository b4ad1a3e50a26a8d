/**
 * Ctrl-C on `godwit dump` and `godwit restore`: the operation stops and cleans up (listr2's own SIGINT handler,
 * which exits on the spot, is off): a dump leaves the tree running as it was and no image directory; a restore
 * leaves no process of the half-restored tree. Real CLI processes, real workloads, real signals.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { findWorkloadPids, startWorkload, Workload } from '../scenarios/workload';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

let workloads: Workload[] = [];
let children: ChildProcess[] = [];
let work: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-interrupt-'));
});

afterEach(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const w of workloads) await w.cleanup();
  workloads = [];
  children = [];
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** `godwit ARGS` in a process group of its own (as a shell runs a job); `onOutput` sees stdout+stderr so far. */
function godwit(args: string[], onOutput: (text: string, child: ChildProcess) => void): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(process.execPath, [CLI, ...args], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const on = (d: Buffer) => {
    out += d.toString();
    onOutput(out, child);
  };
  child.stdout!.on('data', on);
  child.stderr!.on('data', on);
  const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out })));
  return { child, done };
}

/** /proc state letter of every thread of pid. */
function threadStates(pid: number): string[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  });
}

function childrenOf(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim().split(/\s+/).filter(Boolean).map(Number));
  } catch {
    return [];
  }
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'latin1');
  } catch {
    return ''; // gone already (a short-lived child)
  }
}

function alive(pid: number): boolean {
  try {
    // A zombie is gone for our purpose (its parent has not reaped it yet).
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Ctrl-C', () => {
  // The whole process group, as a terminal sends it: godwit and its helper both get SIGINT.
  test.each([
    ['the process group (a terminal\'s Ctrl-C)', true],
    ['godwit alone', false],
  ])('on godwit dump while the tree is frozen, to %s: the tree runs on unharmed, no image directory is left', async (_what, group) => {
    const w = await startWorkload('mem-counter', { args: ['--mib', '64'] });
    workloads.push(w);
    const dir = path.join(work, `dump-${group ? 'group' : 'pid'}`);
    let helper: number[] = [];
    let sent = false;
    const { done } = godwit(['dump', '--pid', String(w.pid), '--dir', dir], (out, child) => {
      // The tree is frozen from "freeze" on: interrupt once its state is being collected.
      if (!sent && out.includes('collect tree, threads, memory, files')) {
        sent = true;
        helper = childrenOf(child.pid!);
        process.kill(group ? -child.pid! : child.pid!, 'SIGINT');
      }
    });
    const r = await done;
    expect(sent).toBe(true);
    expect(helper.length).toBeGreaterThan(0); // godwit-helper was running when the signal came
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 1, signal: null });
    expect(r.out).toMatch(/dump of pid \d+ stopped: the tree runs on as it was, nothing of the dump is left/);
    expect(r.out).toMatch(/interrupted \(SIGINT\)/);
    expect(fs.existsSync(dir)).toBe(false);
    for (const p of helper) expect(alive(p)).toBe(false);
    expect(w.alivePids()).toEqual([w.pid]);
    for (const st of threadStates(w.pid)) expect(st).not.toMatch(/[Tt]/);
    expect((await w.verify()).detail).toBe('PASS');
  }, 60_000);

  test('on godwit restore while it rebuilds the tree: no process of it is left', async () => {
    const w = await startWorkload('mem-counter', { args: ['--mib', '256'] });
    workloads.push(w);
    const dir = path.join(work, 'restore-img');
    await dump({ pid: w.pid, dir }); // the tree is killed once the images are written
    expect(w.alivePids()).toEqual([]);
    let restorer: number | undefined;
    let tree: number[] = [];
    const { child, done } = godwit(['restore', '--dir', dir, '--detach'], () => undefined);
    // Interrupt once the restorer has forked the tree (its tasks exist, memory is being rebuilt).
    for (let i = 0; i < 3000 && tree.length === 0 && child.exitCode === null; i++) {
      restorer = childrenOf(child.pid!).find((p) => comm(p).startsWith('godwit-restor'));
      if (restorer) tree = childrenOf(restorer);
      if (tree.length === 0) await sleep(2);
    }
    expect(tree.length).toBeGreaterThan(0);
    child.kill('SIGINT');
    const r = await done;
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 1, signal: null });
    expect(r.out).toMatch(/restore of .* stopped: nothing of the tree is left/);
    expect(r.out).toMatch(/interrupted \(SIGINT\) while restoring/);
    expect(alive(restorer!)).toBe(false);
    for (const p of tree) expect(alive(p)).toBe(false);
    expect(findWorkloadPids(w.dir)).toEqual([]);
    // The images are untouched: the same restore runs to the end.
    const again = godwit(['restore', '--dir', dir, '--detach'], () => undefined);
    expect((await again.done).code).toBe(0);
    const now = findWorkloadPids(w.dir);
    expect(now.length).toBe(1);
    w.setPids(now);
    expect((await w.verify()).detail).toBe('PASS');
  }, 90_000);
});
