/**
 * A real `tail -F LOG` (coreutils) whose log a process outside the tree keeps appending to: the log grows between
 * the dump and the restore, which must not stop the restore (restore/preflight.ts accepts a file that only grew,
 * with a warning; one that shrank is still refused), and the restored tail prints what was appended meanwhile
 * (at the next event: the one of the append itself went to no one).
 * Also: a shell forking short-lived children, snapshotted again and again (checkpoint/preflight.ts drops what it
 * found about a child that exited while it looked).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { restore, RestoreResult } from '../restore';
import { endRestoredRoot } from './helpers/restored';

let work: string;
let tail: ChildProcess | undefined;
let restored: RestoreResult | undefined;

beforeEach(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-tail-'));
});

afterEach(async () => {
  if (tail?.pid) {
    try {
      process.kill(tail.pid, 'SIGKILL');
    } catch {
      /* dumped and killed */
    }
  }
  await endRestoredRoot(restored);
  tail = restored = undefined;
  fs.rmSync(work, { recursive: true, force: true });
});

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `tail -n +1 -F LOG > OUT` in a session of its own, once it has printed what LOG holds. */
async function startTail(): Promise<{ log: string; out: string; pid: number }> {
  const log = path.join(work, 'app.log');
  const out = path.join(work, 'tail.out');
  fs.writeFileSync(log, 'line 1\nline 2\n');
  const outFd = fs.openSync(out, 'w');
  tail = spawn('tail', ['-n', '+1', '-F', log], { detached: true, stdio: ['ignore', outFd, 'ignore'] });
  fs.closeSync(outFd);
  await until('tail to print the log', () => fs.readFileSync(out, 'utf8') === 'line 1\nline 2\n');
  return { log, out, pid: tail.pid! };
}

test('tail -F: the log grew after the dump; the restore goes on with a warning and tail prints the new lines', async () => {
  const { log, out, pid } = await startTail();
  const dir = path.join(work, 'img');
  await dump({ pid, dir, compress: 'none' });
  fs.appendFileSync(log, 'line 3, written while tail was away\n');
  restored = await restore({ dir, newPidns: true, detach: true }, { silent: true });
  expect(restored.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/app\.log .*grew since the dump \(size 14, now 50\)/)]);
  // Line 3's inotify event went to no one (tail was not running): tail reads on from its offset at the next one.
  fs.appendFileSync(log, 'line 4\n');
  await until('the restored tail to print lines 3 and 4', () => fs.readFileSync(out, 'utf8').endsWith('away\nline 4\n'));
  expect(fs.readFileSync(out, 'utf8')).toBe('line 1\nline 2\nline 3, written while tail was away\nline 4\n');
});

test('tail -F: a log that shrank since the dump is still refused before anything runs', async () => {
  const { log, pid } = await startTail();
  const dir = path.join(work, 'img');
  await dump({ pid, dir, compress: 'none' });
  fs.writeFileSync(log, 'x\n');
  await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(/app\.log .*changed since the dump \(size 14, now 2\)/);
});

test('a shell forking short-lived children all the time: every snapshot goes through (a child exiting while preflight looks at it is no problem)', async () => {
  // `sleep` children that live ~1 ms: preflight often finds one half gone (its map_files and fds unreadable).
  const sh = spawn('sh', ['-c', 'while :; do sleep 0.001; done'], { detached: true, stdio: 'ignore' });
  tail = sh;
  await until('the shell to start', () => fs.existsSync(`/proc/${sh.pid}`));
  for (let i = 0; i < 25; i++) await dump({ pid: sh.pid!, dir: path.join(work, `img-${i}`), compress: 'none', leaveRunning: true });
  // Left running: not stopped, not traced (D is its vfork wait).
  expect(fs.readFileSync(`/proc/${sh.pid}/stat`, 'utf8').split(' ')[2]).toMatch(/[RSD]/);
  expect(fs.readFileSync(`/proc/${sh.pid}/status`, 'utf8')).toMatch(/^TracerPid:\s+0$/m);
});
