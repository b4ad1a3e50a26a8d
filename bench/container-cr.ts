/**
 * Container checkpoint/restore benchmark (the container's parts run side by side, so they overlap; the
 * "container step" rows are their wall time): the runc container scenario holding N MiB of memory (ctr-workload
 * with MIB) against the plain-process case of the same memory size (mem-counter --mib N), both dumped and
 * restored in the same run. Printed per step as ratios: freeze, namespaces, mounts, rootfs, cgroups, memory,
 * and the whole dump and restore; the container-only parts as a share of the plain dump/restore. Measured
 * numbers only. `node dist/bench/container-cr.js [MiB...]` (default 64 256), `--rounds N` (default 2, best kept).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump, DumpSummary } from '../checkpoint/dump';
import { restore, RestoreResult } from '../restore';
import { runContainer } from '../scenarios/container/bundle';
import { startWorkload } from '../scenarios/workload';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Run {
  dump: DumpSummary;
  restoreMs: number;
  restore: RestoreResult;
}

const step = (d: DumpSummary, title: string): number => d.steps.find((s) => s.title === title)?.ms ?? 0;
const memoryMs = (d: DumpSummary): number =>
  step(d, 'collect tree, threads, memory, files') + step(d, 'dump pages') + step(d, 'write images');

async function endRestored(r: RestoreResult): Promise<void> {
  try {
    process.kill(r.rootPid, 'SIGKILL');
  } catch {
    /* gone */
  }
  if (r.restorer) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([r.restorer.waitExit(), new Promise((res) => (timer = setTimeout(res, 5000)))]);
    clearTimeout(timer);
  }
}

async function plainRun(mib: number, root: string): Promise<Run> {
  const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)] });
  const dir = path.join(root, `plain-${mib}-${Date.now()}`);
  try {
    const d = await dump({ pid: w.pid, dir });
    const t0 = process.hrtime.bigint();
    const r = await restore({ dir, newPidns: true, detach: true }, { silent: true });
    const restoreMs = Number(process.hrtime.bigint() - t0) / 1e6;
    await endRestored(r);
    return { dump: d, restoreMs, restore: r };
  } finally {
    await w.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function containerRun(mib: number, root: string): Promise<Run> {
  const c = await runContainer({ memMib: mib, memoryLimit: (mib + 64) << 20, readyTimeoutMs: 60000 });
  const dir = path.join(root, `ctr-${mib}-${Date.now()}`);
  let r: RestoreResult | undefined;
  try {
    await sleep(100);
    const d = await dump({ pid: 0, container: c.id, dir });
    for (let i = 0; i < 250 && fs.existsSync(`/run/runc/${c.id}`); i++) await sleep(20);
    const t0 = process.hrtime.bigint();
    r = await restore({ dir, detach: true }, { silent: true });
    const restoreMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const before = Number(fs.readFileSync(`/proc/${r.rootPid}/root/tmp/count`, 'utf8'));
    await sleep(200);
    const after = Number(fs.readFileSync(`/proc/${r.rootPid}/root/tmp/count`, 'utf8'));
    if (!(after > before) || fs.existsSync(`/proc/${r.rootPid}/root/tmp/result`))
      throw new Error(`restored container does not run right (count ${before} -> ${after})`);
    return { dump: d, restoreMs, restore: r };
  } finally {
    if (r) await endRestored(r);
    await c.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function best(runs: Run[]): Run {
  return runs.reduce((a, b) => (b.dump.totalMs + b.restoreMs < a.dump.totalMs + a.restoreMs ? b : a));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const ri = argv.indexOf('--rounds');
  const rounds = ri >= 0 ? Number(argv[ri + 1]) : 2;
  const sizes = argv.filter((a, i) => i !== ri && i !== ri + 1).map(Number).filter((n) => n > 0);
  const list = sizes.length ? sizes : [64, 256];
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-ctr-'));
  const f = (x: number): string => x.toFixed(2).padStart(7);
  const ms = (x: number): string => x.toFixed(1).padStart(8);
  try {
    console.log(`container checkpoint/restore vs a plain process of the same memory (best of ${rounds}; load ${os.loadavg()[0].toFixed(1)})`);
    for (const mib of list) {
      const plain: Run[] = [];
      const ctr: Run[] = [];
      for (let k = 0; k < rounds; k++) {
        plain.push(await plainRun(mib, root));
        ctr.push(await containerRun(mib, root));
      }
      const p = best(plain);
      const c = best(ctr);
      const ct = c.dump.container ?? {};
      const rt = c.restore.timings;
      console.log(`\n${mib} MiB                      plain ms  container ms   container/plain`);
      const row = (name: string, a: number, b: number): void => console.log(`  ${name.padEnd(24)}${ms(a)}   ${ms(b)}      ${a > 0 ? f(b / a) : '    n/a'}`);
      const share = (name: string, b: number, of: number): void => console.log(`  ${name.padEnd(24)}       -   ${ms(b)}      ${f(b / of)} of the plain total`);
      console.log(' dump');
      row('freeze (+cgroup freezer)', step(p.dump, 'freeze'), step(c.dump, 'freeze'));
      share('namespaces (uts, ipc)', ct.namespaces ?? 0, p.dump.totalMs);
      share('net (iproute2)', ct.net ?? 0, p.dump.totalMs);
      share('mounts + tmpfs', ct.mounts ?? 0, p.dump.totalMs);
      share('rootfs (digest)', ct.rootfs ?? 0, p.dump.totalMs);
      share('cgroups', ct.cgroups ?? 0, p.dump.totalMs);
      share('container step (parallel)', step(c.dump, 'container: namespaces, mounts, rootfs, cgroups'), p.dump.totalMs);
      row('memory (collect+pages)', memoryMs(p.dump), memoryMs(c.dump));
      row('frozen time', p.dump.frozenMs, c.dump.frozenMs);
      row('whole dump', p.dump.totalMs, c.dump.totalMs);
      console.log(' restore');
      share('cgroups', rt['container: cgroups'] ?? 0, p.restoreMs);
      share('namespaces (uts, ipc)', rt['container: namespaces'] ?? 0, p.restoreMs);
      share('net', rt['container: net'] ?? 0, p.restoreMs);
      share('rootfs (digest)', rt['container: rootfs'] ?? 0, p.restoreMs);
      share('mounts + tmpfs', rt['container: mounts'] ?? 0, p.restoreMs);
      share('container step (all)', rt['container: cgroups, namespaces, rootfs, mounts'] ?? 0, p.restoreMs);
      row('memory', p.restore.timings['rebuild memory'] ?? 0, rt['rebuild memory'] ?? 0);
      row('whole restore', p.restoreMs, c.restoreMs);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
