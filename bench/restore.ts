/**
 * Restore benchmark on real dumps: a mem-counter workload of 64, 256 and 1024 MiB (half random, half repeated
 * bytes, as bench/dump.ts uses) is dumped by `godwit dump` in this run twice, with --compress zstd (left running)
 * and --compress none, and each image is restored into a new PID namespace (detached) several times. Timed: from
 * the call to restore() until the tree runs. Every restored workload then checks its whole memory area and counter
 * itself (its verdict is printed); verification is not in the time.
 *
 * Beside wall time, the CPU time each spends is measured (restore: node's own plus every restorer process's;
 * limits: the copying process's): on a shared machine wall time mostly measures the load, CPU time the work.
 *
 * Ratios are against limits measured in the same run, interleaved with the restores (the machine is shared):
 *   pv_writev  process_vm_writev of the same number of bytes into fresh memory of another process (8 MiB calls);
 *   uffd_copy  UFFDIO_COPY of the same bytes into fresh memory of another process (2 MiB calls, one thread).
 * `criu restore` of a CRIU dump of the same workload runs when a working criu 4.x is on PATH; the output says
 * when it is not. Figures are medians of GODWIT_BENCH_RUNS runs (default 3) with min..max; measured numbers only.
 *
 * Run: node dist/bench/restore.js [MiB ...]   (GODWIT_BENCH_SIZES=64,256 works too)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { restore, RestoreResult } from '../restore';
import { restorerPath } from '../restore/restorer';
import { startWorkload, Workload } from '../scenarios/workload';

const MiB = 1 << 20;
const RUNS = Math.max(1, Number(process.env.GODWIT_BENCH_RUNS ?? 3));

const secs = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;

interface Series {
  xs: number[];
  cpu: number[];
  /** node's share of cpu (restores only) */
  node?: number[];
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const fmt = (s: Series) =>
  `${median(s.xs).toFixed(3)} s (${Math.min(...s.xs).toFixed(3)}..${Math.max(...s.xs).toFixed(3)}), cpu ${median(s.cpu).toFixed(2)} s` +
  (s.node ? ` (node ${median(s.node).toFixed(2)} s)` : '');

function baseline(flag: '--bench-writev' | '--bench-uffd', mib: number): { seconds: number; cpu: number } {
  return JSON.parse(execFileSync(restorerPath(), [flag, String(mib)], { encoding: 'utf8' })) as { seconds: number; cpu: number };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU seconds (user + system) a live process has used, its exited threads included. */
function procCpu(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** The restorer (and with --new-pidns the namespace's init it forked): every process of it but the restored tree. */
function restorerCpu(r: RestoreResult): number {
  const outer = r.restorer!.pid;
  const restored = new Set(r.pids.values());
  const kids = fs.readFileSync(`/proc/${outer}/task/${outer}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return [outer, ...kids.filter((k) => !restored.has(k))].reduce((n, p) => n + procCpu(p), 0);
}

function criuVersion(): string | undefined {
  const r = spawnSync('criu', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  const m = /Version:\s*(\d+)\.(\d+)/.exec(r.stdout);
  return m && Number(m[1]) >= 4 ? `${m[1]}.${m[2]}` : undefined;
}

function dirBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
}

/** Ends a restored tree that is still there (after a failed verification) and waits for its restorer. */
async function endRestored(r: RestoreResult): Promise<void> {
  for (const pid of r.pids.values()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  if (r.restorer) await r.restorer.waitExit();
}

/**
 * The workload's own files (its log, which every verification appends to) as they were at a dump: restore checks
 * that files a task has open are as dumped, so each restore from an image gets them back first.
 */
function snapshotFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const f of fs.readdirSync(dir)) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) out.set(f, fs.readFileSync(p));
  }
  return out;
}

function putBack(dir: string, files: Map<string, Buffer>): void {
  for (const [f, b] of files) fs.writeFileSync(path.join(dir, f), b);
}

/** Restores `dir`, times it to running, lets the workload verify itself. */
async function restoreOnce(
  w: Workload,
  imagePids: number[],
  dir: string,
  files: Map<string, Buffer>,
): Promise<{ seconds: number; cpu: number; node: number; verdict: string; timings: Record<string, number> }> {
  putBack(w.dir, files);
  fs.rmSync(path.join(w.dir, 'result'), { force: true });
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const r = await restore({ dir, newPidns: true, detach: true }, { silent: true });
  const seconds = secs(t0);
  const c1 = process.cpuUsage(c0);
  try {
    const node = (c1.user + c1.system) / 1e6;
    const cpu = node + restorerCpu(r);
    w.setPids(imagePids.map((p) => r.pids.get(p) ?? p));
    const v = await w.verify({ timeoutMs: 300_000 });
    return { seconds, cpu, node, verdict: v.detail, timings: r.timings };
  } finally {
    await endRestored(r);
  }
}

/** `criu dump` + timed `criu restore -d` of a fresh workload of the same size; a string says why there is none. */
async function criuRestore(mib: number, dir: string): Promise<{ seconds: number; verdict: string } | string> {
  const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)], readyTimeoutMs: 300_000 });
  try {
    fs.mkdirSync(dir, { recursive: true });
    const d = spawnSync('criu', ['dump', '-t', String(w.pid), '-D', dir, '--shell-job'], { encoding: 'utf8' });
    if (d.status !== 0) return `criu dump failed: ${(d.stderr || d.stdout).trim().split('\n').slice(-1)[0]}`;
    const t0 = process.hrtime.bigint();
    const r = spawnSync('criu', ['restore', '-D', dir, '--shell-job', '-d'], { encoding: 'utf8' });
    const seconds = secs(t0);
    if (r.status !== 0) return `criu restore failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-1)[0]}`;
    return { seconds, verdict: (await w.verify({ timeoutMs: 300_000 })).detail };
  } finally {
    await w.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2).map(Number).filter((n) => n > 0);
  const sizes = args.length ? args : (process.env.GODWIT_BENCH_SIZES ?? '64,256,1024').split(',').map(Number);
  const criu = criuVersion();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-restore-'));
  console.log(`godwit restore benchmark (${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(1)}, ${RUNS} runs each: median (min..max))`);
  console.log(criu ? `criu ${criu} found on PATH: compared below` : 'criu 4.x not on PATH: no criu restore figures in this run');
  try {
    for (const mib of sizes) {
      const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)], readyTimeoutMs: 300_000 });
      try {
        const imagePids = w.pids;
        const zdir = path.join(tmp, `zstd-${mib}`);
        const pdir = path.join(tmp, `plain-${mib}`);
        const zs = await dump({ pid: w.pid, dir: zdir, leaveRunning: true, compress: 'zstd' });
        const zfiles = snapshotFiles(w.dir);
        const ps = await dump({ pid: w.pid, dir: pdir, compress: 'none' });
        const pfiles = snapshotFiles(w.dir);
        const pages = ps.pageBytes;
        const pageMib = Math.ceil(pages / MiB);
        const plain: Series = { xs: [], cpu: [], node: [] };
        const zstd: Series = { xs: [], cpu: [], node: [] };
        const pv: Series = { xs: [], cpu: [] };
        const uffd: Series = { xs: [], cpu: [] };
        const add = (s: Series, x: { seconds: number; cpu: number; node?: number }) => {
          s.xs.push(x.seconds);
          s.cpu.push(x.cpu);
          if (x.node !== undefined) s.node?.push(x.node);
        };
        const verdicts = new Set<string>();
        let steps: Record<string, number> = {};
        for (let i = 0; i < RUNS; i++) {
          add(pv, baseline('--bench-writev', pageMib));
          add(uffd, baseline('--bench-uffd', pageMib));
          const p = await restoreOnce(w, imagePids, pdir, pfiles);
          add(plain, p);
          verdicts.add(`plain: ${p.verdict}`);
          const z = await restoreOnce(w, imagePids, zdir, zfiles);
          add(zstd, z);
          verdicts.add(`zstd: ${z.verdict}`);
          if (z.seconds === median(zstd.xs)) steps = z.timings;
        }
        const ratio = (a: Series, b: Series) => (median(a.xs) / median(b.xs)).toFixed(2);
        const cpuRatio = (a: Series, b: Series) => (median(a.cpu) / median(b.cpu)).toFixed(2);
        console.log(
          `\n${mib} MiB workload (load ${os.loadavg()[0]!.toFixed(1)}): ${(pages / MiB).toFixed(0)} MiB of pages; images: zstd ${(dirBytes(zdir) / MiB).toFixed(1)} MiB, ` +
            `plain ${(dirBytes(pdir) / MiB).toFixed(1)} MiB (dump: zstd ${zs.totalMs.toFixed(0)} ms, plain ${ps.totalMs.toFixed(0)} ms)\n` +
            `  restore plain  ${fmt(plain)}\n` +
            `  restore zstd   ${fmt(zstd)}\n` +
            `  pv_writev      ${fmt(pv)}\n` +
            `  uffd_copy      ${fmt(uffd)}\n` +
            `  wall ratios: plain ${ratio(plain, pv)} x pv_writev, ${ratio(plain, uffd)} x uffd_copy; zstd ${ratio(zstd, pv)} x pv_writev, ${ratio(zstd, uffd)} x uffd_copy\n` +
            `  cpu ratios:  plain ${cpuRatio(plain, pv)} x pv_writev, ${cpuRatio(plain, uffd)} x uffd_copy; zstd ${cpuRatio(zstd, pv)} x pv_writev, ${cpuRatio(zstd, uffd)} x uffd_copy\n` +
            `  workload verdicts: ${[...verdicts].join('; ')}\n` +
            `  steps of the median zstd restore (ms): ${Object.entries(steps).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`,
        );
        if (criu) {
          const c = await criuRestore(mib, path.join(tmp, `criu-${mib}`));
          if (typeof c === 'string') console.log(`  criu: ${c}`);
          else
            console.log(
              `  criu restore   ${c.seconds.toFixed(3)} s (workload: ${c.verdict}); godwit/criu: plain ${(median(plain.xs) / c.seconds).toFixed(2)}, zstd ${(median(zstd.xs) / c.seconds).toFixed(2)}`,
            );
        }
        fs.rmSync(zdir, { recursive: true, force: true });
        fs.rmSync(pdir, { recursive: true, force: true });
      } finally {
        await w.cleanup();
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
