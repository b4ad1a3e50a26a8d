/**
 * SSH stream throughput: godwit's ssh2 channel against OpenSSH's own client, host A -> host B of a test bed, both
 * pushing the same bytes into `cat >/dev/null`, measured in the same run.
 *
 *   node dist/bench/ssh-throughput.js [--mib 256] [--rounds 3]
 *
 * The clients run inside host A (this script re-runs itself there with --inside). Each side waits for the remote
 * "go" (so connection set-up is not counted), then streams MiB-sized buffers honouring backpressure, closes stdin
 * and waits for the remote exit status. Rounds alternate the clients; the best round of each is compared.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Writable, Readable } from 'node:stream';
import { withHosts } from '../scenarios/hosts';
import { sshConnect } from '../transport/ssh';
import { describeError } from '../util/errors';

interface InsideConfig {
  mib: number;
  rounds: number;
  host: string;
  port: number;
  key: string;
  knownHosts: string;
  sshArgv: string[];
  sshArgvGcm: string[];
}

interface Measurement {
  client: string;
  seconds: number;
  mbPerS: number;
}

const CHUNK = 1 << 20;
const REMOTE = 'echo go; exec cat >/dev/null';

/** Wait for "go" on `out`, then write `mib` MiB to `sink` with backpressure, end it, and return the seconds. */
async function push(sink: Writable, out: Readable, mib: number, data: Buffer, finished: Promise<unknown>): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const onData = (b: Buffer): void => {
      seen += b.toString();
      if (seen.includes('go\n')) {
        out.removeListener('data', onData);
        out.resume();
        resolve();
      }
    };
    out.on('data', onData);
    finished.then(() => reject(new Error(`remote ended before "go": ${seen}`)), reject);
  });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < mib; i++) {
    if (!sink.write(data)) await new Promise((r) => sink.once('drain', r));
  }
  sink.end();
  await finished;
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function viaSsh2(cfg: InsideConfig, data: Buffer): Promise<number> {
  const conn = await sshConnect({ host: cfg.host, port: cfg.port, privateKeyPath: cfg.key, knownHostsFiles: [cfg.knownHosts], agent: false });
  try {
    const s = await conn.execStream(REMOTE);
    const done = s.done.then((st) => {
      if (st.code !== 0) throw new Error(`remote cat exited ${JSON.stringify(st)}: ${s.stderrText()}`);
    });
    return await push(s.channel, s.channel, cfg.mib, data, done);
  } finally {
    await conn.close();
  }
}

async function viaOpenssh(argv: string[], cfg: InsideConfig, data: Buffer): Promise<number> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => (stderr += b));
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`ssh exited ${code ?? signal}: ${stderr}`))));
  });
  try {
    return await push(child.stdin, child.stdout, cfg.mib, data, done);
  } finally {
    child.kill('SIGKILL');
  }
}

async function inside(cfg: InsideConfig): Promise<void> {
  // Random bytes: nothing on the way can compress them.
  const data = randomBytes(CHUNK);
  const results: Measurement[] = [];
  const clients: [string, () => Promise<number>][] = [
    ['ssh2 (godwit)', () => viaSsh2(cfg, data)],
    ['OpenSSH ssh (default cipher)', () => viaOpenssh(cfg.sshArgv, cfg, data)],
    ['OpenSSH ssh -c aes128-gcm', () => viaOpenssh(cfg.sshArgvGcm, cfg, data)],
  ];
  for (let round = 0; round < cfg.rounds; round++) {
    for (const [client, run] of round % 2 === 0 ? clients : [...clients].reverse()) {
      const seconds = await run();
      results.push({ client, seconds, mbPerS: (cfg.mib * CHUNK) / seconds / 1e6 });
    }
  }
  const probe = await sshConnect({ host: cfg.host, port: cfg.port, privateKeyPath: cfg.key, knownHostsFiles: [cfg.knownHosts], agent: false });
  await probe.close();
  console.log(JSON.stringify({ cipher: probe.cipher, results }));
}

async function outside(mib: number, rounds: number): Promise<void> {
  await withHosts(async (bed) => {
    const to = bed.target;
    const cfg: InsideConfig = {
      mib,
      rounds,
      host: to.ssh!.address,
      port: to.ssh!.port,
      key: bed.clientKeyPath,
      knownHosts: bed.knownHostsPath,
      sshArgv: bed.sshArgv(to, REMOTE),
      sshArgvGcm: bed.sshArgv(to, REMOTE, ['-c', 'aes128-gcm@openssh.com']),
    };
    const r = await bed.source.exec(process.execPath, [__filename, '--inside', JSON.stringify(cfg)], { timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`benchmark inside host ${bed.source.name} failed: ${r.stderr}`);
    const { cipher, results } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { cipher: string; results: Measurement[] };
    const best = new Map<string, Measurement>();
    for (const m of results) {
      const b = best.get(m.client);
      if (!b || m.mbPerS > b.mbPerS) best.set(m.client, m);
    }
    console.log(`SSH stream throughput, ${mib} MiB of random data into "cat >/dev/null", ${bed.source.name} -> ${to.name} ` +
      `(veth), ${rounds} round(s), best of each; ssh2 negotiated ${cipher}:`);
    for (const m of best.values()) console.log(`  ${m.client.padEnd(30)} ${m.mbPerS.toFixed(1).padStart(8)} MB/s  (${m.seconds.toFixed(3)} s)`);
    const ssh2 = best.get('ssh2 (godwit)')!;
    const openssh = best.get('OpenSSH ssh (default cipher)')!;
    const opensshGcm = best.get('OpenSSH ssh -c aes128-gcm')!;
    console.log(`  ratio ssh2 / OpenSSH (default cipher): ${(ssh2.mbPerS / openssh.mbPerS).toFixed(2)}`);
    console.log(`  ratio ssh2 / OpenSSH (aes128-gcm, the cipher ssh2 negotiates): ${(ssh2.mbPerS / opensshGcm.mbPerS).toFixed(2)}`);
    console.log(`  all rounds: ${results.map((m) => `${m.client} ${m.mbPerS.toFixed(0)}`).join('; ')}`);
  });
}

function argValue(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) {
    console.error(`${name} needs a positive integer`);
    process.exit(2);
  }
  return v;
}

const insideIdx = process.argv.indexOf('--inside');
const run = insideIdx >= 0
  ? inside(JSON.parse(process.argv[insideIdx + 1]!) as InsideConfig)
  : outside(argValue('--mib', 256), argValue('--rounds', 3));
run.catch((err) => {
  console.error(describeError(err));
  process.exit(1);
});
