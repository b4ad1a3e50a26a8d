/**
 * Dump benchmark: mem-counter workloads of 64, 256 and 1024 MiB (half random, half repeated bytes, so zstd halves
 * them), each dumped with --leave-running and then verified by the workload. Printed per size:
 *
 *   frozen   time the tree was stopped (first seize to resume), and the page bytes per frozen second as a ratio
 *            of the /proc/PID/mem pread throughput (into memory already faulted in) measured on the same memory
 *            in the same run, and of the helper's process_vm_readv + bulk pipe throughput (pages to a no-op sink);
 *   total    the whole dump, and its page throughput as a ratio of raw zstd-napi (level 1, 256 KiB frames) on one
 *            core over the same bytes;
 *   images   bytes on disk, and as a share of the page bytes;
 *   pre-copy the same workload dumped again with --pre-copy: rounds (bytes copied each), frozen time and bytes read
 *            while frozen, total; frozen as a ratio of the plain dump's frozen time in this run.
 *
 * The workloads also rewrite a 4 MiB "dirty" area at 40 MB/s (1024 pages, 10,000 page writes a second), so
 * pre-copy has something to chase.
 *
 * A working `criu` (4.x) on PATH is run on the same workload for frozen time and image size; without one that row
 * says so. Everything printed is measured in this run. Sizes: GODWIT_BENCH_SIZES (MiB, comma separated).
 *
 * Run: node dist/bench/dump.js
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as binding from 'zstd-napi/binding';
import { dump } from '../checkpoint/dump';
import { Helper } from '../native/helper';
import { startWorkload, Workload } from '../scenarios/workload';

const MiB = 1 << 20;
const SIZES = (process.env.GODWIT_BENCH_SIZES ?? '64,256,1024').split(',').map(Number);
const CHUNK = 256 << 10;
/** A dirty area the workload keeps rewriting: 1024 pages at 10,000 page writes a second (40 MB/s). */
const DIRTY = ['--dirty-pages', '1024', '--dirty-rate', '10000'];

const secs = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;
const gbs = (bytes: number, s: number) => (bytes / 1e9 / s).toFixed(2);

function area(w: Workload): { start: number; len: number } {
  const [a, l] = w.info.area!.split(' ');
  return { start: Number(BigInt(a!)), len: Number(l) };
}

/** pread of /proc/PID/mem into a buffer faulted in beforehand: the kernel's copy limit for this memory. */
function procMemThroughput(pid: number, start: number, len: number, into: Buffer): number {
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    const t = process.hrtime.bigint();
    for (let off = 0; off < len; off += 4 * MiB) fs.readSync(fd, into, off, Math.min(4 * MiB, len - off), start + off);
    return len / secs(t);
  } finally {
    fs.closeSync(fd);
  }
}

async function helperThroughput(pid: number, start: number, len: number): Promise<number> {
  const h = await Helper.start();
  try {
    await h.seize([pid]);
    const t = process.hrtime.bigint();
    await h.readPages(pid, [{ start: BigInt(start), length: BigInt(len) }], () => undefined);
    return len / secs(t);
  } finally {
    await h.close();
  }
}

function zstdThroughput(data: Buffer): number {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, 1);
  cctx.setParameter(binding.CParameter.checksumFlag, 0); // as the container's writer: its chunks carry a crc32 instead
  const dst = Buffer.allocUnsafe(binding.compressBound(CHUNK) + 64);
  const t = process.hrtime.bigint();
  for (let at = 0; at < data.length; at += CHUNK) cctx.compress2(dst, data.subarray(at, at + CHUNK));
  return data.length / secs(t);
}

function criuAvailable(): string | undefined {
  const r = spawnSync('criu', ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const m = /Version:\s*(\d+)\.(\d+)/.exec(r.stdout);
  return m && Number(m[1]) >= 4 ? `${m[1]}.${m[2]}` : undefined;
}

function dirBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
}

async function criuDump(pid: number, dir: string): Promise<{ frozenMs: number; bytes: number } | string> {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('criu', ['dump', '-t', String(pid), '-D', dir, '--shell-job', '--leave-running', '--display-stats'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) return `criu dump failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`;
  const frozen = /Frozen time:\s*(\d+)\s*us/.exec(r.stdout + r.stderr);
  return { frozenMs: frozen ? Number(frozen[1]) / 1000 : NaN, bytes: dirBytes(dir) };
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-dump-'));
  const criu = criuAvailable();
  console.log(`godwit dump benchmark (${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(1)})`);
  console.log(criu ? `criu ${criu} found on PATH: compared below` : 'criu 4.x not on PATH: no CRIU figures in this run');
  try {
    for (const mib of SIZES) {
      const w = await startWorkload('mem-counter', { args: ['--mib', String(mib), ...DIRTY], readyTimeoutMs: 300_000 });
      try {
        const { start, len } = area(w);
        const scratch = Buffer.allocUnsafeSlow(len).fill(1); // faulted in before the measurement
        const procMem = procMemThroughput(w.pid, start, len, scratch);
        const viaHelper = await helperThroughput(w.pid, start, len);
        const zstd = zstdThroughput(scratch);
        const dir = path.join(tmp, `img-${mib}`);
        const s = await dump({ pid: w.pid, dir, leaveRunning: true });
        fs.rmSync(dir, { recursive: true, force: true });
        const p = await dump({ pid: w.pid, dir, leaveRunning: true, preCopy: true });
        const verdict = await w.verify();
        const pc = p.preCopy!;
        const frozenRate = s.pageBytes / (s.frozenMs / 1000);
        const totalRate = s.pageBytes / (s.totalMs / 1000);
        console.log(
          `\n${mib} MiB: ${(s.pageBytes / MiB).toFixed(0)} MiB of pages, workload after dump: ${verdict.detail}\n` +
            `  frozen ${s.frozenMs.toFixed(0)} ms = ${gbs(s.pageBytes, s.frozenMs / 1000)} GB/s: ` +
            `${(frozenRate / procMem).toFixed(2)} x /proc/PID/mem pread (${gbs(procMem, 1)} GB/s), ` +
            `${(frozenRate / viaHelper).toFixed(2)} x helper process_vm_readv + pipe (${gbs(viaHelper, 1)} GB/s)\n` +
            `  total  ${s.totalMs.toFixed(0)} ms = ${gbs(s.pageBytes, s.totalMs / 1000)} GB/s: ` +
            `${(totalRate / zstd).toFixed(2)} x raw zstd-napi on one core (${gbs(zstd, 1)} GB/s)\n` +
            `  images ${(s.imageBytes / MiB).toFixed(1)} MiB = ${((100 * s.imageBytes) / s.pageBytes).toFixed(1)}% of the page bytes\n` +
            `  steps: ${s.steps.map((x) => `${x.title} ${x.ms.toFixed(0)}`).join(', ')} (ms)\n` +
            (pc.fallback
              ? `  pre-copy not used: ${pc.fallback}`
              : `  pre-copy: ${pc.rounds.length} rounds (${pc.rounds.map((r) => `${(r.bytes / MiB).toFixed(1)} MiB ${r.ms.toFixed(0)} ms`).join(', ')}; ${pc.stop}), ` +
                `frozen ${p.frozenMs.toFixed(0)} ms (${(pc.frozenBytes / MiB).toFixed(1)} MiB read frozen) = ${(p.frozenMs / s.frozenMs).toFixed(2)} x plain frozen; ` +
                `total ${p.totalMs.toFixed(0)} ms = ${(p.totalMs / s.totalMs).toFixed(2)} x plain total; images ${(p.imageBytes / MiB).toFixed(1)} MiB\n` +
                `  pre-copy steps: ${p.steps.map((x) => `${x.title} ${x.ms.toFixed(0)}`).join(', ')} (ms)`),
        );
        fs.rmSync(dir, { recursive: true, force: true });
        if (criu) {
          const w2 = await startWorkload('mem-counter', { args: ['--mib', String(mib), ...DIRTY], readyTimeoutMs: 300_000 });
          try {
            const c = await criuDump(w2.pid, path.join(tmp, `criu-${mib}`));
            if (typeof c === 'string') console.log(`  criu: ${c}`);
            else
              console.log(
                `  criu: frozen ${c.frozenMs.toFixed(0)} ms, images ${(c.bytes / MiB).toFixed(1)} MiB; ` +
                  `godwit/criu: frozen ${(s.frozenMs / c.frozenMs).toFixed(2)} (pre-copy ${(p.frozenMs / c.frozenMs).toFixed(2)}), ` +
                  `images ${(s.imageBytes / c.bytes).toFixed(2)}`,
              );
          } finally {
            await w2.cleanup();
            fs.rmSync(path.join(tmp, `criu-${mib}`), { recursive: true, force: true });
          }
        }
      } finally {
        await w.cleanup();
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
