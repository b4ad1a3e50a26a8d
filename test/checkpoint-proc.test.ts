/**
 * /proc parsers and target checks against real processes this test starts (and always kills).
 */
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseStat, readStat } from '../checkpoint/proc/stat';
import { readStatus } from '../checkpoint/proc/status';
import { readSmaps } from '../checkpoint/proc/maps';
import { Pagemap } from '../checkpoint/proc/pagemap';
import { readFdInfo, parseFdInfo } from '../checkpoint/proc/fdinfo';
import { parseTimers, readAuxv, readLimits, readNamespaces, parseMountInfo, readTasks } from '../checkpoint/proc/misc';
import { buildMappings, MAP_GROWSDOWN, VMA_AREA_HEAP, VMA_AREA_VDSO, VMA_AREA_VVAR, VMA_FILE_PRIVATE } from '../checkpoint/vma';
import { collectPageRanges, PE_LAZY } from '../checkpoint/pageranges';
import { resolveTarget, scanTree } from '../checkpoint/tree';
import { findProblems } from '../checkpoint/preflight';
import { NamespaceIds } from '../checkpoint/namespaces';
import { readBuildId } from '../checkpoint/elf';
import { UsageError } from '../util/errors';

/**
 * A TCP connection stuck in SYN_SENT, an inet socket state godwit refuses: the listener's accept queue (backlog 1)
 * is full with the first two connections, never accepted (the event loop is blocked), so the kernel drops the next SYNs.
 */
const SYN_SENT_TCP =
  'const net=require("net");const s=net.createServer();s.listen({port:0,host:"127.0.0.1",backlog:1},()=>{' +
  'const p=s.address().port;for(let i=0;i<4;i++)net.connect(p,"127.0.0.1").on("error",()=>{});' +
  'setTimeout(()=>{console.log("ready");Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0)},200)})';

const started: ChildProcess[] = [];
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-proc-'));
});

afterAll(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Starts `sh -c script` with only fds 0-2 (/dev/null) and waits until it wrote "ready" to its stdout. */
async function startShell(script: string): Promise<ChildProcess> {
  const c = spawn('/bin/sh', ['-c', `${script}; echo ready; exec sleep 1000`], { stdio: ['ignore', 'pipe', 'ignore'] });
  started.push(c);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    c.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    c.on('exit', (code) => reject(new Error(`shell exited early (${code})`)));
  });
  // `exec sleep` replaces the shell: wait until sleep sleeps. Its comm changes at exec, before ld.so has mapped
  // and mprotect()ed its libraries, so only the sleeping state says that its maps have settled.
  const settled = () => {
    const st = readStat(c.pid!);
    return st.comm === 'sleep' && st.state === 'S';
  };
  for (let i = 0; i < 2000 && !settled(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!settled()) throw new Error(`pid ${c.pid} did not exec sleep and go to sleep within 10 s`);
  return c;
}

test('stat: comm with spaces and parentheses', () => {
  const st = parseStat('123 (a) (b c) S 1 123 123 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 4 5 6 7 8 9 10 0');
  expect(st.comm).toBe('a) (b c');
  expect(st.state).toBe('S');
  expect(st.ppid).toBe(1);
  expect(st.startCode).toBe(1n);
  expect(st.argStart).toBe(7n);
  expect(st.envEnd).toBe(10n);
});

test('stat and status of a real process agree', async () => {
  const c = await startShell('true');
  const st = readStat(c.pid!);
  const ss = readStatus(c.pid!);
  expect(st.pid).toBe(c.pid);
  expect(st.ppid).toBe(process.pid);
  expect(ss.ppid).toBe(process.pid);
  expect(ss.tgid).toBe(c.pid);
  expect(ss.tracerPid).toBe(0);
  expect(ss.uids).toEqual([0, 0, 0, 0]);
  expect(ss.capEff).toBeGreaterThan(0n);
  expect(readTasks(c.pid!)).toEqual([c.pid]);
  expect(st.argStart).toBeGreaterThan(0n);
  expect(st.argEnd).toBeGreaterThan(st.argStart);
});

test('smaps -> CRIU VMAs: vdso, vvar+vvar_vclock merged, stack guard page, heap, file ids', async () => {
  const c = await startShell('true');
  const vmas = readSmaps(c.pid!);
  const files: string[] = [];
  const fileId = (p: string) => (files.includes(p) ? files.indexOf(p) + 1 : files.push(p));
  const maps = buildMappings(c.pid!, vmas, fileId);
  const entries = maps.map((m) => m.entry);
  const vvar = entries.filter((e) => e.status & VMA_AREA_VVAR);
  expect(vvar).toHaveLength(1);
  const rawVvar = vmas.filter((v) => v.path === '[vvar]' || v.path === '[vvar_vclock]');
  expect(vvar[0]!.start).toBe(rawVvar[0]!.start);
  expect(vvar[0]!.end).toBe(rawVvar[rawVvar.length - 1]!.end);
  expect(vvar[0]!.madv).toBe(1n << 16n); // MADV_DONTDUMP, as CRIU 4.2 records it
  expect(entries.filter((e) => e.status & VMA_AREA_VDSO)).toHaveLength(1);
  const stack = maps.find((m) => m.proc.path === '[stack]')!;
  expect(stack.entry.flags & MAP_GROWSDOWN).toBeTruthy();
  expect(stack.entry.start).toBe(stack.proc.start - 4096n);
  const sleepMaps = maps.filter((m) => m.file?.path === '/usr/bin/sleep');
  expect(sleepMaps.length).toBeGreaterThan(1);
  for (const m of sleepMaps) {
    expect(m.entry.status & VMA_FILE_PRIVATE).toBeTruthy();
    expect(m.entry.shmid).toBe(BigInt(files.indexOf('/usr/bin/sleep') + 1));
  }
  if (vmas.some((v) => v.path === '[heap]')) expect(entries.some((e) => e.status & VMA_AREA_HEAP)).toBe(true);
  expect(maps.filter((m) => m.unsupported)).toEqual([]);
});

test('pagemap: dumped ranges cover the touched stack and skip page-cache pages', async () => {
  const c = await startShell('true');
  const maps = buildMappings(c.pid!, readSmaps(c.pid!));
  const pm = Pagemap.open(c.pid!);
  try {
    const { ranges, stats } = collectPageRanges(pm, maps);
    expect(stats.pagesDumped).toBeGreaterThan(0);
    expect(stats.pagesSkippedFile).toBeGreaterThan(0); // text pages come from the file
    const stack = maps.find((m) => m.proc.path === '[stack]')!.proc;
    const sp = readStat(c.pid!).startStack;
    const r = ranges.find((x) => x.start <= sp && sp < x.start + BigInt(x.nrPages) * 4096n);
    expect(r).toBeDefined();
    expect(r!.start).toBeGreaterThanOrEqual(stack.start);
    expect(r!.flags & PE_LAZY).toBeTruthy();
    // Sorted, non-overlapping.
    for (let i = 1; i < ranges.length; i++)
      expect(ranges[i]!.start).toBeGreaterThanOrEqual(ranges[i - 1]!.start + BigInt(ranges[i - 1]!.nrPages) * 4096n);
  } finally {
    pm.close();
  }
});

test('fdinfo: position and flags of a file read part way', async () => {
  const f = path.join(tmp, 'data');
  fs.writeFileSync(f, 'x'.repeat(10000));
  const c = await startShell(`exec 7<${f}; exec 8>>${f}; dd bs=1234 count=1 <&7 >/dev/null 2>&1`);
  const i7 = readFdInfo(c.pid!, 7);
  expect(i7.pos).toBe(1234n);
  expect(i7.flags & 3).toBe(0); // O_RDONLY
  const i8 = readFdInfo(c.pid!, 8);
  expect(i8.flags & 0o2000).toBeTruthy(); // O_APPEND
  expect(i8.mntId).toBeGreaterThan(0);
});

test('fdinfo kind lines: epoll, timerfd, inotify, eventfd', () => {
  const epoll = parseFdInfo('pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\ntfd:        5 events:       19 data:                5  pos:0 ino:41f sdev:f\n');
  expect(epoll.epoll).toEqual([{ tfd: 5, events: 0x19, data: 5n, pos: 0n, ino: 0x41f, sdev: 0xf }]);
  const tfd = parseFdInfo('pos:\t0\nflags:\t02004002\nmnt_id:\t16\nino:\t1057\nclockid: 1\nticks: 3\nsettime flags: 01\nit_value: (0, 49406829)\nit_interval: (1, 500)\n');
  expect(tfd.timerfd).toEqual({ clockid: 1, ticks: 3n, settimeFlags: 1, valueSec: 0n, valueNsec: 49406829n, intervalSec: 1n, intervalNsec: 500n });
  const ino = parseFdInfo('pos:\t0\nflags:\t00\nmnt_id:\t16\nino:\t1057\ninotify wd:1 ino:2a sdev:fe00000 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2a00000012345678\n');
  expect(ino.inotify[0]).toMatchObject({ wd: 1, ino: 0x2an, sdev: 0xfe00000, mask: 0xfff, fhandleBytes: 8, fhandleType: 1 });
  expect(ino.inotify[0]!.fhandle).toEqual(Buffer.from('2a00000012345678', 'hex'));
  const efd = parseFdInfo('pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\neventfd-count:       2a\neventfd-id: 7\neventfd-semaphore: 1\n');
  expect(efd.eventfdCount).toBe(42n);
  expect(efd.eventfdSemaphore).toBe(true);
});

test('timers, limits, namespaces, auxv, mountinfo', () => {
  expect(parseTimers('ID: 0\nsignal: 14/00007f0000001234\nnotify: thread/tid.77\nClockID: 1\nID: 1\nsignal: 10/0000000000000000\nnotify: signal/pid.70\nClockID: 0\n')).toEqual([
    { id: 0, notify: 4 | 2, notifyTid: 77, signo: 14, sigval: 0x7f0000001234n, clockId: 1 },
    { id: 1, notify: 0, notifyTid: 70, signo: 10, sigval: 0n, clockId: 0 },
  ]);
  const lim = readLimits(process.pid);
  expect(lim).toHaveLength(16);
  expect(readNamespaces(process.pid).net).toBeGreaterThan(0);
  const auxv = readAuxv(process.pid);
  expect(auxv.length % 2).toBe(0);
  expect(auxv).toContain(6n); // AT_PAGESZ
  const mi = parseMountInfo('22 27 0:21 / /proc rw,relatime shared:5 - proc proc rw\n30 27 0:5 / /a\\040b rw - tmpfs none rw\n');
  expect(mi[0]).toMatchObject({ mntId: 22, parentId: 27, mountPoint: '/proc', fsType: 'proc', optional: ['shared:5'] });
  expect(mi[1]!.mountPoint).toBe('/a b');
});

test('build-id of an ELF binary is five 32-bit words; none for a text file', () => {
  const id = readBuildId('/usr/bin/sleep');
  expect(id).toHaveLength(5);
  expect(readBuildId('/etc/hostname')).toBeUndefined();
});

describe('target validation happens before anything is touched', () => {
  test('no such pid', () => {
    expect(() => resolveTarget(4194303)).toThrow(/no such process: pid 4194303/);
  });
  test('kernel thread', () => {
    expect(() => resolveTarget(2)).toThrow(/kernel thread/);
  });
  test('godwit itself and its ancestors', () => {
    expect(() => resolveTarget(process.pid)).toThrow(UsageError);
    expect(() => resolveTarget(process.ppid)).toThrow(/ancestor of godwit/);
  });
  test('bad pid values', () => {
    expect(() => resolveTarget(0)).toThrow(/positive integer/);
    expect(() => resolveTarget(-5)).toThrow(/positive integer/);
  });
});

test('scanTree finds threads; preflight names an inet socket in SYN_SENT and leaves the process alone', async () => {
  const server = spawn(process.execPath, ['-e', SYN_SENT_TCP], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  started.push(server);
  await new Promise<void>((resolve) => server.stdout!.on('data', () => resolve()));
  const tree = scanTree(server.pid!);
  expect(tree.processes).toHaveLength(1);
  expect(tree.processes[0]!.threads.length).toBeGreaterThan(1); // node has worker threads
  expect(tree.processes[0]!.threads[0]).toBe(server.pid);
  const problems = findProblems(tree, new NamespaceIds());
  const inet = problems.find((p) => /inet socket \(tcp\)/.test(p.kind));
  expect(inet).toBeDefined();
  expect(inet!.pid).toBe(server.pid);
  expect(inet!.where).toMatch(/^fd \d+$/);
  const st = readStatus(server.pid!);
  expect(st.tracerPid).toBe(0);
  expect(st.state).not.toMatch(/[tT]/);
});

test('scanTree walks children of every thread, parents first', async () => {
  const c = await startShell('true');
  // sh -c "A & B" style tree: a parent shell with two sleeping children.
  const parent = spawn('/bin/sh', ['-c', 'sleep 1000 & sleep 1000 & wait'], { stdio: 'ignore' });
  started.push(parent);
  let tree = scanTree(parent.pid!);
  for (let i = 0; i < 1000 && tree.processes.length < 3; i++) {
    await new Promise((r) => setTimeout(r, 10));
    tree = scanTree(parent.pid!);
  }
  try {
    expect(tree.processes).toHaveLength(3);
    expect(tree.processes[0]!.pid).toBe(parent.pid);
    for (const ch of tree.processes.slice(1)) expect(ch.ppid).toBe(parent.pid);
    expect(scanTree(c.pid!).processes).toHaveLength(1);
  } finally {
    for (const ch of tree.processes.slice(1)) process.kill(ch.pid, 'SIGKILL');
  }
});
