/**
 * inotify events in flight at the freeze (`tail -F FILE` while something appends to FILE): the freeze lets the
 * tree run a moment and freezes it again until no event is left unread (checkpoint/freeze.ts freezeSettled), so the
 * dump goes through without losing one; a watcher that never reads is still refused, its tree running on unharmed.
 * Workload inotify-feed: a watcher that reads its events 150 ms late and a writer that waits for each record to be
 * read (a lost event stalls the pair), in kill mode, --leave-running, --pre-copy and a migration; a container
 * (ctr-workload --features inotify, inotify-unread) for the cgroup freezer around each freeze. Also: a watcher
 * frozen in poll() with no timeout re-enters it after restore (native/src/regs.c; tail -F dies of EINTR).
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump, DumpSummary } from '../checkpoint/dump';
import { createHosts } from '../scenarios/hosts';
import { runUnshareContainer, UnshareContainer } from '../scenarios/container/unshare';
import { restore, RestoreResult } from '../restore';
import { endRestoredRoot } from './helpers/restored';
import { findWorkloadPids, startWorkload, Workload } from '../scenarios/workload';
import { WorkloadFixture } from './helpers/workload-fixture';
import { runInHost } from './helpers/run-in-host';

const fx = new WorkloadFixture('godwit-inotify-');
afterEach(() => fx.cleanup());

/** Snapshots until one had to freeze again (an event is in flight 60% of the time); every one must succeed. */
async function snapshotsUntilRefrozen(w: Workload, extra: { preCopy?: boolean } = {}): Promise<DumpSummary[]> {
  const out: DumpSummary[] = [];
  for (let i = 0; i < 12 && !out.some((s) => s.refreeze); i++)
    out.push(await dump({ pid: w.pid, dir: fx.imageDir(), compress: 'none', leaveRunning: true, ...extra }));
  return out;
}

function expectRefrozen(summaries: DumpSummary[]): void {
  const r = summaries.find((s) => s.refreeze)?.refreeze;
  expect(r).toEqual(expect.objectContaining({ reason: 'inotify events in flight' }));
  expect(r!.freezes).toBeGreaterThan(1);
  expect(r!.waitedMs).toBeGreaterThan(0);
}

test('inotify-feed --leave-running: snapshots with an event in flight freeze again instead of failing; nothing is lost', async () => {
  const w = await fx.start('inotify-feed');
  const summaries = await snapshotsUntilRefrozen(w);
  expectRefrozen(summaries);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('inotify-feed: dump (killed) and restore with an event in flight; the restored pair goes on', async () => {
  const w = await fx.start('inotify-feed');
  // Until a dump finds an event queued at its first freeze: kill mode must carry that case too.
  for (let i = 0; i < 12; i++) {
    const { summary } = await fx.cycle(w, { newPidns: false });
    if (summary.refreeze) break;
  }
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('inotify-feed --poll-forever: a watcher frozen in poll() with no timeout enters it again after restore (tail -F dies of EINTR)', async () => {
  const w = await fx.start('inotify-feed', ['--poll-forever', '1', '--lag-ms', '0']);
  await fx.cycle(w, { newPidns: false });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('inotify-feed --pre-copy: the final freeze waits out events in flight too', async () => {
  const w = await fx.start('inotify-feed');
  const summaries = await snapshotsUntilRefrozen(w, { preCopy: true });
  expectRefrozen(summaries);
  expect(summaries.every((s) => s.preCopy && !s.preCopy.fallback)).toBe(true);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('inotify-feed --never-read: events nobody reads are refused after the bounded wait; the tree runs on, the events still queued', async () => {
  const w = await fx.start('inotify-feed', ['--never-read', '1']);
  const dir = fx.imageDir();
  const t0 = Date.now();
  const err = (await dump({ pid: w.pid, dir }).catch((e: Error) => e)) as Error;
  const text = `${err.message} ${(err.cause as Error | undefined)?.message}`;
  expect(text).toMatch(new RegExp(`pid ${w.pid} fd \\d+: inotify holds \\d+ bytes of events not read yet, which cannot be queued again at restore \\(still there after 10 freezes over \\d+ ms`));
  expect(Date.now() - t0).toBeLessThan(5000);
  expect(fs.existsSync(dir)).toBe(false);
  expect(w.alivePids().sort()).toEqual([...w.pids].sort());
  for (const pid of w.pids) expect(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0]).toMatch(/[SR]/);
  expect(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8')).toMatch(/TracerPid:\s+0\n/);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('inotify-feed migrates between two test hosts with events in flight, and verifies itself on the target', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-inotify-migrate-'));
  const bed = await createHosts();
  const children = new Set<ChildProcess>();
  let w: Workload | undefined;
  try {
    w = await startWorkload('inotify-feed', { tmpRoot: work, prefix: ['nsenter', `--net=${bed.source.nsPath('net')}`] });
    const source = w.pids;
    const cli = path.resolve(__dirname, '..', 'cli', 'main.js');
    const r = await runInHost(bed.source, [process.execPath, cli, 'migrate', '--pid', String(w.pid), '--to', `root@${bed.target.address}`,
      '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', `${process.execPath} ${cli}`,
      '--target-dir', path.join(work, 'img'), '--json'], children);
    expect({ code: r.code, error: r.error }).toEqual({ code: 0, error: undefined });
    const done = r.events.find((e) => e.event === 'done') as { summary: { dump: DumpSummary } } | undefined;
    if (done!.summary.dump.refreeze) expect(done!.summary.dump.refreeze.reason).toBe('inotify events in flight');
    const now = findWorkloadPids(w.dir);
    expect(now.length).toBe(2);
    for (const p of source) expect(now).not.toContain(p);
    // The watcher (the ready file's first pid) is the parent of the writer.
    const watcher = now.find((p) => now.includes(Number(/^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))![1])) === false)!;
    w.setPids([watcher, now.find((p) => p !== watcher)!]);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await w?.cleanup().catch(() => undefined);
    await bed.destroy();
    fs.rmSync(work, { recursive: true, force: true });
  }
}, 90_000);

describe('a container (cgroup freezer around each freeze)', () => {
  let uc: UnshareContainer | undefined;
  let restored: RestoreResult | undefined;
  const dirs: string[] = [];
  afterEach(async () => {
    await endRestoredRoot(restored);
    restored = undefined;
    await uc?.destroy();
    uc = undefined;
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const imageDir = (): string => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-inotify-ctr-'));
    dirs.push(d);
    return path.join(d, 'img');
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** The container's cgroup freezer is not left set, and it goes on counting. */
  async function expectRunning(c: UnshareContainer, root = c.pid): Promise<void> {
    for (const d of c.cgroupDirs) {
      const events = path.join(d, 'cgroup.events');
      if (fs.existsSync(events)) expect(fs.readFileSync(events, 'utf8')).toMatch(/^frozen 0$/m);
    }
    const count = () => Number(fs.readFileSync(`/proc/${root}/root/tmp/count`, 'utf8'));
    const before = count();
    await sleep(300);
    expect(count()).toBeGreaterThan(before);
    expect(fs.existsSync(`/proc/${root}/root/tmp/result`) ? fs.readFileSync(`/proc/${root}/root/tmp/result`, 'utf8') : undefined).toBeUndefined();
  }

  test('snapshots until one freezes again, then a dump (killed) and restore: every event read, the count goes on', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-ify', features: 'inotify' });
    const summaries: DumpSummary[] = [];
    for (let i = 0; i < 12 && !summaries.some((s) => s.refreeze); i++)
      summaries.push(await dump({ pid: uc.pid, dir: imageDir(), compress: 'none', leaveRunning: true }));
    expectRefrozen(summaries);
    await expectRunning(uc);
    const dir = imageDir();
    await dump({ pid: uc.pid, dir });
    restored = await restore({ dir, detach: true }, { silent: true });
    await expectRunning(uc, restored.rootPid);
  }, 60_000);

  test('an event nobody reads: refused after 10 freezes, the freezer not left set, the container runs on', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-ify-u', features: 'inotify-unread' });
    const dir = imageDir();
    const err = (await dump({ pid: uc.pid, dir }).catch((e: Error) => e)) as Error;
    expect(`${err.message} ${(err.cause as Error | undefined)?.message}`).toMatch(/inotify holds \d+ bytes of events not read yet, which cannot be queued again at restore \(still there after 10 freezes/);
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.readFileSync(`/proc/${uc.pid}/status`, 'utf8')).toMatch(/TracerPid:\s+0\n/);
    await expectRunning(uc);
  }, 60_000);
});
