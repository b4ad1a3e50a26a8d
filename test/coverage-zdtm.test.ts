/**
 * State that CRIU's own conformance tests (zdtm static) found godwit losing, each reproduced by a workload of
 * ours: dump + kill + restore (and a --leave-running snapshot), then the workload checks itself.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { restore } from '../restore';
import { entries, info, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz-');
afterEach(() => fx.cleanup());

test('fown: SIGIO owners (process, process group), their signal and recorded credentials come back and still signal; two descriptions of a pipe end keep their own flags', async () => {
  await fx.restoredPasses('fown');
});

test('fown snapshot: files.img carries each owner once, the workload keeps running unharmed', async () => {
  const w = await fx.start('fown');
  const { dir } = await fx.snapshot(w);
  const owned = entries(dir, 'files.img')
    .map((e) => Object.values(e).find((v) => v && typeof v === 'object' && 'fown' in (v as object)) as { fown: Record<string, unknown> } | undefined)
    .map((x) => x?.fown)
    .filter((f) => f && Number(f.pid) !== 0);
  expect(owned).toEqual(
    expect.arrayContaining([
      expect.objectContaining({ pid: w.pid, pid_type: 1, signum: 29, uid: 0, euid: 1 }), // F_OWNER_PID, SIGIO
      expect.objectContaining({ pid: w.pid, pid_type: 2, signum: 35 }), // F_OWNER_PGRP, SIGRTMIN+1
    ]),
  );
  expect(owned).toHaveLength(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('sessions: a child left in the session its parent had before setsid() (two levels down too) keeps it', async () => {
  await fx.restoredPasses('sessions');
});

test('sessions in the host PID namespace: a process outside the dump holding the root PID as its session is named', async () => {
  const w = await fx.start('sessions', ['--orphan', '1']);
  const orphan = Number(info(w, 'orphan')[0]);
  try {
    const dir = fx.imageDir();
    await dump({ pid: w.pid, dir });
    const err = await restore({ dir, newPidns: false, detach: true }, { silent: true }).catch((e: Error) => e);
    expect((err as Error).message).toContain(`PID ${w.pid} is still the process group id of process ${orphan} ("sessions")`);
    expect((err as Error).message).toContain('restore with --new-pidns, or end that process');
    process.kill(orphan, 'SIGKILL');
    await waitGone(orphan);
    await fx.restore(w, dir, { newPidns: false });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  } finally {
    try {
      process.kill(orphan, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

test('unix-pending: connections a listener has not accepted wait in its queue again, in order; its file keeps mode and owner', async () => {
  await fx.restoredPasses('unix-pending');
});

test('unix-pending snapshot: the waiting connections are entries no fd holds, the workload keeps running unharmed', async () => {
  const w = await fx.start('unix-pending');
  const { dir } = await fx.snapshot(w);
  const usk = entries(dir, 'files.img')
    .map((e) => e.usk as Record<string, unknown> | undefined)
    .filter((u): u is Record<string, unknown> => !!u);
  const waiting = usk.filter((u) => Number(u.ino) === 0);
  expect(waiting).toHaveLength(2);
  const listener = usk.find((u) => Number(u.state) === 10)!;
  expect(listener.file_perms).toEqual({ mode: 0o140640, uid: 4242, gid: 4343 });
  for (const e of waiting) expect(Buffer.from(e.name as Uint8Array).equals(Buffer.from(listener.name as Uint8Array))).toBe(true);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('stopped: a child in a job-control stop comes back stopped (its parent sees the stop), runs on SIGCONT', async () => {
  await fx.restoredPasses('stopped');
});

test('stopped, host PID namespace and a snapshot: stays stopped through --leave-running and a restore', async () => {
  const w = await fx.start('stopped');
  await fx.snapshot(w);
  await fx.cycle(w, { newPidns: false });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('unix-odd: a datagram socket connected to itself and an unconnected bound stream socket come back working', async () => {
  await fx.restoredPasses('unix-odd');
});

test('unix-odd snapshot: dumping them leaves the workload unharmed', async () => {
  const w = await fx.start('unix-odd');
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('cow: a --leave-running snapshot leaves memory shared copy-on-write between a parent and its child', async () => {
  const w = await fx.start('cow');
  const { summary } = await fx.snapshot(w);
  expect(summary.pages).toBeGreaterThan(0);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 500 && fs.existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 10));
}
