/**
 * The helper's page path (ReadPages: process_vm_readv into a 4 MiB staging buffer, framed into the bulk pipe,
 * read by Node with fs.read) against the limits measured on the same memory in the same run:
 *
 *   readv batch   process_vm_readv in 64 KiB iovecs into a reused 4 MiB buffer, bytes discarded (C, native/test/
 *                 readv-bench.c): the kernel's copy limit and the reference (1.00);
 *   readv 4 KiB   the same, one page per call;
 *   /proc/mem     pread of /proc/PID/mem from Node in 4 MiB reads into a buffer faulted in beforehand;
 *   helper        Helper.readPages into a sink that discards: one range, and the same bytes as 64 KiB ranges;
 *                 "in helper" is the helper's own elapsed time for the request; and once more with payloads
 *                 written to the pipe instead of vmspliced (GODWIT_HELPER_BULK=write).
 *
 * Workload: scenarios' mem-counter of GODWIT_BENCH_MIB (default 256) MiB. Each figure is the best of 3 runs.
 * Run: node dist/bench/native-read.js
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Helper, type PageRange } from '../native/helper';
import { startWorkload } from '../scenarios/workload';

const MiB = 1 << 20;
const RUNS = 3;
const READV_BENCH = path.resolve(__dirname, '..', '..', 'native', 'build', 'readv-bench');

function readvBench(pid: number, start: bigint, len: number, mode: 'batch' | 'page'): number {
  const r = spawnSync(READV_BENCH, [String(pid), '0x' + start.toString(16), String(len), mode], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`readv-bench failed: ${r.stderr.trim()}`);
  const [bytes, ns] = r.stdout.trim().split(' ').map(Number);
  return bytes! / (ns! / 1e9);
}

function procMem(pid: number, start: bigint, len: number, into: Buffer): number {
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    const t = process.hrtime.bigint();
    for (let off = 0; off < len; off += 4 * MiB) fs.readSync(fd, into, off, Math.min(4 * MiB, len - off), Number(start) + off);
    return len / (Number(process.hrtime.bigint() - t) / 1e9);
  } finally {
    fs.closeSync(fd);
  }
}

async function viaHelper(h: Helper, pid: number, ranges: PageRange[], len: number): Promise<{ e2e: number; inner: number }> {
  const t = process.hrtime.bigint();
  const r = await h.readPages(pid, ranges, () => undefined);
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.bytes !== BigInt(len)) throw new Error(`helper read ${r.bytes} of ${len} bytes`);
  return { e2e: len / s, inner: len / (Number(r.elapsedNs) / 1e9) };
}

const best = async (f: () => number | Promise<number>): Promise<number> => {
  let b = 0;
  for (let i = 0; i < RUNS; i++) b = Math.max(b, await f());
  return b;
};

async function main(): Promise<void> {
  const mib = Number(process.env.GODWIT_BENCH_MIB ?? 256);
  console.log(`native page path benchmark: ${mib} MiB (${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(1)})`);
  const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)], readyTimeoutMs: 300_000 });
  const h = await Helper.start();
  // The same helper path with write() instead of vmsplice() for the payloads, for comparison.
  process.env.GODWIT_HELPER_BULK = 'write';
  const hw = await Helper.start().finally(() => delete process.env.GODWIT_HELPER_BULK);
  try {
    const [a, l] = w.info.area!.split(' ');
    const start = BigInt(a!);
    const len = Number(l);
    await h.seize([w.pid]); // a stopped target: nothing changes the memory under the readers
    const scratch = Buffer.allocUnsafeSlow(len).fill(1);
    const batch = await best(() => readvBench(w.pid, start, len, 'batch'));
    const page = await best(() => readvBench(w.pid, start, len, 'page'));
    const pm = await best(() => procMem(w.pid, start, len, scratch));
    const one = [{ start, length: BigInt(len) }];
    const many: PageRange[] = [];
    for (let off = 0; off < len; off += 64 << 10) many.push({ start: start + BigInt(off), length: BigInt(Math.min(64 << 10, len - off)) });
    let h1 = { e2e: 0, inner: 0 };
    let h2 = { e2e: 0, inner: 0 };
    let h3 = { e2e: 0, inner: 0 };
    for (let i = 0; i < RUNS; i++) {
      const x = await viaHelper(h, w.pid, one, len);
      if (x.e2e > h1.e2e) h1 = x;
      const y = await viaHelper(h, w.pid, many, len);
      if (y.e2e > h2.e2e) h2 = y;
      const z = await viaHelper(hw, w.pid, one, len);
      if (z.e2e > h3.e2e) h3 = z;
    }
    const row = (name: string, v: number): string =>
      `  ${name.padEnd(34)} ${(v / 1e9).toFixed(2).padStart(6)} GB/s  ${(v / batch).toFixed(2)} x readv batch`;
    console.log(
      [
        row('readv batch (C, discard)', batch),
        row('readv 4 KiB per call (C, discard)', page),
        row('/proc/PID/mem pread (Node)', pm),
        row('helper, 1 range -> Node sink', h1.e2e),
        row('  in helper', h1.inner),
        row(`helper, ${many.length} ranges -> Node sink`, h2.e2e),
        row('  in helper', h2.inner),
        row('helper with write(), 1 range', h3.e2e),
      ].join('\n'),
    );
  } finally {
    await h.close();
    await hw.close();
    await w.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
