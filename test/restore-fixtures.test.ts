/**
 * Restore of real CRIU 4.2 dumps (shared/fixtures/criu-4.2): `sleep 10000` and `sh -c "sleep 10000 | cat"`,
 * into a new PID namespace and into the host's, plus the failures that must be caught before anything runs
 * and the cleanup after a failure half-way.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { decodeImage, encodeImage } from '../images';
import { restore, RestoreResult } from '../restore';
import { fixturesDir } from './shared-dir';
import { fdLinks, innerPid, killPid, procStat, sleepMs, waitFor } from './restore-helpers';

const criu = path.join(fixturesDir(), 'criu-4.2');
const sleepDir = path.join(criu, 'sleep');
const pipelineDir = path.join(criu, 'pipeline');
const cli = path.resolve(__dirname, '..', 'cli', 'main.js');

const started: RestoreResult[] = [];

const alive = (pid: number) => {
  const st = procStat(pid);
  return !!st && st.state !== 'Z' && st.state !== 'X';
};

/**
 * The state a restored sleeper settles in: on a loaded machine a sleeping task is caught running now and then
 * (woken by a timer, or still returning from the restore), so one look is not enough. Still 'S' or not at 5 s.
 */
async function settledState(pid: number): Promise<string | undefined> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const st = procStat(pid)?.state;
    if (st === 'S' || Date.now() > deadline) return st;
    await sleepMs(20);
  }
}

function liveWithComm(comm: string): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d) && procStat(Number(d))?.comm === comm && alive(Number(d))).map(Number);
}
const tmpDirs: string[] = [];

afterEach(async () => {
  for (const r of started.splice(0)) {
    for (const pid of r.pids.values()) killPid(pid);
    if (r.restorer) {
      killPid(r.restorer.pid);
      await r.restorer.waitExit();
    }
  }
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function imageVmas(dir: string, pid: number): string[] {
  const mm = decodeImage(fs.readFileSync(path.join(dir, `mm-${pid}.img`)), 'mm').entries[0].msg;
  const prot = (p: number) => `${p & 1 ? 'r' : '-'}${p & 2 ? 'w' : '-'}${p & 4 ? 'x' : '-'}`;
  const out: string[] = [];
  for (const v of mm.vmas as { start: bigint; end: bigint; prot: number; status: number }[]) {
    if (v.status & 4) continue; // [vsyscall] is the kernel's, not the task's
    out.push(`${v.start.toString(16)}-${v.end.toString(16)} ${prot(v.prot)}`);
  }
  return out;
}

function procVmas(pid: number): string[] {
  const out: string[] = [];
  for (const l of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n')) {
    const f = l.split(/\s+/);
    const name = f[5] ?? '';
    if (name === '[vsyscall]') continue;
    // CRIU records [vvar] and [vvar_vclock] as one VMA; the kernel shows two.
    if (name === '[vvar_vclock]' && out.length) {
      out[out.length - 1] = out[out.length - 1].replace(/-[0-9a-f]+ /, `-${f[0].split('-')[1]} `);
      continue;
    }
    out.push(`${f[0]} ${f[1].slice(0, 3)}`);
  }
  return out;
}

describe('restore of CRIU 4.2 images', () => {
  test('sleep restores into a new PID namespace and keeps running with its pid, maps and fds', async () => {
    const r = await restore({ dir: sleepDir, newPidns: true, detach: true }, { silent: true });
    started.push(r);
    const pid = r.rootPid;
    expect(pid).toBeGreaterThan(0);
    await sleepMs(300);
    expect(await settledState(pid)).toBe('S');
    const st = procStat(pid)!;
    expect(st.comm).toBe('sleep');
    expect(innerPid(pid)).toBe(16344);
    expect(st.pgrp).toBe(pid);
    expect(st.session).toBe(pid);
    expect(procVmas(pid)).toEqual(imageVmas(sleepDir, 16344));
    expect(fdLinks(pid)).toEqual({ 0: '/dev/null', 1: '/dev/null', 2: '/dev/null' });
    expect(fs.readlinkSync(`/proc/${pid}/cwd`)).toBe('/tmp');
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe('/usr/bin/sleep');
    // Nothing of the restorer stays behind in it: no stopped or traced state.
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    expect(status).toMatch(/TracerPid:\s+0\n/);
    expect(r.pageBytes).toBeGreaterThan(0);
    // Killing the root ends the namespace: the restorer (its init) exits too.
    killPid(pid);
    await r.restorer!.waitExit();
    expect(alive(pid)).toBe(false);
  });

  test('pipeline: three processes, one pipe between sleep and cat, same process group and session', async () => {
    const r = await restore({ dir: pipelineDir, newPidns: true, detach: true }, { silent: true });
    started.push(r);
    const sh = r.pids.get(16368)!;
    const sleep = r.pids.get(16371)!;
    const cat = r.pids.get(16372)!;
    await sleepMs(300);
    expect([procStat(sh)!.comm, procStat(sleep)!.comm, procStat(cat)!.comm]).toEqual(['sh', 'sleep', 'cat']);
    for (const p of [sh, sleep, cat]) {
      expect(await settledState(p)).toBe('S');
      expect(procStat(p)!.pgrp).toBe(sh);
      expect(procStat(p)!.session).toBe(sh);
      expect(procVmas(p).length).toBeGreaterThan(10);
    }
    expect(procStat(sleep)!.ppid).toBe(sh);
    expect(procStat(cat)!.ppid).toBe(sh);
    expect([innerPid(sh), innerPid(sleep), innerPid(cat)]).toEqual([16368, 16371, 16372]);
    const sleepOut = fdLinks(sleep)[1];
    expect(sleepOut).toMatch(/^pipe:\[\d+\]$/);
    expect(fdLinks(cat)[0]).toBe(sleepOut);
    expect(fdLinks(sh)).toEqual({ 0: '/dev/null', 1: '/dev/null', 2: '/dev/null' });
    // sh still handles SIGINT and SIGCHLD as it did (its handlers came back).
    expect(fs.readFileSync(`/proc/${sh}/status`, 'utf8')).toMatch(/SigCgt:\s+0*10002\n/);
    // The pipeline works: when sleep dies, cat sees EOF and sh reaps both and exits.
    killPid(sleep);
    await r.restorer!.waitExit();
    expect([sh, sleep, cat].filter(alive)).toEqual([]);
  });

  test('in the host PID namespace: waits for the root, and a taken PID is refused before anything runs', async () => {
    if (fs.existsSync('/proc/16344')) {
      await expect(restore({ dir: sleepDir }, { silent: true })).rejects.toThrow(/PID 16344 .*in use.*--new-pidns/);
      return;
    }
    const first = restore({ dir: sleepDir }, { silent: true });
    let firstResult: RestoreResult | Error | undefined;
    first.then((r) => (firstResult = r), (e) => (firstResult = e));
    let rootPid = 0;
    try {
      // Running, not traced ('t'): the restore has handed it over.
      await waitFor(() => firstResult !== undefined || (procStat(16344)?.comm === 'sleep' && procStat(16344)?.state === 'S'), 10000, 'the restored sleep');
      if (firstResult instanceof Error) throw firstResult;
      rootPid = 16344;
      const again = spawnSync(process.execPath, [cli, 'restore', '--dir', sleepDir], { encoding: 'utf8' });
      expect(again.status).toBe(1);
      expect(again.stderr).toMatch(/PID 16344 \(task\) is in use on this host by "sleep": restore with --new-pidns/);
    } finally {
      killPid(rootPid || (procStat(16344)?.comm === 'sleep' ? 16344 : 0));
      await first.catch(() => undefined);
    }
    // Without --detach the restore reports the root's end: killed by SIGKILL.
    expect((await first).exitCode).toBe(128 + 9);
  });

  test('CLI: --detach --new-pidns --json --pidfile', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-restore-'));
    tmpDirs.push(dir);
    const pidfile = path.join(dir, 'pid');
    const out = spawnSync(process.execPath, [cli, 'restore', '--dir', sleepDir, '--new-pidns', '--detach', '--json', '--pidfile', pidfile], {
      encoding: 'utf8',
      timeout: 30000,
    });
    const report = out.stdout ? JSON.parse(out.stdout) : null;
    const pid = Number(fs.existsSync(pidfile) ? fs.readFileSync(pidfile, 'utf8') : 0);
    try {
      expect(out.stderr).toBe('');
      expect(out.status).toBe(0);
      expect(report.rootPid).toBe(pid);
      expect(report.pids).toEqual({ 16344: pid });
      expect(procStat(pid)!.comm).toBe('sleep');
      expect(innerPid(pid)).toBe(16344);
    } finally {
      killPid(pid);
    }
    await waitFor(() => !alive(pid), 5000, 'the restored sleep to end');
  });
});

describe('restore refuses bad input before creating anything', () => {
  function copyFixture(src: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-restore-'));
    tmpDirs.push(dir);
    for (const f of fs.readdirSync(src)) {
      fs.copyFileSync(path.join(src, f), path.join(dir, f));
      fs.chmodSync(path.join(dir, f), 0o644);
    }
    return dir;
  }

  function rewrite(dir: string, file: string, kind: string, edit: (msgs: Record<string, unknown>[]) => void): void {
    const p = path.join(dir, file);
    const img = decodeImage(fs.readFileSync(p), p);
    const msgs = img.entries.map((e) => e.msg as Record<string, unknown>);
    edit(msgs);
    fs.writeFileSync(p, encodeImage(kind, img.entries));
  }

  test('a file a mapping needs is missing: the error names it', async () => {
    const dir = copyFixture(sleepDir);
    rewrite(dir, 'files.img', 'FILES', (m) => {
      (m.find((f) => f.id === 2)!.reg as Record<string, unknown>).name = '/usr/lib/x86_64-linux-gnu/libc-gone.so.6';
    });
    await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(
      /libc-gone\.so\.6 \(mapped by task 16344\) does not exist on this host/,
    );
  });

  test('a mapped file whose size changed since the dump is refused (one that grew too: another binary)', async () => {
    const dir = copyFixture(sleepDir);
    rewrite(dir, 'files.img', 'FILES', (m) => {
      (m.find((f) => f.id === 1)!.reg as Record<string, unknown>).size = 12345n;
    });
    await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(
      /\/usr\/bin\/sleep .* changed since the dump \(size 12345, now \d+\)/,
    );
  });

  test('a truncated image is an image error naming the file', async () => {
    const dir = copyFixture(sleepDir);
    const core = path.join(dir, 'core-16344.img');
    fs.truncateSync(core, fs.statSync(core).size - 100);
    await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(/core-16344\.img/);
  });

  test('a missing directory says so', async () => {
    await expect(restore({ dir: '/nonexistent/godwit-images', detach: true }, { silent: true })).rejects.toThrow(
      /image directory \/nonexistent\/godwit-images does not exist/,
    );
  });

  test('a failure half-way kills everything the restore created', async () => {
    const dir = copyFixture(sleepDir);
    // A name no other process has (tests of other checkouts may run at the same time), set before the failure.
    const name = `gwfail${process.pid}`.slice(0, 15);
    // An alternate signal stack with an invalid flag: sigaltstack fails after tree, memory and fds are back.
    rewrite(dir, 'core-16344.img', 'CORE', (m) => {
      const tc = m[0].thread_core as Record<string, unknown>;
      tc.sas = { ss_sp: 0x7ffe40ee6000n, ss_size: 8192n, ss_flags: 0x40 };
      tc.comm = name;
    });
    await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(
      /set the alternate signal stack: sigaltstack failed: EINVAL \(pid 16344\)/,
    );
    await sleepMs(100);
    expect(liveWithComm(name)).toEqual([]);
  });
});

describe('restore of kernel objects (added to the sleep image)', () => {
  const ghostPath = path.join(os.tmpdir(), `godwit-ghost-${process.pid}`);

  function withObjects(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-restore-'));
    tmpDirs.push(dir);
    for (const f of fs.readdirSync(sleepDir)) {
      fs.copyFileSync(path.join(sleepDir, f), path.join(dir, f));
      fs.chmodSync(path.join(dir, f), 0o644);
    }
    const edit = (file: string, kind: string, fn: (e: { type: string; msg: Record<string, unknown> }[]) => void) => {
      const p = path.join(dir, file);
      const img = decodeImage(fs.readFileSync(p), p);
      fn(img.entries as { type: string; msg: Record<string, unknown> }[]);
      fs.writeFileSync(p, encodeImage(kind, img.entries));
    };
    const fown = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
    edit('files.img', 'FILES', (e) => {
      e.push({ type: 'file_entry', msg: { type: 6, id: 100, efd: { id: 100, flags: 0o4002 | 1, fown, counter: 5n } } });
      e.push({ type: 'file_entry', msg: { type: 9, id: 101, sgfd: { id: 101, flags: 2, fown, sigmask: 1n << 9n } } });
      e.push({
        type: 'file_entry',
        msg: { type: 17, id: 102, tfd: { id: 102, flags: 2, fown, clockid: 1, ticks: 3n, settime_flags: 0, vsec: 100n, vnsec: 0n, isec: 7n, insec: 0n } },
      });
      e.push({
        type: 'file_entry',
        msg: { type: 7, id: 103, epfd: { id: 103, flags: 2, fown, tfd: [{ id: 103, tfd: 3, events: (1 | (1 << 31)) >>> 0, data: 0x1234n }] } },
      });
    });
    edit('fdinfo-2.img', 'FDINFO', (e) => {
      e.push({ type: 'fdinfo_entry', msg: { id: 100, flags: 0, type: 6, fd: 3 } });
      e.push({ type: 'fdinfo_entry', msg: { id: 101, flags: 1, type: 9, fd: 4 } });
      e.push({ type: 'fdinfo_entry', msg: { id: 102, flags: 0, type: 17, fd: 5 } });
      e.push({ type: 'fdinfo_entry', msg: { id: 103, flags: 0, type: 7, fd: 9 } });
      e.push({ type: 'fdinfo_entry', msg: { id: 104, flags: 0, type: 1, fd: 6 } });
    });
    // A deleted file still open at offset 3: its content travels in a ghost image.
    edit('files.img', 'FILES', (e) => {
      e.push({ type: 'file_entry', msg: { type: 1, id: 104, reg: { id: 104, flags: 2, pos: 3n, fown, name: ghostPath, mode: 0o100600 } } });
    });
    fs.writeFileSync(path.join(dir, 'remap-fpath.img'), encodeImage('REMAP_FPATH', [{ type: 'remap_file_path_entry', msg: { orig_id: 104, remap_id: 1, remap_type: 1 } }]));
    fs.writeFileSync(
      path.join(dir, 'ghost-file-1.img'),
      encodeImage('GHOST_FILE', [{ type: 'ghost_file_entry', msg: { uid: 0, gid: 0, mode: 0o100600, size: 11n }, extra: Buffer.from('hello ghost') }]),
    );
    edit('core-16344.img', 'CORE', (e) => {
      const timers = (e[0].msg.tc as Record<string, unknown>).timers as Record<string, unknown>;
      timers.posix = [
        { it_id: 7, clock_id: 1, si_signo: 0, it_sigev_notify: 1, sival_ptr: 0n, overrun: 0, isec: 5n, insec: 0n, vsec: 100n, vnsec: 0n },
      ];
    });
    return dir;
  }

  test('unix sockets: a socketpair and a listener with an accepted connection, queued data, names', async () => {
    const dir = withObjects();
    const sockPath = path.join(os.tmpdir(), `godwit-sock-${process.pid}`);
    tmpDirs.push(sockPath);
    const edit = (file: string, kind: string, fn: (e: { type: string; msg: Record<string, unknown>; extra?: Buffer }[]) => void) => {
      const p = path.join(dir, file);
      const img = decodeImage(fs.readFileSync(p), p);
      fn(img.entries as { type: string; msg: Record<string, unknown> }[]);
      fs.writeFileSync(p, encodeImage(kind, img.entries));
    };
    const fown = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
    const opts = { so_sndbuf: 212992, so_rcvbuf: 212992, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n };
    const usk = (id: number, ino: number, state: number, peer: number, name: string, backlog = 0) => ({
      type: 'file_entry',
      msg: { type: 5, id, usk: { id, ino, type: 1, state, flags: 2, uflags: 0, backlog, peer, fown, opts, name: Buffer.from(name) } },
    });
    edit('files.img', 'FILES', (e) => {
      e.push(usk(200, 900500, 1, 900501, ''), usk(201, 900501, 1, 900500, ''));
      e.push(usk(202, 900510, 10, 0, sockPath, 5), usk(203, 900511, 1, 900512, sockPath), usk(204, 900512, 1, 900511, ''));
    });
    edit('fdinfo-2.img', 'FDINFO', (e) => {
      [200, 201, 202, 203, 204].forEach((id, i) => e.push({ type: 'fdinfo_entry', msg: { id, flags: 0, type: 5, fd: 10 + i } }));
    });
    fs.writeFileSync(
      path.join(dir, 'sk-queues.img'),
      encodeImage('SK_QUEUES', [
        { type: 'sk_packet_entry', msg: { id_for: 200, length: 5 }, extra: Buffer.from('hello') },
        { type: 'sk_packet_entry', msg: { id_for: 204, length: 3 }, extra: Buffer.from('abc') },
      ]),
    );
    const r = await restore({ dir, newPidns: true, detach: true }, { silent: true });
    started.push(r);
    const pid = r.rootPid;
    const links = fdLinks(pid);
    for (const fd of [10, 11, 12, 13, 14]) expect(links[fd]).toMatch(/^socket:\[\d+\]$/);
    // ss: the listener and the accepted socket carry the path; queued bytes show as Recv-Q.
    const ss = spawnSync('ss', ['-x', '-a', '-p', '-n'], { encoding: 'utf8' }).stdout.split('\n');
    const line = (fd: number) => ss.find((l) => l.includes(`pid=${pid},fd=${fd})`)) ?? '';
    const ino = (fd: number) => links[fd].replace(/\D/g, '');
    expect(line(10)).toMatch(/^u_str\s+ESTAB\s+5\s/);
    expect(line(10)).toContain(` * ${ino(11)} `);
    expect(line(12)).toMatch(/^u_str\s+LISTEN\s/);
    expect(line(12)).toContain(sockPath);
    expect(line(13)).toContain(sockPath);
    expect(line(14)).toMatch(/^u_str\s+ESTAB\s+3\s/);
    expect(line(14)).toContain(` ${ino(13)} `);
  });

  test('eventfd, signalfd, timerfd, epoll and a POSIX timer come back with their state', async () => {
    const r = await restore({ dir: withObjects(), newPidns: true, detach: true }, { silent: true });
    started.push(r);
    const pid = r.rootPid;
    const info = (fd: number) => fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    expect(fdLinks(pid)).toEqual({
      0: '/dev/null', 1: '/dev/null', 2: '/dev/null', 3: 'anon_inode:[eventfd]', 4: 'anon_inode:[signalfd]',
      5: 'anon_inode:[timerfd]', 6: `${ghostPath} (deleted)`, 9: 'anon_inode:[eventpoll]',
    });
    expect(info(6)).toMatch(/^pos:\s+3\n/);
    expect(fs.readFileSync(`/proc/${pid}/fd/6`, 'utf8')).toBe('hello ghost');
    expect(fs.existsSync(ghostPath)).toBe(false);
    expect(info(3)).toMatch(/eventfd-count:\s+5\n/);
    expect(info(3)).toMatch(/eventfd-semaphore:\s+1\n/);
    expect(info(3)).toMatch(/flags:\s+0*4002\n/); // O_RDWR | O_NONBLOCK, no O_CLOEXEC
    expect(info(4)).toMatch(/flags:\s+0*2000002\n/); // O_RDWR, and fd 4 was close-on-exec
    expect(info(4)).toMatch(/sigmask:\s+0*200\n/);
    expect(info(5)).toMatch(/clockid: 1\n/);
    expect(info(5)).toMatch(/ticks: 3\n/);
    expect(info(5)).toMatch(/it_interval: \(7, 0\)/);
    // EPOLLIN | EPOLLET as added; the kernel always adds EPOLLERR | EPOLLHUP.
    expect(info(9)).toMatch(/tfd:\s+3 events:\s+80000019 data:\s+1234/);
    const timers = fs.readFileSync(`/proc/${pid}/timers`, 'utf8');
    expect(timers).toMatch(/ID: 7\n/);
    expect(timers).toMatch(/notify: none\/pid\.\d+\n/);
    expect(timers).toMatch(/ClockID: 1\n/);
    expect(await settledState(pid)).toBe('S');
  });
});
