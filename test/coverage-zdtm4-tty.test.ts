/**
 * Terminals and files that CRIU's conformance tests (zdtm static pty00, pty02, remap_dead_pid) found godwit
 * refusing or losing on a dump + kill + restore, each reproduced by a workload of ours that checks itself after
 * the restore; a /proc file of an exited process is now refused at dump instead of failing at restore.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { dump } from '../checkpoint/dump';
import { entries, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz4-tty-');
afterEach(() => fx.cleanup());

/** tty-data.img entries as (tty_info id, text). */
function queued(dir: string): [number, string][] {
  return entries(dir, 'tty-data.img')
    .map((e) => [Number(e.tty_id), Buffer.from(e.data as Uint8Array).toString('latin1')] as [number, string])
    .sort((a, b) => a[0] - b[0]);
}

test('pty --queued: bytes queued both ways in a canonical pair come back, the slave reading them line by line', async () => {
  const w = await fx.start('pty', ['--queued', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  // The second pair's slave (even id) has the two lines to read, its master (odd id) the echo and the slave's line.
  const q = queued(dir);
  expect(q.map(([, t]) => t)).toEqual(['one\ntwo\n', 'one\r\ntwo\r\nback\r\n']);
  expect(q[1][0]).toBe(q[0][0] + 1);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('pty --queued 2: a master in packet mode gets its queued bytes back without the status bytes its reads add', async () => {
  const w = await fx.start('pty', ['--queued', '2']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  expect(queued(dir).map(([, t]) => t)).toEqual(['one\ntwo\n', 'one\r\ntwo\r\nback\r\n']);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each(['1', '2'])('pty --queued %s snapshot: the running pair holds its queued bytes again after they were read for the image (and no status byte in packet mode)', async (queuedOpt) => {
  const w = await fx.start('pty', ['--queued', queuedOpt]);
  const { dir } = await fx.snapshot(w);
  expect(queued(dir)).toHaveLength(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('pty --ctty: a /dev/tty fd comes back as the controlling terminal of its holder, which answers through it', async () => {
  const w = await fx.start('pty', ['--ctty', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  // One CTTY tty_info (type 4, rdev 5:0) naming the pair's index.
  const ctty = entries(dir, 'tty-info.img').filter((e) => e.type === 4);
  expect(ctty).toHaveLength(1);
  expect(ctty[0].rdev).toBe((5 << 20) | 0);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a /proc file of a process that has exited is refused before freezing, naming pid, fd and path (zdtm remap_dead_pid)', async () => {
  // bash opens /proc/<child>/status, the child is killed and reaped, then bash becomes sleep with the fd still open.
  const child = spawn('bash', ['-c', 'sleep 100 & p=$!; exec 5</proc/$p/status; kill -9 $p; wait $p; echo $p; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const dead = Number(await new Promise<string>((res) => child.stdout!.once('data', (d: Buffer) => res(d.toString()))));
    for (let i = 0; i < 100 && !fs.readlinkSync(`/proc/${child.pid}/exe`).endsWith('/sleep'); i++) await new Promise((r) => setTimeout(r, 20));
    const err = await dump({ pid: child.pid!, dir: fx.imageDir() }).catch((e: Error) => e);
    expect((err as Error).message).toContain(`pid ${child.pid} fd 5: /proc/${dead}/status: a /proc file of process ${dead}, which has exited`);
    expect((err as Error).message).toContain('nothing was frozen');
  } finally {
    child.kill('SIGKILL');
  }
});

test('pty --hung-up: the slave of a pair whose master was closed comes back hung up (the restored master is closed again)', async () => {
  const w = await fx.start('pty', ['--hung-up', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  // Two pairs: the session's (both sides) and the hung-up one (its slave only, without settings).
  const infos = entries(dir, 'tty-info.img');
  expect(infos.filter((e) => !e.termios)).toHaveLength(1);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('files --watch-opens 1: a snapshot does not open the tree\'s files by path (its inotify watching them sees nothing)', async () => {
  const w = await fx.start('files', ['--watch-opens', '1']);
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('files --watch-opens 2: inotify events not read yet are refused by name (they could not be queued again), the tree left running', async () => {
  const w = await fx.start('files', ['--watch-opens', '2']);
  const err = await dump({ pid: w.pid, dir: fx.imageDir() }).catch((e: Error) => e);
  expect(String((err as Error).message) + String(((err as Error).cause as Error | undefined)?.message)).toMatch(/inotify holds \d+ bytes of events not read yet/);
  expect(fs.readFileSync(`/proc/${w.pid}/stat`, 'utf8').split(') ')[1][0]).toMatch(/[SR]/);
});

test('files --terminals: a console and a virtual terminal held open (not as controlling terminal) are reopened by their paths', async () => {
  const w = await fx.start('files', ['--terminals', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  const chr = entries(dir, 'files.img').filter((e) => e.reg && (Number((e.reg as { mode: number }).mode) & 0o170000) === 0o020000);
  expect(chr.map((e) => (e.reg as { name: string }).name.split('/').pop()).sort()).toEqual(expect.arrayContaining(['console', 'vt5']));
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fs-places --linked 2: a removed file with other links, whose directory was removed too, gets its link remap in the nearest directory left and keeps its inode', async () => {
  const w = await fx.start('fs-places', ['--linked', '2']);
  const { dir } = await fx.snapshot(w);
  const remaps = fs.readdirSync(w.dir).filter((f) => f.startsWith('.godwit-link-remap.'));
  expect(remaps).toHaveLength(1);
  expect(fs.statSync(path.join(w.dir, remaps[0])).ino).toBe(fs.statSync(path.join(w.dir, 'linked.alias')).ino);
  for (const pid of w.pids) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 200 && w.pids.some((p) => fs.existsSync(`/proc/${p}`)); i++) await new Promise((r) => setTimeout(r, 10));
  await fx.restore(w, dir, { newPidns: false });
  expect(fs.readdirSync(w.dir).filter((f) => f.startsWith('.godwit-link-remap.'))).toEqual([]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([true, false])('aio (new pid namespace: %s): AIO rings come back at their addresses, with their unreaped events and the kernel\'s tail where it was', async (newPidns) => {
  const w = await fx.start('aio');
  const pid = w.pid;
  const { dir } = await fx.cycle(w, { newPidns });
  const aios = entries(dir, `mm-${pid}.img`)[0].aios as { ring_len: number; tail: number }[];
  expect(aios).toHaveLength(2);
  expect(aios.some((a) => a.tail > 0)).toBe(true);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('aio snapshot: the running rings are left as they were', async () => {
  const w = await fx.start('aio');
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([true, false])('files --terminals 2 (new pid namespace: %s): a session whose controlling terminal is a virtual terminal gets it back', async (newPidns) => {
  const w = await fx.start('files', ['--terminals', '2']);
  const leader = w.pids[1];
  const { dir } = await fx.cycle(w, { newPidns });
  expect(entries(dir, 'tty-info.img').filter((e) => e.type === 3)).toMatchObject([{ sid: leader, rdev: (4 << 20) | 5 }]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('ghosts --device 1: a removed device node held open is made again with its device and mode, then removed', async () => {
  const w = await fx.start('ghosts', ['--device', '1']);
  const { dir } = await fx.cycle(w, { newPidns: false });
  const ghosts = fs.readdirSync(dir).filter((f) => f.startsWith('ghost-file-')).flatMap((f) => entries(dir, f));
  expect(ghosts.filter((g) => (Number(g.mode) & 0o170000) === 0o020000)).toMatchObject([{ rdev: (1 << 8) | 5 }]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
