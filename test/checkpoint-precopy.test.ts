/**
 * Pre-copy (checkpoint/precopy.ts, native/src/track.c): a workload that keeps writing memory is dumped with
 * --pre-copy --leave-running, continues unharmed, and its images restore into a new PID namespace to a state that
 * verifies; a failure in the middle of pre-copy (a throwing round callback, a killed helper) leaves the workload
 * untracked and running; a mapping registered by the workload's own userfaultfd is not tracked (copied while
 * frozen) and stays the workload's.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dump, DumpSummary } from '../checkpoint/dump';
import { MemReader, readPieces } from '../checkpoint/memreader';
import { PageBuffer, SLOT_SIZE } from '../checkpoint/pagebuffer';
import { readvAddon } from '../checkpoint/readv';
import { PageStore } from '../checkpoint/pagestore';
import { PreCopy } from '../checkpoint/precopy';
import { collectPageRanges, scanPageRanges } from '../checkpoint/pageranges';
import { inspectMappings } from '../checkpoint/memory';
import { Pagemap } from '../checkpoint/proc/pagemap';
import { Helper } from '../native/helper';
import { Workload } from '../scenarios/workload';
import { GodwitError, SysError } from '../util/errors';
import { WorkloadFixture } from './helpers/workload-fixture';

jest.setTimeout(180_000);

const fx = new WorkloadFixture('godwit-precopy-');
const helpers: Helper[] = [];
const readers: MemReader[] = [];

afterEach(async () => {
  for (const h of helpers.splice(0)) await h.close().catch(() => undefined);
  for (const r of readers.splice(0)) await r.close().catch(() => undefined);
  await fx.cleanup();
});

const start = (args: string[]): Promise<Workload> => fx.start('mem-counter', args);

/** No trace of tracking: no userfaultfd among the fds, no mapping registered for write-protect, not traced. */
function untracked(pid: number): void {
  const fds = fs.readdirSync(`/proc/${pid}/fd`).map((f) => fs.readlinkSync(`/proc/${pid}/fd/${f}`));
  expect(fds.filter((l) => l.includes('userfaultfd'))).toEqual([]);
  expect(fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').match(/^VmFlags:.*\buw\b.*$/gm) ?? []).toEqual([]);
  expect(fs.readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/^TracerPid:\s+0$/m);
}

/** A word of the workload's counter page (struct counter in mem-counter.c): the loop advances it without pause. */
function counterWord(w: Workload, word: 'value' | 'dirtyWrites'): bigint {
  const addr = Number(BigInt(w.info.counter!)) + (word === 'value' ? 0 : 16);
  const fd = fs.openSync(`/proc/${w.pid}/mem`, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, addr);
    return b.readBigUInt64LE(0);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Waits until the workload has moved WORD past its value now (a loaded machine may not schedule it for a while);
 * fails if it does not within 10 s.
 */
async function advances(w: Workload, word: 'value' | 'dirtyWrites'): Promise<void> {
  const a = counterWord(w, word);
  const deadline = Date.now() + 10_000;
  while (counterWord(w, word) <= a && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(counterWord(w, word)).toBeGreaterThan(a);
}

const stillRunning = (w: Workload): Promise<void> => advances(w, 'value');

test('a workload writing pages all the time: pre-copied in rounds, continues unharmed, restores and verifies', async () => {
  // 1024 dirty pages rewritten at 20,000 pages/s: every round finds the set dirty again.
  const w = await start(['--mib', '48', '--dirty-pages', '1024', '--dirty-rate', '20000']);
  const dir = fx.imageDir();
  const lines: string[] = [];
  const s: DumpSummary = await dump({
    pid: w.pid,
    dir,
    leaveRunning: true,
    preCopy: { maxRounds: 4, onRound: (r) => void lines.push(`${r.round}:${r.bytes}`) },
  });
  const pc = s.preCopy!;
  expect(pc.fallback).toBeUndefined();
  expect(pc.untracked).toEqual([]);
  expect(pc.rounds.length).toBeGreaterThanOrEqual(2);
  expect(lines.length).toBe(pc.rounds.length);
  // Round 1 copies the whole area, later rounds what was written meanwhile, the frozen window only the rest.
  expect(pc.rounds[0]!.bytes).toBeGreaterThanOrEqual(48 << 20);
  expect(pc.rounds[1]!.bytes).toBeLessThan(pc.rounds[0]!.bytes / 4);
  expect(pc.frozenBytes).toBeLessThan(s.pageBytes / 4);
  expect(s.pageBytes).toBeGreaterThanOrEqual(48 << 20);
  const logAtDump = fs.readFileSync(path.join(w.dir, 'log'));
  untracked(w.pid);
  await stillRunning(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });

  // The image holds the state at the freeze: the restored copy verifies too (every dirty page its last stamp).
  // (its log as it was at the dump: the running original wrote its verdict into it since)
  fs.rmSync(path.join(w.dir, 'result'), { force: true });
  fs.rmSync(path.join(w.dir, 'go'), { force: true });
  fs.writeFileSync(path.join(w.dir, 'log'), logAtDump);
  await fx.restore(w, dir);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('pre-copy into plain CRIU pages, the tree killed after the images are written: restores and verifies', async () => {
  const w = await start(['--mib', '16', '--dirty-pages', '256', '--dirty-rate', '5000']);
  const dir = fx.imageDir();
  const s = await dump({ pid: w.pid, dir, compress: 'none', preCopy: true });
  expect(s.preCopy!.rounds.length).toBeGreaterThanOrEqual(2);
  expect(w.alivePids()).toEqual([]);
  expect(fs.statSync(path.join(dir, 'pages-1.img')).size).toBe(s.pageBytes);
  await fx.restore(w, dir);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a failure in the middle of pre-copy: the dump fails, the workload is untracked, running and intact', async () => {
  const w = await start(['--mib', '16', '--dirty-pages', '256', '--dirty-rate', '5000']);
  const dir = fx.imageDir();
  let sawTracking = false;
  await expect(
    dump({
      pid: w.pid,
      dir,
      leaveRunning: true,
      preCopy: {
        onRound: (r) => {
          // While pre-copy runs the workload's memory is registered (write-protect tracking)...
          sawTracking = /^VmFlags:.*\buw\b/m.test(fs.readFileSync(`/proc/${w.pid}/smaps`, 'utf8'));
          if (r.round === 2) throw new GodwitError('injected failure after round 2');
        },
      },
    }),
  ).rejects.toThrow(/injected failure after round 2/);
  expect(sawTracking).toBe(true);
  // ...and afterwards nothing of it is left, and no image directory.
  untracked(w.pid);
  expect(fs.existsSync(dir)).toBe(false);
  await stillRunning(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('the helper killed while tracking: the kernel drops the tracking with it, the workload runs on', async () => {
  const w = await start(['--mib', '8', '--dirty-pages', '64', '--dirty-rate', '5000']);
  const h = await Helper.start();
  helpers.push(h);
  const reader = new MemReader(1);
  readers.push(reader);
  const pc = await PreCopy.start(h, [w.pid], new PageStore(32 << 20), reader);
  await pc.run({ maxRounds: 2 });
  expect(fs.readFileSync(`/proc/${w.pid}/smaps`, 'utf8')).toMatch(/^VmFlags:.*\buw\b/m);
  process.kill(h.pid, 'SIGKILL');
  await h.close().catch(() => undefined);
  for (let i = 0; i < 100 && /^VmFlags:.*\buw\b/m.test(fs.readFileSync(`/proc/${w.pid}/smaps`, 'utf8')); i++)
    await new Promise((r) => setTimeout(r, 20));
  untracked(w.pid);
  await stillRunning(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a process that exits between rounds is dropped from tracking; the others go on', async () => {
  const stays = await start(['--mib', '8', '--dirty-pages', '64', '--dirty-rate', '5000']);
  const goes = await start(['--mib', '8']);
  const h = await Helper.start();
  helpers.push(h);
  const reader = new MemReader(1);
  readers.push(reader);
  const pc = await PreCopy.start(h, [stays.pid, goes.pid], new PageStore(64 << 20), reader);
  try {
    const rep = await pc.run({
      maxRounds: 3,
      convergeBytes: 1,
      onRound: async (r) => {
        if (r.round === 1) {
          await goes.kill();
          // The one that stays writes a page after round 1 before round 2 scans, so the round has work to do.
          await advances(stays, 'dirtyWrites');
        }
      },
    });
    expect(rep.rounds.length).toBeGreaterThanOrEqual(2);
    expect(rep.untracked).toEqual([{ pid: goes.pid, reason: 'it exited during pre-copy' }]);
    expect(pc.trackedPids).toEqual([stays.pid]);
    expect(rep.rounds[1]!.bytes).toBeGreaterThan(0); // the one still running keeps being copied
  } finally {
    await pc.stop();
  }
  untracked(stays.pid);
  expect(await stays.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test("a region registered by the workload's own userfaultfd is left to it and copied while frozen", async () => {
  const w = await start(['--mib', '8']);
  const h = await Helper.start();
  helpers.push(h);
  const reader = new MemReader(1);
  readers.push(reader);
  const own = spawnOwnUffd();
  try {
    await own.ready;
    const pc = await PreCopy.start(h, [w.pid, own.pid], new PageStore(64 << 20), reader);
    const rep = await pc.run({ maxRounds: 2 });
    expect(rep.untracked).toEqual([]);
    // The workload's own region was refused (EBUSY) and counted as untracked mapping bytes.
    expect(rep.untrackedMappings).toBeGreaterThanOrEqual(own.bytes);
    await pc.stop();
    // Its registration is untouched: still write-protect registered, by its own userfaultfd.
    expect(fs.readFileSync(`/proc/${own.pid}/smaps`, 'utf8')).toMatch(/^VmFlags:.*\buw\b/m);
    untracked(w.pid);
  } finally {
    own.kill();
  }
});

test.each([
  ['mem-counter', ['--mib', '16']],
  ['files', []],
  ['threads', []],
] as const)('%s: page ranges from PAGEMAP_SCAN are exactly those read from pagemap', async (name, args) => {
  const w = await fx.start(name, [...args]);
  const h = await Helper.start();
  helpers.push(h);
  await h.seize(w.tids);
  const maps = inspectMappings(w.pid).filter((m) => !m.unsupported);
  const pm = Pagemap.open(w.pid);
  let fromPagemap;
  try {
    fromPagemap = collectPageRanges(pm, maps);
  } finally {
    pm.close();
  }
  const fromScan = await scanPageRanges(w.pid, maps, (p, r, keepFile) => h.presentPages(p, r, keepFile));
  expect(fromScan.ranges.length).toBeGreaterThan(0);
  expect(fromScan.ranges).toEqual(fromPagemap.ranges);
  expect(fromScan.stats.pagesDumped).toBe(fromPagemap.stats.pagesDumped);
});

test('the page readers (process_vm_readv addon, in this thread and in workers) read what /proc/PID/mem holds', async () => {
  expect(readvAddon()).not.toBeNull(); // built by make -C native from Node's headers
  const w = await start(['--mib', '12']); // larger than the smallest page buffer (two slots)
  const [a, l] = w.info.area!.split(' ');
  const start0 = Number(BigInt(a!));
  const len = Number(l);
  // Stop it so that both reads see the same bytes.
  const h = await Helper.start();
  helpers.push(h);
  await h.seize([w.pid]);
  const viaMem = Buffer.alloc(len);
  const fd = fs.openSync(`/proc/${w.pid}/mem`, 'r');
  try {
    fs.readSync(fd, viaMem, 0, len, start0);
  } finally {
    fs.closeSync(fd);
  }
  // Pieces of odd sizes, out of order, into scattered places of the buffer.
  const pieces = [];
  for (let off = 0, i = 0; off < len; i++) {
    const n = Math.min(len - off, 4096 * (1 + (i % 7)));
    pieces.push({ addr: start0 + off, len: n, at: len - off - n });
    off += n;
  }
  const sab = new SharedArrayBuffer(len);
  expect(readPieces(w.pid, Buffer.from(sab), pieces)).toBe(len);
  const here = Buffer.from(sab);
  for (const p of pieces) expect(here.subarray(p.at, p.at + p.len).equals(viaMem.subarray(p.addr - start0, p.addr - start0 + p.len))).toBe(true);
  const reader = new MemReader(1);
  readers.push(reader);
  const sab2 = new SharedArrayBuffer(len);
  expect(await reader.read(w.pid, sab2, pieces)).toBe(len);
  expect(Buffer.from(sab2).equals(here)).toBe(true);
  // An address nothing is mapped at: a SysError naming it, also from a worker.
  expect(() => readPieces(w.pid, Buffer.from(sab), [{ addr: 4096, len: 4096, at: 0 }])).toThrow(SysError);
  expect(() => readPieces(w.pid, Buffer.from(sab), [{ addr: 4096, len: 4096, at: 0 }])).toThrow(new RegExp(`0x1000-0x2000: .*failed: E[A-Z]+ \\(pid ${w.pid}`));
  await expect(reader.read(w.pid, sab2, [{ addr: 4096, len: 4 << 20, at: 0 }])).rejects.toThrow(/0x1000/);

  // The page buffer's slot-by-slot path (the process does not fit in its free slots): same bytes, slots reused.
  const pb = new PageBuffer(2 * SLOT_SIZE);
  const got: Buffer[] = [];
  const r = await pb.readInto(w.pid, [{ start: BigInt(start0), bytes: len }], { write: async (d) => void got.push(Buffer.from(d)) });
  pb.startWriting();
  await r.flushed;
  expect(r.bytes).toBe(len);
  expect(Buffer.concat(got).equals(viaMem)).toBe(true);
  // A failed read there names pid, address range and errno, and gives its slots back.
  const bad = pb.readInto(w.pid, [{ start: 4096n, bytes: 4096 }], { write: async () => undefined });
  await expect(bad).rejects.toThrow(SysError);
  await expect(bad).rejects.toThrow(new RegExp(`read memory 0x1000-0x2000: .*failed: E[A-Z]+ \\(pid ${w.pid}`));
  // Both slots free again: the whole read fits, so it goes to the parallel path and nothing is written yet (with a
  // slot lost, it would take the slot path and hand the first slot to the writer to reuse it).
  let writes = 0;
  const again = await pb.readInto(w.pid, [{ start: BigInt(start0), bytes: 2 * SLOT_SIZE }], { write: async () => void writes++ }, reader);
  expect(again.bytes).toBe(2 * SLOT_SIZE);
  expect(writes).toBe(0);
});

/** A small process that registers its own userfaultfd over 1 MiB (write-protect) and waits. */
function spawnOwnUffd(): { pid: number; bytes: number; ready: Promise<void>; kill: () => void } {
  const bin = path.resolve(__dirname, '..', '..', 'native', 'build', 'uffd-owner');
  if (!fs.existsSync(bin)) throw new Error(`${bin} missing: run make -C native`);
  const child = spawn(bin, [], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`uffd-owner exited (${code}) before it was ready: ${out}`)));
  });
  return {
    pid: child.pid!,
    bytes: 1 << 20,
    ready,
    kill: () => {
      child.kill('SIGKILL');
    },
  };
}
