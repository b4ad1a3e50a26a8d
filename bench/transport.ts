/**
 * Image stream throughput: `godwit send` of page data (godwit's zstd page container, made from page-like data
 * that zstd halves) from host A to host B of a test bed over SSH, as a ratio of OpenSSH's own
 * `ssh B 'cat >/dev/null'` fed the same bytes, measured in the same run.
 *
 *   node dist/bench/transport.js [--mib 256,1024] [--rounds 2]
 *
 * Two ratios, both measured in the same run inside host A:
 * - stream: the bytes' transfer alone. godwit: from the end of its handshake to the target's Complete (every file
 *   written, checked and fsynced on B), as `godwit send --json` reports it; OpenSSH: from the remote's "go" to
 *   the exit of `ssh B 'echo go; exec cat >/dev/null'` fed the same container file.
 * - whole command: start to exit of each (process start-up, SSH handshake and, for godwit, starting
 *   `godwit receive` on B included).
 * Rounds alternate the order; the best round of each is compared.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createPageWriter } from '../images/container-writer';
import { withHosts } from '../scenarios/hosts';
import { describeError } from '../util/errors';
import { pageData } from './pagedata';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

interface Round {
  tool: string;
  seconds: number;
}

/** Run argv inside the host to completion, timing it; fail on a non-zero exit. */
async function timed(run: () => { exited: Promise<{ code: number | null; signal: string | null }>; stderr: () => string }): Promise<number> {
  const t0 = process.hrtime.bigint();
  const p = run();
  const exit = await p.exited;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (exit.code !== 0) throw new Error(`command failed (${exit.code ?? exit.signal}): ${p.stderr()}`);
  return s;
}

async function makeImage(dir: string, mib: number): Promise<number> {
  fs.mkdirSync(dir, { recursive: true });
  const writer = await createPageWriter(dir, 1);
  const block = 64 << 20;
  for (let done = 0, seed = 1; done < mib << 20; done += block, seed++) {
    await writer.write(pageData(Math.min(block, (mib << 20) - done), true, seed));
  }
  const rec = await writer.finish();
  return rec.size;
}

async function main(): Promise<void> {
  const mibs = (argValue('--mib') ?? '256,1024').split(',').map(Number);
  const rounds = Number(argValue('--rounds') ?? 2);
  if (mibs.some((m) => !Number.isInteger(m) || m <= 0) || !Number.isInteger(rounds) || rounds <= 0) {
    console.error('usage: transport.js [--mib 256,1024] [--rounds 2]');
    process.exit(2);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-transport-'));
  try {
    await withHosts(async (bed) => {
      const to = bed.target;
      const ssh = to.ssh!;
      for (const mib of mibs) {
        const src = path.join(work, `img-${mib}`);
        const bytes = await makeImage(src, mib);
        const file = path.join(src, fs.readdirSync(src).find((n) => n.endsWith('.gwz'))!);
        const results: Round[] = [];
        const stream: Round[] = [];
        let wire = 0;
        const godwit = async (i: number) => {
          const dst = path.join(work, `dst-${mib}-${i}`);
          const proc = bed.source.spawn(process.execPath, [CLI, 'send', src, '--to', `root@${ssh.address}:${dst}`, '--port', String(ssh.port),
            '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`, '--json'],
          { stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          proc.child.stdout!.on('data', (d: Buffer) => (out += d));
          proc.child.stderr!.on('data', (d: Buffer) => (err += d));
          const s = await timed(() => ({ exited: proc.exited, stderr: () => err }));
          const res = JSON.parse(out);
          wire = res.wireBytes;
          stream.push({ tool: 'godwit send', seconds: res.seconds });
          await to.execOk('rm', ['-rf', dst]);
          return s;
        };
        const openssh = async () => {
          const argv = bed.sshArgv(to, 'echo go; exec cat >/dev/null');
          const t0 = process.hrtime.bigint();
          const proc = bed.source.spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
          let err = '';
          proc.child.stderr!.on('data', (d: Buffer) => (err += d));
          let out = '';
          await new Promise<void>((resolve, reject) => {
            proc.child.stdout!.on('data', (d: Buffer) => {
              out += d;
              if (out.includes('go\n')) resolve();
            });
            void proc.exited.then(() => reject(new Error(`ssh ended before "go": ${err}`)));
          });
          const tGo = process.hrtime.bigint();
          await pipeline(fs.createReadStream(file, { highWaterMark: 1 << 20 }), proc.child.stdin!);
          const exit = await proc.exited;
          const tEnd = process.hrtime.bigint();
          if (exit.code !== 0) throw new Error(`ssh cat failed (${exit.code ?? exit.signal}): ${err}`);
          stream.push({ tool: 'ssh cat', seconds: Number(tEnd - tGo) / 1e9 });
          return Number(tEnd - t0) / 1e9;
        };
        for (let r = 0; r < rounds; r++) {
          const order: [string, () => Promise<number>][] = [['godwit send', () => godwit(r)], ['ssh cat', openssh]];
          for (const [tool, run] of r % 2 === 0 ? order : order.reverse()) results.push({ tool, seconds: await run() });
        }
        const best = (rs: Round[], tool: string) => Math.min(...rs.filter((x) => x.tool === tool).map((x) => x.seconds));
        const mb = (n: number) => (n / 1e6).toFixed(1);
        const gs = best(stream, 'godwit send');
        const os_ = best(stream, 'ssh cat');
        const g = best(results, 'godwit send');
        const o = best(results, 'ssh cat');
        console.log(`${mib} MiB of page data -> ${mb(bytes)} MB container (${((bytes / (mib << 20)) * 100).toFixed(1)}%), ` +
          `${bed.source.name} -> ${to.name}, best of ${rounds}, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}:`);
        console.log(`  stream         godwit send ${gs.toFixed(3)} s (${mb(bytes / gs)} MB/s, ${mb(wire)} MB on the wire), ` +
          `ssh cat ${os_.toFixed(3)} s (${mb(bytes / os_)} MB/s): ratio ${(os_ / gs).toFixed(2)}`);
        console.log(`  whole command  godwit send ${g.toFixed(3)} s, ssh cat ${o.toFixed(3)} s: ratio ${(o / g).toFixed(2)}`);
        console.log(`  all rounds (stream): ${stream.map((x) => `${x.tool} ${x.seconds.toFixed(3)} s`).join('; ')}`);
        fs.rmSync(src, { recursive: true, force: true });
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
