/**
 * `godwit migrate` of a mem-counter workload from host A to host B of a test bed (veth, SSH), for 256 MiB and 1 GiB:
 * downtime (source frozen -> target running), total time, bytes on the wire, and the stream's throughput as a
 * ratio of OpenSSH's own: `ssh -c CIPHER B 'cat >/dev/null'` (bench/openssh.ts, CIPHER = the one ssh2 negotiates)
 * fed the same bytes (the image files the migration sent, kept on the target for this), right after each migration.
 *
 *   node dist/bench/migrate.js [--mib 256,1024] [--rounds 1]
 *
 * Stream throughput of the migration = wire bytes / transfer time (from the moment every page has been read out of
 * the frozen tree, when compression and sending run, to the target's Complete: every file written, checked and
 * fsynced there). OpenSSH's = the same byte count / the time from the remote's "go" to ssh's exit. The restored
 * workload verifies itself on the target after each run (a migration that loses data does not count).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { MigrateSummary } from '../migrate';
import { TestBed, withHosts } from '../scenarios/hosts';
import { findWorkloadPids, startWorkload } from '../scenarios/workload';
import { describeError } from '../util/errors';
import { opensshCat, ssh2Cipher } from './openssh';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

interface Round {
  summary: MigrateSummary;
  opensshSeconds: number;
  bytes: number;
}

/** One migration, driven through the CLI inside host A's network namespace; the images are kept on B. */
async function migrateOnce(bed: TestBed, mib: number, targetDir: string, tmpRoot: string): Promise<MigrateSummary> {
  const netns = `--net=${bed.source.nsPath('net')}`;
  const w = await startWorkload('mem-counter', { args: ['--mib', String(mib)], readyTimeoutMs: 180_000, tmpRoot,
    prefix: ['nsenter', netns] });
  try {
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'nsenter', netns, process.execPath, CLI, 'migrate', '--pid',
      String(w.pid), '--to', `root@${bed.target.address}`, '--identity', bed.clientKeyPath, '--known-hosts',
      bed.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`, '--target-dir', targetDir, '--keep-images',
      '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.stderr!.on('data', (d: Buffer) => (err += d));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    const events = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string; summary?: MigrateSummary });
    const done = events.find((e) => e.event === 'done');
    if (code !== 0 || !done) throw new Error(`godwit migrate failed (${code}): ${err}`);
    const now = findWorkloadPids(w.dir);
    w.setPids(now);
    const v = await w.verify({ timeoutMs: 120_000 });
    if (!v.pass) throw new Error(`the migrated workload failed its check on the target: ${v.detail}`);
    return done.summary!;
  } finally {
    await w.cleanup();
  }
}

async function main(): Promise<void> {
  const mibs = (argValue('--mib') ?? '256,1024').split(',').map(Number);
  const rounds = Number(argValue('--rounds') ?? 1);
  if (mibs.some((m) => !Number.isInteger(m) || m < 2) || !Number.isInteger(rounds) || rounds <= 0) {
    console.error('usage: migrate.js [--mib 256,1024] [--rounds 1]');
    process.exit(2);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-migrate-'));
  try {
    await withHosts(async (bed) => {
      const cipher = await ssh2Cipher(bed, bed.target);
      console.log(`godwit (ssh2) negotiates ${cipher}; OpenSSH is run with -c ${cipher}`);
      for (const mib of mibs) {
        const runs: Round[] = [];
        for (let r = 0; r < rounds; r++) {
          const targetDir = path.join(work, `img-${mib}-${r}`);
          const summary = await migrateOnce(bed, mib, targetDir, work);
          // The same bytes the migration put on the wire (its image files, kept on B: the filesystem is shared).
          const files = fs.readdirSync(targetDir).map((n) => path.join(targetDir, n));
          const bytes = files.reduce((n, f) => n + fs.statSync(f).size, 0);
          const opensshSeconds = (await opensshCat(bed, bed.target, files, ['-c', cipher])).stream;
          fs.rmSync(targetDir, { recursive: true, force: true });
          runs.push({ summary, opensshSeconds, bytes });
        }
        const mb = (n: number) => (n / 1e6).toFixed(1);
        const best = runs.reduce((a, b) => (b.summary.downtimeMs < a.summary.downtimeMs ? b : a));
        const s = best.summary;
        const ours = s.wireBytes / (s.transferMs / 1000);
        const theirs = best.bytes / best.opensshSeconds;
        console.log(`mem-counter ${mib} MiB, ${bed.source.name} -> ${bed.target.name} over SSH, best of ${rounds} by downtime, ` +
          `load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}:`);
        console.log(`  downtime ${s.downtimeMs.toFixed(0)} ms (frozen -> running on the target), total ${(s.totalMs / 1000).toFixed(2)} s`);
        console.log(`  ${mb(s.pageBytes)} MB of memory, ${mb(s.wireBytes)} MB on the wire (${s.files} files), target restore ` +
          `${s.restoreMs.toFixed(0)} ms, commit -> running ${s.commitMs.toFixed(1)} ms`);
        console.log(`  stream: godwit ${mb(ours)} MB/s (${mb(s.wireBytes)} MB in ${(s.transferMs / 1000).toFixed(3)} s), ` +
          `OpenSSH ssh -c ${cipher.replace('@openssh.com', '')} cat ${mb(theirs)} MB/s (${mb(best.bytes)} MB in ${best.opensshSeconds.toFixed(3)} s): ratio ${(ours / theirs).toFixed(2)}`);
        console.log(`  steps (ms): ${s.steps.map((x) => `${x.title} ${x.ms.toFixed(0)}`).join('; ')}`);
        if (rounds > 1) {
          console.log(`  all rounds: ${runs.map((x) => `downtime ${x.summary.downtimeMs.toFixed(0)} ms, ratio ` +
            `${(x.summary.wireBytes / (x.summary.transferMs / 1000) / (x.bytes / x.opensshSeconds)).toFixed(2)}`).join('; ')}`);
        }
      }
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

main().catch((err) => {
  console.error(describeError(err));
  process.exit(1);
});
