/**
 * Every scenario workload starts, becomes ready, and verifies PASS when nothing touched it; the harness gives it
 * its own session and only the fds it owns; bad options are refused with a clear message.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findWorkloadPids, NEEDS_PEER, startWorkload, WORKLOAD_NAMES, type Workload } from '../scenarios/workload';

const STANDALONE = WORKLOAD_NAMES.filter((n) => !NEEDS_PEER.includes(n));

/** Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session. */
function procStat(pid: number): { ppid: number; pgid: number; sid: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), pgid: Number(f[2]), sid: Number(f[3]) };
}

function signalAll(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) process.kill(pid, sig);
}

function fdTargets(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) out.set(Number(fd), fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
  return out;
}

describe('scenario workloads, untouched', () => {
  let w: Workload | undefined;
  afterEach(async () => {
    await w?.cleanup();
    w = undefined;
  });

  test.each(STANDALONE)('%s becomes ready and verifies PASS', async (name) => {
    w = await startWorkload(name);
    expect(w.pids.length).toBeGreaterThan(0);
    expect(w.alivePids()).toEqual(w.pids);
    // Its own session, so that a checkpoint of the tree holds its whole session and no one else's signals reach it.
    expect(procStat(w.pid).sid).toBe(w.pid);
    const fds = fdTargets(w.pid);
    expect(fds.get(0)).toBe(path.join(w.dir, 'stdin'));
    expect(fds.get(1)).toBe(path.join(w.dir, 'log'));
    expect(fds.get(2)).toBe(path.join(w.dir, 'log'));
    const result = await w.verify();
    expect(result).toEqual({ pass: true, detail: 'PASS' });
    expect(w.alivePids()).toEqual([]);
    expect(fs.readFileSync(path.join(w.dir, 'log'), 'utf8')).toContain('result: PASS');
  });

  // A checkpoint stops the workload for a while: that alone must not upset any checker (timers keep counting,
  // sleeps are cut short, a busy loop misses its clock).
  // Not 'stopped': its child's job-control stop is the state it checks, and the SIGCONT here would end it.
  test.each(STANDALONE.filter((n) => n !== 'stopped'))('%s verifies PASS after being stopped for 300 ms', async (name) => {
    w = await startWorkload(name);
    signalAll(w.pids, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 300));
    signalAll(w.pids, 'SIGCONT');
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('mem-counter holds only fds 0-2 although the harness had others open', async () => {
    const leaked = fs.openSync(__filename, 'r'); // Node opens with O_CLOEXEC; the workload must close strays anyway
    try {
      w = await startWorkload('mem-counter', { args: ['--mib', '8'] });
      expect([...fdTargets(w.pid).keys()].sort()).toEqual([0, 1, 2]);
    } finally {
      fs.closeSync(leaked);
    }
  });

  test('mem-counter with a dirty area keeps rewriting it and verifies PASS', async () => {
    w = await startWorkload('mem-counter', { args: ['--mib', '16', '--dirty-pages', '64', '--dirty-rate', '5000'] });
    expect(w.info.dirty).toMatch(/^0x[0-9a-f]+ 262144$/);
    await new Promise((r) => setTimeout(r, 100));
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
    expect(fs.readFileSync(path.join(w.dir, 'log'), 'utf8')).toMatch(/dirty writes \d{3,}/);
  });

  test('pipe-tree: five processes, c2 in its own session, c3 in its own process group', async () => {
    w = await startWorkload('pipe-tree');
    expect(w.pids).toHaveLength(5);
    const [main, c1, g, c2, c3] = w.pids as [number, number, number, number, number];
    expect(Number(w.info['proc-c2'])).toBe(c2);
    expect(procStat(c1)).toEqual({ ppid: main, pgid: main, sid: main });
    expect(procStat(g)).toEqual({ ppid: c1, pgid: main, sid: main });
    expect(procStat(c2)).toEqual({ ppid: main, pgid: c2, sid: c2 });
    expect(procStat(c3)).toEqual({ ppid: main, pgid: c3, sid: main });
    const zombie = Number(w.info['proc-zombie']);
    expect(procStat(zombie)).toEqual({ ppid: main, pgid: main, sid: main });
    expect(fs.readFileSync(`/proc/${zombie}/stat`, 'utf8')).toMatch(/\) Z /);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
    expect(findWorkloadPids(w.dir)).toEqual([]);
  });

  test('threads reports every thread id (main, the ring, the blocked reader)', async () => {
    w = await startWorkload('threads', { args: ['--threads', '4'] });
    expect(w.tids).toHaveLength(6);
    const reader = Number(w.info.reader!.split(' ')[0]);
    expect(w.tids[5]).toBe(reader);
    // The reader sits in read(): its kernel wait channel says so.
    expect(fs.readFileSync(`/proc/${w.pid}/task/${reader}/wchan`, 'utf8')).toMatch(/pipe_read|pipe_wait/);
    expect(fs.readdirSync(`/proc/${w.pid}/task`).map(Number).sort()).toEqual([...w.tids].sort());
    expect((await w.verify()).pass).toBe(true);
  });

  test('kill() ends a whole tree and cleanup() is safe twice', async () => {
    w = await startWorkload('pipe-tree');
    const dir = w.dir;
    await w.kill();
    expect(w.alivePids()).toEqual([]);
    expect(findWorkloadPids(dir)).toEqual([]);
    await w.cleanup();
    await w.cleanup();
    expect(fs.existsSync(dir)).toBe(false);
  });

  test('verify() of a dead workload says so; of a stopped one it times out with the log', async () => {
    w = await startWorkload('signals');
    process.kill(w.pid, 'SIGKILL');
    const dead = await w.verify({ timeoutMs: 5000 });
    expect(dead.pass).toBe(false);
    expect(dead.detail).toMatch(new RegExp(`^no result: signals \\(pid ${w.pid}\\) is gone; log:\n.*signals: ready`, 's'));
    await w.cleanup();
    w = await startWorkload('files');
    process.kill(w.pid, 'SIGSTOP'); // cleanup's SIGKILL ends it even stopped
    await expect(w.verify({ timeoutMs: 200 })).rejects.toThrow(/files \(pid \d+\) gave no result within 200 ms[\s\S]*files: ready/);
  });

  test('bad options are refused with the reason, and nothing is left behind', async () => {
    await expect(startWorkload('mem-counter', { args: ['--bogus', '1'] })).rejects.toThrow(
      /exited with status 2 before it was ready[\s\S]*unknown option --bogus/,
    );
    await expect(startWorkload('mem-counter', { args: ['--mib', '1'] })).rejects.toThrow(/--mib 1 is out of range 2\.\./);
    await expect(startWorkload('threads', { args: ['--threads', 'many'] })).rejects.toThrow(/'many' is not an integer/);
    await expect(startWorkload('nonsense' as never)).rejects.toThrow(/unknown workload 'nonsense'/);
  });

  test('a workload that is not ready in time is killed and reported', async () => {
    await expect(startWorkload('mem-counter', { args: ['--mib', '4096'], readyTimeoutMs: 50 })).rejects.toThrow(
      /was not ready within 50 ms/,
    );
  });
});
