/**
 * Bad input and unsupported resources: clear errors before anything is touched, and a tree that cannot be dumped
 * is left running, untraced, with no image directory left behind.
 */
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { readStatus } from '../checkpoint/proc/status';
import { startWorkload } from '../scenarios/workload';
import { describeError } from '../util/errors';

/**
 * A TCP connection stuck in SYN_SENT, an inet socket state godwit refuses: the listener's accept queue (backlog 1)
 * is full with the first two connections, never accepted (the event loop is blocked), so the kernel drops the next SYNs.
 */
const SYN_SENT_TCP =
  'const net=require("net");const s=net.createServer();s.listen({port:0,host:"127.0.0.1",backlog:1},()=>{' +
  'const p=s.address().port;for(let i=0;i<4;i++)net.connect(p,"127.0.0.1").on("error",()=>{});' +
  'setTimeout(()=>{console.log("ready");Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0)},200)})';

const cli = path.resolve(__dirname, '..', 'cli', 'main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

let tmp: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-dump-err-'));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('no such pid: exit 2, nothing created', () => {
  const dir = path.join(tmp, 'img');
  const r = run('dump', '--pid', '4194303', '--dir', dir);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/no such process: pid 4194303/);
  expect(fs.existsSync(dir)).toBe(false);
});

test('a kernel thread, godwit itself, its ancestor: exit 2', () => {
  const dir = path.join(tmp, 'img');
  expect(run('dump', '--pid', '2', '--dir', dir).stderr).toMatch(/kernel thread/);
  const self = run('dump', '--pid', String(process.pid), '--dir', dir);
  expect(self.status).toBe(2);
  expect(self.stderr).toMatch(/ancestor of godwit/);
  expect(fs.existsSync(dir)).toBe(false);
});

test('bad flags: not a pid, unknown compression', () => {
  expect(run('dump', '--pid', 'abc', '--dir', tmp).status).toBe(2);
  const r = run('dump', '--pid', '1', '--dir', tmp, '--compress', 'lz4');
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/--compress must be zstd or none/);
});

async function sleeper(): Promise<ChildProcess> {
  const c = spawn('/bin/sleep', ['1000'], { stdio: 'ignore' });
  children.push(c);
  await new Promise((r) => setTimeout(r, 50));
  return c;
}

test('a non-empty directory is refused and left as it was', async () => {
  const c = await sleeper();
  fs.writeFileSync(path.join(tmp, 'keep'), 'x');
  await expect(dump({ pid: c.pid!, dir: tmp, leaveRunning: true })).rejects.toThrow(/not empty/);
  expect(fs.readdirSync(tmp)).toEqual(['keep']);
  expect(readStatus(c.pid!).tracerPid).toBe(0);
});

test('an inet socket in an unsupported state: the error names pid, fd and kind; the process runs on untraced; no directory left', async () => {
  const server = spawn(process.execPath, ['-e', SYN_SENT_TCP], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  children.push(server);
  await new Promise<void>((resolve) => server.stdout!.once('data', () => resolve()));
  const dir = path.join(tmp, 'img');
  const r = run('dump', '--pid', String(server.pid), '--dir', dir, '--leave-running');
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(new RegExp(`pid ${server.pid} fd \\d+: inet socket \\(tcp\\)`));
  expect(r.stderr).toMatch(/nothing was frozen/);
  expect(fs.existsSync(dir)).toBe(false);
  const st = readStatus(server.pid!);
  expect(st.tracerPid).toBe(0);
  expect(st.state).not.toMatch(/^[tT]/);
  expect(server.exitCode).toBeNull();
});

test('a failure after the freeze (deleted file over the ghost limit): the tree resumes as it was and verifies PASS', async () => {
  const w = await startWorkload('files');
  try {
    const dir = path.join(tmp, 'img');
    const err = await dump({ pid: w.pid, dir, leaveRunning: true, ghostLimit: 100 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(describeError(err)).toMatch(
      new RegExp(`pid ${w.pid} fd \\d+: deleted file .*deleted\\.dat holds 8292 bytes, more than the ghost limit of 100`),
    );
    expect(fs.existsSync(dir)).toBe(false);
    const st = readStatus(w.pid);
    expect(st.tracerPid).toBe(0);
    expect(st.state).not.toMatch(/^[tT]/);
    expect((await w.verify()).detail).toBe('PASS');
  } finally {
    await w.cleanup();
  }
});
