/**
 * scenarios/build/subreaper: reaps orphans of the command's tree at once, forwards SIGTERM, exits with the
 * command's status.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { subreaperPath } from '../scenarios/workload';

function ppidOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('subreaper', () => {
  let dir: string;
  let sub: ChildProcess | undefined;
  let orphan: number | undefined;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-subreaper-'));
  });
  afterEach(async () => {
    for (const pid of [orphan, sub?.exitCode === null ? sub.pid : undefined]) {
      if (pid !== undefined && ppidOf(pid) !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    sub = orphan = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('reaps an orphaned grandchild as soon as it exits, and forwards SIGTERM', async () => {
    const pidFile = path.join(dir, 'orphan.pid');
    // The subshell starts a background job and exits at once: the job is orphaned and reparented to us.
    const script = `( sh -c 'echo $$ > ${pidFile}; exec sleep 0.4' & ) ; exec sleep 30`;
    sub = spawn(subreaperPath(), ['sh', '-c', script], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => sub!.on('exit', (code) => resolve(code)));
    await until('the orphan to start', () => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').endsWith('\n'));
    orphan = Number(fs.readFileSync(pidFile, 'utf8'));
    await until('the orphan to be reparented', () => ppidOf(orphan!) === sub!.pid);
    // Gone entirely (reaped), not a zombie waiting for PID 1.
    await until('the orphan to be reaped', () => ppidOf(orphan!) === undefined, 3000);
    expect(sub.exitCode).toBeNull();
    sub.kill('SIGTERM');
    expect(await exited).toBe(128 + os.constants.signals.SIGTERM);
  });

  test("exits with the command's status; refuses no command", () => {
    expect(spawnSync(subreaperPath(), ['sh', '-c', 'exit 7']).status).toBe(7);
    const none = spawnSync(subreaperPath(), [], { encoding: 'utf8' });
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('usage: subreaper CMD');
    const missing = spawnSync(subreaperPath(), ['/nonexistent/cmd'], { encoding: 'utf8' });
    expect(missing.status).toBe(127);
    expect(missing.stderr).toContain('cannot run /nonexistent/cmd');
  });
});
