/**
 * The target's memory reserve (migrate/reserve.ts, `godwit-restorer --reserve`): a real process that faults memory
 * in and holds it until released, never outlives the process that started it, and is sized within what the host
 * can spare. How `godwit receive --migrate` uses it is covered by test/migrate.test.ts (every migration there makes
 * one; the target must hold nothing afterwards, also after each fault).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MemoryReserve, memAvailable, reserveSize } from '../migrate/reserve';

const MiB = 1 << 20;
const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

function status(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return undefined;
  }
}

const alive = (pid: number) => {
  const s = status(pid);
  return s !== undefined && !/^State:\s+Z/m.test(s);
};

async function waitGone(pid: number, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

describe('memory reserve for a migration target', () => {
  test('holds the memory it reports, named godwit-reserve, and frees it on release', async () => {
    const r = MemoryReserve.start(96 * MiB)!;
    expect(r).toBeDefined();
    started.push(r.pid!);
    expect(r.bytes).toBe(96 * MiB);
    expect(await r.ready()).toBe(96 * MiB);
    const st = status(r.pid!)!;
    // Resident: faulted in, not just mapped.
    expect(Number(/^VmRSS:\s+(\d+) kB/m.exec(st)![1]) * 1024).toBeGreaterThanOrEqual(96 * MiB);
    expect(/^Name:\s+(\S+)/m.exec(st)![1]).toBe('godwit-reserve');
    expect(fs.readFileSync(`/proc/${r.pid}/cmdline`, 'latin1')).not.toContain('godwit-restorer');
    expect(fs.readFileSync(`/proc/${r.pid}/oom_score_adj`, 'latin1').trim()).toBe('1000');
    const pid = r.pid!;
    await r.release();
    expect(alive(pid)).toBe(false);
    expect(r.heldAtRelease).toBe(96 * MiB);
    await r.release(); // idempotent
  });

  test('released before it is complete: stops at once, reports what it had', async () => {
    const r = MemoryReserve.start(2048 * MiB, undefined)!;
    if (!r) return expect(reserveSize(2048 * MiB)).toBe(0); // a host without 2 GiB to spare makes none
    started.push(r.pid!);
    await r.release();
    expect(alive(r.pid!)).toBe(false);
    expect(r.heldAtRelease! <= 2048 * MiB).toBe(true);
    expect(await r.ready()).toBe(r.reserved ?? 0);
  });

  test('dies with the process that started it (a receiver killed outright leaves nothing)', async () => {
    const script = `const { MemoryReserve } = require(${JSON.stringify(path.resolve(__dirname, '..', 'migrate', 'reserve.js'))});
      const r = MemoryReserve.start(${64 * MiB});
      r.ready().then(() => { process.stdout.write(r.pid + '\\n'); setInterval(() => {}, 1000); });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(child.pid!);
    const pid = await new Promise<number>((res, rej) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d;
        if (out.includes('\n')) res(Number(out.trim()));
      });
      child.once('exit', () => rej(new Error(`the node child exited before its reserve was ready: ${out}`)));
    });
    started.push(pid);
    expect(alive(pid)).toBe(true);
    child.kill('SIGKILL');
    expect(await waitGone(pid)).toBe(true);
  });

  test('sized within what the host can spare', () => {
    const avail = 8192 * MiB;
    expect(reserveSize(1024 * MiB, avail)).toBe(1024 * MiB);
    // A quarter of what is available always stays free.
    expect(reserveSize(100_000 * MiB, avail)).toBe(6144 * MiB);
    expect(reserveSize(2048 * MiB, 1024 * MiB)).toBe(768 * MiB);
    // Too little to be worth it: none.
    expect(reserveSize(16 * MiB, avail)).toBe(0);
    expect(reserveSize(1024 * MiB, 200 * MiB)).toBe(0);
    expect(reserveSize(1024 * MiB, 0)).toBe(0);
    expect(memAvailable()).toBeGreaterThan(0);
    expect(MemoryReserve.start(MiB)).toBeUndefined();
  });

  test('`godwit receive --reserve-memory` is checked: only with --migrate, a number of bytes', () => {
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'receive', '--dir', '/nonexistent/godwit-x', ...args], { encoding: 'utf8' });
    const a = run(['--reserve-memory', '1048576']);
    expect(a.status).toBe(2);
    expect(a.stderr).toMatch(/--reserve-memory and --cache-images go with --migrate/);
    const b = run(['--migrate', '--reserve-memory', 'lots']);
    expect(b.status).toBe(2);
    expect(b.stderr).toMatch(/--reserve-memory lots: give a number of bytes/);
  });
});
