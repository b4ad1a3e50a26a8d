/**
 * The restore page path (native/src/restore/pagein.c: the restorer reads, checks and decompresses the pages file
 * itself on worker threads and fills memory by UFFDIO_COPY / process_vm_writev): a compressed 256 MiB dump comes
 * back and the workload verifies every byte; all-zero pages of a container are left unpopulated yet read back as
 * zero; a damaged chunk found half-way through the pages fails the restore with the file, offset and chunk named,
 * and everything the restore made is gone afterwards.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { decodeImage, encodeImage } from '../images';
import { CHUNK_HEADER_SIZE } from '../images/container-format';
import { ContainerReader } from '../images/container-reader';
import { convertImageDir } from '../images/convert';
import { crc32 } from '../images/crc32';
import { abortRestore, newRestoreState, restore, restoreSteps, RestoreResult } from '../restore';
import { Op, RestorerError } from '../restore/restorer';
import { findWorkloadPids, startWorkload, Workload } from '../scenarios/workload';
import { ImageError } from '../util/errors';
import { killPid } from './restore-helpers';
import { fixturesDir } from './shared-dir';

const live: Workload[] = [];
const restored: RestoreResult[] = [];
const dirs: string[] = [];
const PAGE = 4096;

afterEach(async () => {
  for (const w of live.splice(0)) await w.cleanup().catch(() => undefined);
  for (const r of restored.splice(0)) {
    for (const pid of r.pids.values()) killPid(pid);
    if (r.restorer) {
      killPid(r.restorer.pid);
      await r.restorer.waitExit();
    }
  }
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-rp-'));
  dirs.push(d);
  return d;
}

async function start(mib: number): Promise<Workload> {
  const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)], readyTimeoutMs: 120_000 });
  live.push(w);
  return w;
}

/** Every process below `pid` (children files of all its threads), recursively. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    let kids: number[] = [];
    try {
      kids = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      continue;
    }
    for (const k of kids) out.push(k, ...descendants(k));
  }
  return out;
}

const exists = (pid: number) => fs.existsSync(`/proc/${pid}`);

/** Chunk `i` of a container: where its header and its compressed bytes are. */
async function chunkAt(file: string, pick: (n: number) => number): Promise<{ index: number; fileOffset: number; compressedLength: number }> {
  const r = await ContainerReader.open(file);
  try {
    const index = pick(r.chunks.length);
    return { index, ...r.chunks[index]! };
  } finally {
    await r.close();
  }
}

/**
 * Runs the restore steps one by one like restore() does, noting every process the restorer has made just before
 * memory is rebuilt; expects that step to fail, tears down with abortRestore, and returns the error and the pids.
 */
async function failInPages(dir: string): Promise<{ err: unknown; made: number[]; restorerPid: number }> {
  const s = newRestoreState({ dir, newPidns: true });
  let made: number[] = [];
  let err: unknown;
  try {
    for (const step of restoreSteps()) {
      if (step.title === 'rebuild memory') made = descendants(s.restorer!.pid);
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      await (step.task as any)(s, undefined);
    }
  } catch (e) {
    err = e;
  } finally {
    await abortRestore(s);
  }
  return { err, made, restorerPid: s.restorer?.pid ?? 0 };
}

describe('restore page path', () => {
  test('a compressed 256 MiB dump restores and the workload verifies every byte of it', async () => {
    const w = await start(256);
    const dir = path.join(tmpDir(), 'img');
    const imagePids = w.pids;
    await dump({ pid: w.pid, dir, compress: 'zstd' });
    expect(fs.existsSync(path.join(dir, 'pages-1.gwz'))).toBe(true);
    const r = await restore({ dir, newPidns: true, detach: true }, { silent: true });
    restored.push(r);
    expect(r.pageBytes).toBeGreaterThanOrEqual(256 << 20);
    // The page workers are joined before the restorer answers: its namespace init is single-threaded again.
    const init = descendants(r.restorer!.pid).find((p) => ![...r.pids.values()].includes(p))!;
    expect(fs.readdirSync(`/proc/${init}/task`)).toEqual([String(init)]);
    w.setPids(imagePids.map((p) => r.pids.get(p) ?? p));
    expect(await w.verify({ timeoutMs: 120_000 })).toEqual({ pass: true, detail: 'PASS' });
  }, 300_000);

  test('a pages file that is not in the page cache is read with O_DIRECT (a migration\'s images), one that is, from the cache', async () => {
    const w = await start(64);
    const dir = path.join(tmpDir(), 'img');
    const imagePids = w.pids;
    await dump({ pid: w.pid, dir, compress: 'zstd' });
    const pages = path.join(dir, 'pages-1.gwz');
    const cached = () => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', pages], { encoding: 'utf8' }).trim());
    // Just written: in the page cache, read from there.
    expect(cached()).toBeGreaterThan(fs.statSync(pages).size / 2);
    const a = await restore({ dir, newPidns: true, detach: true }, { silent: true });
    restored.push(a);
    expect(a.pagesReadDirect).toBe(0);
    // Out of the cache (written back, then dropped): read around it, every byte of the file.
    execFileSync('sync', [pages]);
    execFileSync('dd', [`if=${pages}`, 'iflag=nocache', 'count=0', 'status=none']);
    expect(cached()).toBeLessThan(fs.statSync(pages).size / 2);
    const b = await restore({ dir, newPidns: true, detach: true }, { silent: true });
    restored.push(b);
    expect(b.pagesReadDirect).toBeGreaterThanOrEqual(fs.statSync(pages).size - 64 * 1024);
    expect(cached()).toBeLessThan(fs.statSync(pages).size / 2);
    w.setPids(imagePids.map((p) => b.pids.get(p) ?? p));
    expect(await w.verify({ timeoutMs: 120_000 })).toEqual({ pass: true, detail: 'PASS' });
  }, 300_000);

  test('a damaged chunk in the middle of the pages fails the restore, names the chunk, and leaves nothing behind', async () => {
    const w = await start(32);
    const dir = path.join(tmpDir(), 'img');
    await dump({ pid: w.pid, dir, compress: 'zstd' });
    const file = path.join(dir, 'pages-1.gwz');
    // A byte in the middle of the middle chunk's compressed bytes (caught by its crc32): the manifest checks only the size of page
    // containers before restore, so this is found by the restorer while it fills memory.
    const c = await chunkAt(file, (n) => Math.floor(n / 2));
    const fd = fs.openSync(file, 'r+');
    try {
      const b = Buffer.alloc(1);
      const at = c.fileOffset + CHUNK_HEADER_SIZE + Math.floor(c.compressedLength / 2);
      fs.readSync(fd, b, 0, 1, at);
      b[0] ^= 0x5a;
      fs.writeSync(fd, b, 0, 1, at);
    } finally {
      fs.closeSync(fd);
    }
    const { err, made, restorerPid } = await failInPages(dir);
    expect(err).toBeInstanceOf(ImageError);
    expect((err as ImageError).file).toBe('pages-1.gwz');
    expect((err as ImageError).offset).toBe(c.fileOffset + CHUNK_HEADER_SIZE);
    expect((err as Error).message).toMatch(new RegExp(`chunk ${c.index} checksum mismatch: expected crc32 [0-9a-f]{8}`));
    expect(made.length).toBeGreaterThanOrEqual(2); // the namespace's init and the task
    expect(made.filter(exists)).toEqual([]);
    expect(exists(restorerPid)).toBe(false);
    // The same through restore(): the error as it reaches the CLI, and no process of the workload anywhere.
    await expect(restore({ dir, newPidns: true, detach: true }, { silent: true })).rejects.toThrow(/pages-1\.gwz: at offset \d+: chunk \d+/);
    expect(findWorkloadPids(w.dir)).toEqual([]);
  }, 120_000);

  test('a chunk header that does not match the index (chunks reordered) is named as such', async () => {
    const w = await start(16);
    const dir = path.join(tmpDir(), 'img');
    await dump({ pid: w.pid, dir, compress: 'zstd' });
    const file = path.join(dir, 'pages-1.gwz');
    const c = await chunkAt(file, (n) => n - 2);
    const fd = fs.openSync(file, 'r+');
    try {
      // Claim to be the next chunk, with a valid header checksum: only the comparison with the index catches it.
      const h = Buffer.alloc(CHUNK_HEADER_SIZE);
      fs.readSync(fd, h, 0, h.length, c.fileOffset);
      h.writeUInt32LE(c.index + 1, 4);
      h.writeUInt32LE(crc32(h.subarray(0, 28)), 28);
      fs.writeSync(fd, h, 0, h.length, c.fileOffset);
    } finally {
      fs.closeSync(fd);
    }
    const { err, made } = await failInPages(dir);
    expect(err).toBeInstanceOf(ImageError);
    expect((err as Error).message).toMatch(new RegExp(`found chunk ${c.index + 1} .* where the index has chunk ${c.index} `));
    expect(made.filter(exists)).toEqual([]);
  }, 120_000);
});

describe('LOAD_PAGES requests the restorer refuses', () => {
  test('short, for an unknown task, ranges out of order or past the data, a chunk table with a gap: EINVAL/ESRCH, nothing written', async () => {
    const dir = path.join(tmpDir(), 'img');
    fs.cpSync(path.join(fixturesDir(), 'criu-4.2', 'sleep'), dir, { recursive: true });
    const s = newRestoreState({ dir, newPidns: true });
    try {
      for (const step of restoreSteps()) {
        if (step.title === 'rebuild memory') break;
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        await (step.task as any)(s, undefined);
      }
      const pid = s.set!.tasks[0]!.pid;
      /** header | ranges [addr, len, off] | chunks [file offset, offset, len, compressed len] */
      const req = (p: number, kind: number, size: number, ranges: number[][], chunks: number[][] = [], chunkSize = 0) => {
        const b = Buffer.alloc(32 + 24 * ranges.length + 32 * chunks.length);
        b.writeInt32LE(p, 0);
        b.writeInt32LE(0, 4); // fd 0 of the restorer: never read, every request below is refused first
        b.writeUInt32LE(kind, 8);
        b.writeUInt32LE(ranges.length, 12);
        b.writeUInt32LE(chunks.length, 16);
        b.writeUInt32LE(chunkSize, 20);
        b.writeBigUInt64LE(BigInt(size), 24);
        ranges.forEach((r, i) => r.forEach((v, k) => b.writeBigUInt64LE(BigInt(v), 32 + 24 * i + 8 * k)));
        chunks.forEach((c, i) => {
          const at = 32 + 24 * ranges.length + 32 * i;
          b.writeBigUInt64LE(BigInt(c[0]!), at);
          b.writeBigUInt64LE(BigInt(c[1]!), at + 8);
          b.writeUInt32LE(c[2]!, at + 16);
          b.writeUInt32LE(c[3]!, at + 20);
        });
        return b;
      };
      const refused = async (payload: Buffer) => {
        const e = await s.restorer!.request(Op.LOAD_PAGES, payload, 'a bad request').then(() => null, (x: unknown) => x);
        expect(e).toBeInstanceOf(RestorerError);
        return { errno: (e as RestorerError).code, syscall: (e as RestorerError).syscall };
      };
      const A = 0x7f0000000000;
      expect(await refused(Buffer.alloc(8))).toEqual({ errno: 'EINVAL', syscall: 'load-pages-request' });
      expect(await refused(req(pid + 1000, 0, 1 << 20, [[A, PAGE, 0]]))).toEqual({ errno: 'ESRCH', syscall: 'load-pages-request' });
      const range = { errno: 'EINVAL', syscall: 'load-pages(range)' };
      expect(await refused(req(pid, 0, 1 << 20, [[A, PAGE, PAGE], [A + PAGE, PAGE, 0]]))).toEqual(range); // out of order
      expect(await refused(req(pid, 0, 1 << 20, [[A, 2 * PAGE, (1 << 20) - PAGE]]))).toEqual(range); // past the data
      expect(await refused(req(pid, 0, 1 << 20, [[A + 1, PAGE, 0]]))).toEqual(range); // not page-aligned
      const gap = req(pid, 1, 2 * 65536, [[A, PAGE, 0]], [[32, 0, 65536, 100], [32 + 32 + 100, 65536 + PAGE, 65536, 100]], 65536);
      expect(await refused(gap)).toEqual({ errno: 'EINVAL', syscall: 'load-pages(chunk)' });
      // The restorer is still fine after all that: the restore goes on to the end.
      for (const step of restoreSteps().slice(restoreSteps().findIndex((x) => x.title === 'rebuild memory'))) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        await (step.task as any)(s, undefined);
      }
      expect(s.resumed).toBe(true);
      const root = s.hostPids.get(pid)!;
      expect(fs.readFileSync(`/proc/${root}/comm`, 'utf8').trim()).toBe('sleep');
    } finally {
      if (s.resumed) {
        for (const p of s.hostPids.values()) killPid(p);
        s.restorer!.kill();
        await s.restorer!.exited;
      } else await abortRestore(s);
    }
  }, 60_000);
});

describe('zero pages', () => {
  /** A gap in the CRIU `sleep` fixture's layout for one more anonymous mapping. */
  const DATA_AT = 0x7f0000000000n;
  const DATA_PAGES = 1024; // 4 MiB: a userfaultfd-filled VMA (>= 1 MiB)
  const isZeroPage = (p: number) => p % 3 === 1;

  /** Page p: all zero when isZeroPage(p), else its number repeated (never all zero). */
  function dataPage(p: number): Buffer {
    const b = Buffer.alloc(PAGE);
    if (!isZeroPage(p)) for (let i = 0; i < PAGE; i += 4) b.writeUInt32LE(p + 1 + i, i);
    return b;
  }

  /** The `sleep` fixture plus an anonymous private mapping whose pages are dataPage(0..DATA_PAGES-1). */
  function makeImage(dir: string): number {
    const src = path.join(fixturesDir(), 'criu-4.2', 'sleep');
    fs.mkdirSync(dir, { recursive: true });
    for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(dir, f));
    const pid = 16344;
    const mmPath = path.join(dir, `mm-${pid}.img`);
    const mm = decodeImage(fs.readFileSync(mmPath), mmPath);
    const vmas = mm.entries[0]!.msg.vmas as Record<string, unknown>[];
    vmas.push({ start: DATA_AT, end: DATA_AT + BigInt(DATA_PAGES * PAGE), pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 1 | 512, fd: -1n });
    vmas.sort((a, b) => ((a.start as bigint) < (b.start as bigint) ? -1 : 1));
    fs.writeFileSync(mmPath, encodeImage('MM', mm.entries));
    // The new pagemap entry goes where its address sorts; its pages at the same place of the pages file.
    const pmPath = path.join(dir, `pagemap-${pid}.img`);
    const pm = decodeImage(fs.readFileSync(pmPath), pmPath);
    const entries = pm.entries.slice(1);
    let at = entries.findIndex((e) => (e.msg.vaddr as bigint) > DATA_AT);
    if (at < 0) at = entries.length;
    const before = entries.slice(0, at).reduce((n, e) => n + Number(e.msg.nr_pages) * PAGE, 0);
    entries.splice(at, 0, { type: 'pagemap_entry', msg: { vaddr: DATA_AT, compat_nr_pages: 0, flags: 4, nr_pages: BigInt(DATA_PAGES) } });
    fs.writeFileSync(pmPath, encodeImage('PAGEMAP', [pm.entries[0]!, ...entries]));
    const pagesPath = path.join(dir, 'pages-1.img');
    const old = fs.readFileSync(pagesPath);
    const data = Buffer.concat(Array.from({ length: DATA_PAGES }, (_, p) => dataPage(p)));
    fs.writeFileSync(pagesPath, Buffer.concat([old.subarray(0, before), data, old.subarray(before)]));
    return pid;
  }

  /** Present bit (63) of each page of the data mapping in /proc/PID/pagemap. */
  function present(pid: number): boolean[] {
    const fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
    try {
      const b = Buffer.alloc(8 * DATA_PAGES);
      fs.readSync(fd, b, 0, b.length, Number(DATA_AT / BigInt(PAGE)) * 8);
      return Array.from({ length: DATA_PAGES }, (_, p) => (b.readBigUInt64LE(8 * p) >> 63n) === 1n);
    } finally {
      fs.closeSync(fd);
    }
  }

  function content(pid: number): Buffer {
    const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
    try {
      const b = Buffer.alloc(DATA_PAGES * PAGE);
      fs.readSync(fd, b, 0, b.length, Number(DATA_AT));
      return b;
    } finally {
      fs.closeSync(fd);
    }
  }

  test('all-zero pages of a container stay unpopulated and read back as zero; a plain image writes them all', async () => {
    const root = tmpDir();
    const plain = path.join(root, 'plain');
    const packed = path.join(root, 'packed');
    makeImage(plain);
    await convertImageDir(plain, { to: 'godwit', out: packed });
    const want = Buffer.concat(Array.from({ length: DATA_PAGES }, (_, p) => dataPage(p)));
    for (const [dir, zeroSkipped] of [[packed, true], [plain, false]] as const) {
      const r = await restore({ dir, newPidns: true, detach: true }, { silent: true });
      restored.push(r);
      // Residency first: reading the memory below maps the zero page into the holes.
      const p = present(r.rootPid);
      for (let i = 0; i < DATA_PAGES; i++) expect([i, p[i]]).toEqual([i, zeroSkipped ? !isZeroPage(i) : true]);
      expect(content(r.rootPid).equals(want)).toBe(true);
    }
  }, 120_000);
});
