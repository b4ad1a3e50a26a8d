/**
 * Restore benchmark: time to restore a process holding 64, 256 and 1024 MiB of memory (half random bytes,
 * half a repeated pattern, so zstd halves it), from plain CRIU pages and from godwit's compressed container,
 * as ratios against process_vm_writev throughput into fresh memory measured in the same run (the floor for
 * writing that much memory into another process the ordinary way), and against `criu restore` when a working
 * criu is on PATH. Prints measured numbers only.
 *
 * The images are made from the CRIU 4.2 `sleep` fixture with one more anonymous mapping holding the data, so
 * the benchmark does not depend on a dumper; `node dist/bench/restore.js [MiB...]`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeImage, encodeImage } from '../images';
import { convertImageDir } from '../images/convert';
import { restore } from '../restore';
import { restorerPath } from '../restore/restorer';

const PAGE = 4096;
/** Where the data mapping goes: a gap in the fixture's layout. */
const DATA_AT = 0x7f0000000000n;
const PIECE = 8 << 20;

function fixtureDir(): string {
  for (const c of [path.resolve(__dirname, '..', '..', '..', 'shared', 'fixtures', 'criu-4.2', 'sleep'), '/work/shared/fixtures/criu-4.2/sleep'])
    if (fs.existsSync(c)) return c;
  throw new Error('shared/fixtures/criu-4.2/sleep not found beside the repository');
}

/** Deterministic content: even 1 MiB blocks random (xorshift), odd ones a repeated 64-byte pattern. */
function fill(buf: Buffer, offset: number): void {
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  for (let w = 0; w < words.length; w++) {
    const pos = offset + w * 4;
    if ((pos >> 20) & 1) words[w] = 0x01020304 * ((pos >> 6) & 3);
    else {
      let x = (pos * 2654435761) >>> 0 || 1;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[w] = x >>> 0;
    }
  }
}

function makeImage(dir: string, mib: number): void {
  const src = fixtureDir();
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(src)) {
    fs.copyFileSync(path.join(src, f), path.join(dir, f));
    fs.chmodSync(path.join(dir, f), 0o644);
  }
  const bytes = mib << 20;
  const mmPath = path.join(dir, 'mm-16344.img');
  const mm = decodeImage(fs.readFileSync(mmPath), mmPath);
  const vmas = mm.entries[0].msg.vmas as Record<string, unknown>[];
  vmas.push({ start: DATA_AT, end: DATA_AT + BigInt(bytes), pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 1 | 512, fd: -1n });
  vmas.sort((a, b) => ((a.start as bigint) < (b.start as bigint) ? -1 : 1));
  fs.writeFileSync(mmPath, encodeImage('MM', mm.entries));
  // Pages of the data mapping go last in the pages file: append its pagemap entry in address order.
  const pmPath = path.join(dir, 'pagemap-16344.img');
  const pm = decodeImage(fs.readFileSync(pmPath), pmPath);
  const entries = pm.entries.slice(1);
  const pagesPath = path.join(dir, 'pages-1.img');
  const old = fs.readFileSync(pagesPath);
  // Existing entries up to DATA_AT keep their data; the new one sits between them by address.
  let off = 0;
  let splitAt = entries.length;
  let splitOff = old.length;
  entries.forEach((e, i) => {
    if (splitAt === entries.length && (e.msg.vaddr as bigint) > DATA_AT) {
      splitAt = i;
      splitOff = off;
    }
    off += Number(e.msg.nr_pages) * PAGE;
  });
  entries.splice(splitAt, 0, { type: 'pagemap_entry', msg: { vaddr: DATA_AT, compat_nr_pages: 0, flags: 4, nr_pages: BigInt(bytes / PAGE) } });
  fs.writeFileSync(pmPath, encodeImage('PAGEMAP', [pm.entries[0], ...entries]));
  const fd = fs.openSync(pagesPath, 'w');
  try {
    fs.writeSync(fd, old.subarray(0, splitOff));
    const buf = Buffer.alloc(PIECE);
    for (let o = 0; o < bytes; o += PIECE) {
      const n = Math.min(PIECE, bytes - o);
      fill(buf, o);
      fs.writeSync(fd, buf, 0, n);
    }
    fs.writeSync(fd, old.subarray(splitOff));
  } finally {
    fs.closeSync(fd);
  }
}

/** Checks 64 pages spread over the data mapping against what was written. */
function checkMemory(pid: number, mib: number): void {
  const bytes = mib << 20;
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    const want = Buffer.alloc(PAGE);
    const got = Buffer.alloc(PAGE);
    for (let k = 0; k < 64; k++) {
      const o = Math.floor((bytes / PAGE / 64) * k) * PAGE + (k % 2) * (1 << 20) * 0;
      fill(want, o);
      fs.readSync(fd, got, 0, PAGE, Number(DATA_AT) + o);
      if (!got.equals(want)) throw new Error(`restored memory differs at offset ${o} of the data mapping`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

async function timeRestore(dir: string, mib: number): Promise<{ seconds: number; pagesMs: number }> {
  const t0 = process.hrtime.bigint();
  const r = await restore({ dir, newPidns: true, detach: true }, { silent: true });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  try {
    checkMemory(r.rootPid, mib);
  } finally {
    process.kill(r.rootPid, 'SIGKILL');
    if (r.restorer) await r.restorer.waitExit();
  }
  return { seconds, pagesMs: r.timings['rebuild memory'] };
}

function writevBaseline(mib: number): number {
  const out = JSON.parse(execFileSync(restorerPath(), ['--bench-writev', String(mib)], { encoding: 'utf8' })) as { seconds: number };
  return out.seconds;
}

async function main(): Promise<void> {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  const list = sizes.length ? sizes : [64, 256, 1024];
  const criu = spawnSync('criu', ['--version'], { encoding: 'utf8' });
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-restore-'));
  try {
    console.log('godwit restore benchmark (restore into a new PID namespace, detached; lower is better)');
    console.log('MiB   restore(plain) restore(zstd)  pv_writev   plain/pv_writev zstd/pv_writev   plain MB/s');
    for (const mib of list) {
      const plain = path.join(root, `plain-${mib}`);
      const packed = path.join(root, `zstd-${mib}`);
      makeImage(plain, mib);
      await convertImageDir(plain, { to: 'godwit', out: packed });
      execFileSync('sync');
      const pv = writevBaseline(mib);
      const p = await timeRestore(plain, mib);
      const z = await timeRestore(packed, mib);
      console.log(
        `${String(mib).padEnd(5)} ${p.seconds.toFixed(3).padStart(10)} s ${z.seconds.toFixed(3).padStart(10)} s ${pv.toFixed(3).padStart(9)} s ` +
          `${(p.seconds / pv).toFixed(2).padStart(12)} ${(z.seconds / pv).toFixed(2).padStart(14)} ${((mib * 1.048576) / p.seconds).toFixed(0).padStart(12)}`,
      );
      fs.rmSync(plain, { recursive: true, force: true });
      fs.rmSync(packed, { recursive: true, force: true });
    }
    if (criu.status === 0) console.log(`criu on PATH (${criu.stdout.trim()}): comparison needs a CRIU dump of the same workload, not run here`);
    else console.log('criu: not found on PATH (or not working): no criu restore comparison in this run');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
