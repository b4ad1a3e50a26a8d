/**
 * Pseudo-terminals: a pty pair inside the tree with termios, window size, a session whose controlling terminal it
 * is and a foreground process group, through dump + kill + restore and a --leave-running snapshot; a terminal
 * whose master is outside the tree is refused before freezing.
 */
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { dump } from '../checkpoint/dump';
import { entries, WorkloadFixture, info } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-cov-');
afterEach(() => fx.cleanup());

test('pty: the pair, its settings, the session and the foreground group come back (new PID namespace)', async () => {
  await fx.restoredPasses('pty');
});

test('pty: restored twice in the host PID namespace, the session leader holds the terminal again', async () => {
  const w = await fx.start('pty');
  await fx.cycle(w, { newPidns: false });
  await fx.cycle(w, { newPidns: false, compress: 'none' });
  // tty_nr (field 7) of the session child is the slave again, and its foreground group (field 8) is G.
  const [, s, g] = w.pids;
  const stat = (pid: number) => fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const [name] = info(w, 'pty');
  const index = Number(name.split('/').pop());
  expect(Number(stat(s)[4])).toBe((136 << 8) | index);
  expect(Number(stat(s)[5])).toBe(g);
  expect(Number(stat(g)[4])).toBe((136 << 8) | index);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('pty snapshot: tty-info for both sides, TTY files, session and foreground group recorded', async () => {
  const w = await fx.start('pty');
  const [, s, g] = w.pids;
  const [name] = info(w, 'pty');
  const index = Number(name.split('/').pop());
  const { dir } = await fx.snapshot(w);
  const infos = new Map(entries(dir, 'tty-info.img').map((e) => [e.id, e]));
  const master = infos.get(index * 2 + 1)!;
  expect(master).toMatchObject({ type: 1, sid: s, pgrp: g, pty: { index }, winsize: { ws_row: 33, ws_col: 111, ws_xpixel: 640, ws_ypixel: 480 } });
  expect(infos.get(index * 2)).toMatchObject({ type: 1, pty: { index } });
  const ttys = entries(dir, 'files.img').filter((f) => f.type === 11);
  expect(ttys.map((f) => (f.tty as Record<string, unknown>).tty_info_id).sort()).toEqual(expect.arrayContaining([index * 2, index * 2 + 1]));
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a terminal whose master is outside the tree is refused before freezing, naming pid, fd and kind', async () => {
  // `script` runs its command on a new pty whose master it keeps: the command's stdio is a "shell job" terminal.
  const dir = fx.imageDir();
  // `exec` and the subtree walk: script runs $SHELL (or /bin/sh when unset, as under CI), and not every shell execs
  // a lone command itself, so sleep may be a grandchild of script.
  const child = spawn('script', ['-qfec', 'exec sleep 30', '/dev/null'], { stdio: 'ignore', detached: true });
  let sleeper = 0;
  try {
    for (let i = 0; i < 500 && !sleeper; i++) {
      await new Promise((r) => setTimeout(r, 20));
      sleeper = descendants(child.pid!).find((k) => comm(k) === 'sleep') ?? 0;
    }
    expect(sleeper).toBeGreaterThan(0);
    const err = await dump({ pid: sleeper, dir }).catch((e: Error) => e);
    expect((err as Error).message).toMatch(new RegExp(`pid ${sleeper} fd 0: terminal /dev/pts/\\d+ whose master is outside the tree`));
    expect((err as Error).message).toContain('nothing was frozen');
    expect(fs.readFileSync(`/proc/${sleeper}/stat`, 'utf8').split(') ')[1][0]).toMatch(/[SR]/);
  } finally {
    for (const pid of [sleeper, -child.pid!]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function descendants(pid: number): number[] {
  let kids: number[] = [];
  try {
    kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return kids.flatMap((k) => [k, ...descendants(k)]);
}
