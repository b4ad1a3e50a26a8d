/**
 * Container migration benchmark: `godwit migrate` of the unshare-built container (N MiB of checked memory, a veth on
 * a bridge, tmpfs, SysV shm, memory and pids limits) from host A to host B of a test bed, against the migration of a
 * plain process of the same memory size (mem-counter --mib N) between the same hosts in the same run. Printed: the
 * downtime (source frozen -> target running) split per step, each as container ms / plain ms, and the parts only a
 * container has as a share of the plain downtime. The container's parts run side by side on each side, so the rows
 * overlap; "source: container step" and "target: container step" are their wall time. Measured numbers only.
 *
 *   node dist/bench/container-migrate.js [--mib 64,256] [--rounds 2]     (best of the rounds by downtime)
 *
 * Both workloads verify themselves on host B after each run (a migration that loses anything does not count).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ipIn } from '../checkpoint/net-ip';
import type { MigrateSummary } from '../migrate';
import { removeCgroupTree, runUnshareContainer } from '../scenarios/container/unshare';
import { TestBed, withHosts } from '../scenarios/hosts';
import { addContainerVeth, NetHost } from '../scenarios/netns';
import { findWorkloadPids, startWorkload } from '../scenarios/workload';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
const BRIDGE = 'gwcbr';
const SUBNET = 62;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function safeRead(f: string): string {
  try {
    return fs.readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}

/** `godwit migrate ARGS` run in host A's network namespace; the summary of its done event. */
async function migrateCli(bed: TestBed, args: string[]): Promise<MigrateSummary> {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'nsenter', `--net=${bed.source.nsPath('net')}`, process.execPath, CLI,
    'migrate', ...args, '--to', `root@${bed.target.address}`, '--identity', bed.clientKeyPath, '--known-hosts',
    bed.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (err += d));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  const done = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string; summary?: MigrateSummary })
    .find((e) => e.event === 'done');
  if (code !== 0 || !done) throw new Error(`godwit migrate failed (${code}): ${err}`);
  return done.summary!;
}

async function plainRun(bed: TestBed, mib: number, work: string, k: number): Promise<MigrateSummary> {
  const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)], readyTimeoutMs: 180_000, tmpRoot: work,
    prefix: ['nsenter', `--net=${bed.source.nsPath('net')}`] });
  try {
    const s = await migrateCli(bed, ['--pid', String(w.pid), '--target-dir', path.join(work, `plain-${mib}-${k}`)]);
    w.setPids(findWorkloadPids(w.dir));
    const v = await w.verify({ timeoutMs: 120_000 });
    if (!v.pass) throw new Error(`the migrated mem-counter failed its check on host B: ${v.detail}`);
    return s;
  } finally {
    await w.cleanup();
  }
}

/** Host B's processes but its init and sshd (the restored container, its restorer). */
function processesInB(bed: TestBed): number[] {
  const bNs = fs.readlinkSync(`/proc/${bed.target.initPid}/ns/pid`);
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === bed.target.initPid || Number(e) === bed.target.ssh?.pid) continue;
    const nspid = (/^NSpid:\s+(.*)$/m.exec(safeRead(`/proc/${e}/status`))?.[1] ?? '').trim().split(/\s+/);
    let ns = '';
    try {
      ns = fs.readlinkSync(`/proc/${e}/ns/pid`);
    } catch {
      continue;
    }
    // In B's pid namespace, or nested in it (machine, B, restorer's, container's).
    if (ns === bNs || (nspid.length >= 3 && processInB(Number(e), bNs))) out.push(Number(e));
  }
  return out;
}

function processInB(pid: number, bNs: string): boolean {
  let p = pid;
  for (let i = 0; i < 8 && p > 1; i++) {
    try {
      if (fs.readlinkSync(`/proc/${p}/ns/pid`) === bNs) return true;
    } catch {
      return false;
    }
    p = Number(/^PPid:\s+(\d+)/m.exec(safeRead(`/proc/${p}/status`))?.[1] ?? 0);
  }
  return false;
}

async function containerRun(bed: TestBed, mib: number, work: string, k: number, cgroupRoot: string): Promise<MigrateSummary> {
  const uc = await runUnshareContainer({ hostname: 'gw-bench', memMib: mib, memoryLimit: (mib + 64) << 20, pidsLimit: 16,
    readyTimeoutMs: 180_000 });
  try {
    const p = bed.source.nsPath('net');
    const host = { path: p, bridge: BRIDGE, ip: async (args: string[]) => (await ipIn(p, args)).stdout.toString() } as unknown as NetHost;
    await addContainerVeth(uc.pid, host, { subnet: SUBNET });
    const s = await migrateCli(bed, ['--pid', String(uc.pid), '--target-dir', path.join(work, `ctr-${mib}-${k}`), '--bridge', BRIDGE,
      '--cgroup-root', cgroupRoot]);
    // The restored container counts on and found nothing changed (shm, memory) on host B.
    const root = [...processesInB(bed)].find((x) => safeRead(`/proc/${x}/cmdline`).startsWith('/bin/ctr-workload') &&
      /^NSpid:.*\s1\s*$/m.test(safeRead(`/proc/${x}/status`)));
    if (!root) throw new Error('the migrated container is not running on host B');
    const before = Number(safeRead(`/proc/${root}/root/tmp/count`).trim());
    let after = before;
    for (let i = 0; i < 100 && after <= before; i++) {
      await sleep(50);
      after = Number(safeRead(`/proc/${root}/root/tmp/count`).trim());
    }
    const fail = safeRead(`/proc/${root}/root/tmp/result`);
    if (!(after > before) || fail) throw new Error(`the migrated container does not run right on host B (count ${before} -> ${after}) ${fail}`);
    return s;
  } finally {
    for (let i = 0; i < 100; i++) {
      const left = processesInB(bed);
      if (!left.length) break;
      for (const x of left) {
        try {
          process.kill(x, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await sleep(50);
    }
    for (let i = 0; i < 100 && removeCgroupTree(cgroupRoot); i++) await sleep(50);
    await uc.destroy();
  }
}

const step = (s: MigrateSummary, title: string): number => s.steps.find((x) => x.title === title)?.ms ?? 0;
const target = (s: MigrateSummary, key: string): number => s.targetTimingsMs[key] ?? 0;
const ctrPart = (s: MigrateSummary, key: string): number => s.dump.container?.[key] ?? 0;
/** Source side of the memory: collecting the tree (maps, pagemaps) and reading its pages out. */
const memorySource = (s: MigrateSummary): number => step(s, 'collect tree, threads, memory, files') + step(s, 'dump pages') + step(s, 'write images');

async function main(): Promise<void> {
  const mibs = (argValue('--mib') ?? '64,256').split(',').map(Number);
  const rounds = Number(argValue('--rounds') ?? 2);
  if (mibs.some((m) => !Number.isInteger(m) || m < 1) || !Number.isInteger(rounds) || rounds <= 0) {
    console.error('usage: container-migrate.js [--mib 64,256] [--rounds 2]');
    process.exit(2);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-ctr-migrate-'));
  const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');
  const ms = (x: number) => x.toFixed(1).padStart(9);
  const ratio = (a: number, b: number) => (a > 0 ? (b / a).toFixed(2) : 'n/a').padStart(8);
  try {
    await withHosts(async (bed) => {
      const cgroupRoot = `/godwit-bench-${bed.id}-b`;
      for (const h of [bed.source, bed.target]) {
        await h.execOk('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
        await h.execOk('ip', ['addr', 'add', `198.19.${SUBNET}.1/24`, 'dev', BRIDGE]);
        await h.execOk('ip', ['link', 'set', BRIDGE, 'up']);
      }
      console.log(`container migration vs a plain process of the same memory, ${bed.source.name} -> ${bed.target.name} over SSH ` +
        `(best of ${rounds} by downtime each); load average at start ${load()}`);
      for (const mib of mibs) {
        const plain: MigrateSummary[] = [];
        const ctr: MigrateSummary[] = [];
        for (let k = 0; k < rounds; k++) {
          plain.push(await plainRun(bed, mib, work, k));
          ctr.push(await containerRun(bed, mib, work, k, cgroupRoot));
        }
        const p = plain.reduce((a, b) => (b.downtimeMs < a.downtimeMs ? b : a));
        const c = ctr.reduce((a, b) => (b.downtimeMs < a.downtimeMs ? b : a));
        console.log(`\n${mib} MiB (load average ${load()})         plain ms  container ms  container/plain`);
        const row = (name: string, a: number, b: number) => console.log(`  ${name.padEnd(40)}${ms(a)}  ${ms(b)}     ${ratio(a, b)}`);
        const share = (name: string, b: number) =>
          console.log(`  ${name.padEnd(40)}        -  ${ms(b)}     ${(b / p.downtimeMs).toFixed(2).padStart(8)} of the plain downtime`);
        row('freeze (cgroup freezer + seize)', step(p, 'freeze'), step(c, 'freeze'));
        share('source: namespaces (uts, ipc)', ctrPart(c, 'namespaces'));
        share('source: net (iproute2)', ctrPart(c, 'net'));
        share('source: mounts + tmpfs', ctrPart(c, 'mounts'));
        share('source: rootfs (digest)', ctrPart(c, 'rootfs'));
        share('source: cgroups', ctrPart(c, 'cgroups'));
        share('source: container step (parallel)', step(c, 'container: namespaces, mounts, rootfs, cgroups'));
        row('source: memory (collect, pages)', memorySource(p), memorySource(c));
        share('source: hold in the cgroup freezer', step(c, 'container: frozen (cgroup freezer) until the target runs it'));
        row('stream: last bytes, target check', step(p, 'target: check the files'), step(c, 'target: check the files'));
        share('target: cgroups', target(c, 'container: cgroups'));
        share('target: namespaces (holder, uts, ipc)', target(c, 'container: namespaces'));
        share('target: net (veth on the bridge)', target(c, 'container: net'));
        share('target: rootfs (digest)', target(c, 'container: rootfs'));
        share('target: mounts + tmpfs', target(c, 'container: mounts'));
        share('target: container step (all)', target(c, 'container: cgroups, namespaces, rootfs, mounts'));
        row('target: memory', target(p, 'rebuild memory'), target(c, 'rebuild memory'));
        row('target: whole restore (held)', p.restoreMs, c.restoreMs);
        row('commit -> running', p.commitMs, c.commitMs);
        row('downtime (frozen -> running)', p.downtimeMs, c.downtimeMs);
        row('total', p.totalMs, c.totalMs);
        const steps = (x: MigrateSummary) => Object.entries(x.targetTimingsMs).filter(([k]) => !k.startsWith('container: ') || k.includes(','))
          .map(([k, v]) => `${k} ${v.toFixed(0)}`).join('; ');
        console.log(`  target steps, plain (ms): ${steps(p)}`);
        console.log(`  target steps, container (ms): ${steps(c)}`);
        console.log(`  memory: plain ${(p.pageBytes / 2 ** 20).toFixed(1)} MiB, container ${(c.pageBytes / 2 ** 20).toFixed(1)} MiB of pages; ` +
          `wire: plain ${(p.wireBytes / 1e6).toFixed(1)} MB, container ${(c.wireBytes / 1e6).toFixed(1)} MB`);
        if (rounds > 1) console.log(`  all rounds, downtime ms: plain ${plain.map((x) => x.downtimeMs.toFixed(0)).join(', ')}; ` +
          `container ${ctr.map((x) => x.downtimeMs.toFixed(0)).join(', ')}`);
      }
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
