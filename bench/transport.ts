/**
 * Image stream throughput: `godwit send` of an image directory from host A to host B of a test bed over SSH, as a
 * ratio of OpenSSH's own `ssh B 'cat >/dev/null'` fed the same bytes, measured in the same run.
 *
 *   node dist/bench/transport.js [--mib 256,1024] [--rounds 2] [--data container,raw] [--default-cipher]
 *
 * Data (page-like: each 4 KiB page half random, half one repeated byte):
 * - container: godwit's zstd page container (pages-1.gwz, 50.5% of the pages): already compressed, so godwit
 *   passes it through and both tools move the same bytes.
 * - raw: plain CRIU pages-1.img: godwit compresses it on the way (zstd level 1), OpenSSH moves every byte.
 * OpenSSH uses the cipher ssh2 negotiates (aes128-gcm@openssh.com here; both are printed), so the comparison is of
 * the two implementations, not of two ciphers; --default-cipher adds OpenSSH with its own default.
 *
 * Two ratios (OpenSSH time / godwit time for the same input bytes):
 * - stream: the transfer alone. godwit: from the end of its handshake to the target's Complete (every file
 *   written, checked and fsynced on B), as `godwit send --json` reports it; OpenSSH: from the remote's "go" to the
 *   exit of `ssh B 'echo go; exec cat >/dev/null' < FILE`.
 * - whole command: start to exit of each (process start-up, SSH handshake and, for godwit, starting
 *   `godwit receive` on B included).
 * Rounds alternate the order of the tools; the best round of each is compared.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createPageWriter } from '../images/container-writer';
import { withHosts, type Host, type TestBed } from '../scenarios/hosts';
import { describeError } from '../util/errors';
import { opensshCat, ssh2Cipher, type Timing } from './openssh';
import { pageData } from './pagedata';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

type DataKind = 'container' | 'raw';

/** Page data of `mib` MiB as godwit's container or as a plain pages file; returns the file and its size. */
async function makeImage(dir: string, mib: number, kind: DataKind): Promise<{ file: string; bytes: number }> {
  fs.mkdirSync(dir, { recursive: true });
  const block = 64 << 20;
  if (kind === 'container') {
    const writer = await createPageWriter(dir, 1);
    for (let done = 0, seed = 1; done < mib << 20; done += block, seed++) {
      await writer.write(pageData(Math.min(block, (mib << 20) - done), true, seed));
    }
    const rec = await writer.finish();
    return { file: path.join(dir, rec.name), bytes: rec.size };
  }
  const file = path.join(dir, 'pages-1.img');
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    for (let done = 0, seed = 1; done < mib << 20; done += block, seed++) fs.writeSync(fd, pageData(Math.min(block, (mib << 20) - done), false, seed));
  } finally {
    fs.closeSync(fd);
  }
  return { file, bytes: fs.statSync(file).size };
}

/** `godwit send` from A to B; stream seconds from its --json result. */
async function godwitSend(bed: TestBed, to: Host, src: string, dst: string): Promise<Timing & { wire: number }> {
  const ssh = to.ssh!;
  const t0 = process.hrtime.bigint();
  const proc = bed.source.spawn(process.execPath, [CLI, 'send', src, '--to', `root@${ssh.address}:${dst}`, '--port', String(ssh.port),
    '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`, '--json'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.child.stdout!.on('data', (d: Buffer) => (out += d));
  proc.child.stderr!.on('data', (d: Buffer) => (err += d));
  const exit = await proc.exited;
  const whole = Number(process.hrtime.bigint() - t0) / 1e9;
  if (exit.code !== 0) throw new Error(`godwit send failed (${exit.code ?? exit.signal}): ${err}`);
  const res = JSON.parse(out) as { seconds: number; wireBytes: number };
  await to.execOk('rm', ['-rf', dst]);
  return { stream: res.seconds, whole, wire: res.wireBytes };
}

interface Row {
  kind: DataKind;
  mib: number;
  bytes: number;
  wire: number;
  godwit: Timing;
  openssh: Timing;
  opensshDefault?: Timing;
}

async function main(): Promise<void> {
  const mibs = (argValue('--mib') ?? '256,1024').split(',').map(Number);
  const rounds = Number(argValue('--rounds') ?? 2);
  const kinds = (argValue('--data') ?? 'container,raw').split(',') as DataKind[];
  const withDefault = process.argv.includes('--default-cipher');
  if (mibs.some((m) => !Number.isInteger(m) || m <= 0) || !Number.isInteger(rounds) || rounds <= 0 ||
    kinds.some((k) => k !== 'container' && k !== 'raw')) {
    console.error('usage: transport.js [--mib 256,1024] [--rounds 2] [--data container,raw] [--default-cipher]');
    process.exit(2);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-bench-transport-'));
  const rows: Row[] = [];
  try {
    await withHosts(async (bed) => {
      const to = bed.target;
      const cipher = await ssh2Cipher(bed, to);
      console.log(`${bed.source.name} -> ${to.name} over veth; godwit (ssh2) negotiates ${cipher}; OpenSSH is run with ` +
        `-c ${cipher}${withDefault ? ' and with its default cipher' : ''}; best of ${rounds} alternating round(s)`);
      for (const mib of mibs) {
        for (const kind of kinds) {
          const src = path.join(work, `img-${kind}-${mib}`);
          const { file, bytes } = await makeImage(src, mib, kind);
          const tools: [string, () => Promise<Timing & { wire?: number }>][] = [
            ['godwit', () => godwitSend(bed, to, src, path.join(work, `dst-${kind}-${mib}`))],
            ['openssh', () => opensshCat(bed, to, [file], ['-c', cipher])],
          ];
          if (withDefault) tools.push(['default', () => opensshCat(bed, to, [file])]);
          const all: Record<string, Timing[]> = {};
          let wire = 0;
          for (let r = 0; r < rounds; r++) {
            for (const [tool, run] of r % 2 === 0 ? tools : [...tools].reverse()) {
              const t = await run();
              if (t.wire !== undefined) wire = t.wire;
              (all[tool] ??= []).push(t);
            }
          }
          const best = (tool: string): Timing => ({
            stream: Math.min(...all[tool]!.map((t) => t.stream)),
            whole: Math.min(...all[tool]!.map((t) => t.whole)),
          });
          const row: Row = { kind, mib, bytes, wire, godwit: best('godwit'), openssh: best('openssh') };
          if (withDefault) row.opensshDefault = best('default');
          rows.push(row);
          const mb = (n: number) => (n / 1e6).toFixed(1);
          console.log(`${mib} MiB of pages as ${kind === 'container' ? 'a zstd page container' : 'plain pages'}: ${mb(bytes)} MB ` +
            `(${mb(wire)} MB on godwit's wire), load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
          const line = (name: string, t: Timing) => `  ${name.padEnd(26)} stream ${t.stream.toFixed(3)} s (${mb(bytes / t.stream).padStart(6)} MB/s)` +
            `  whole ${t.whole.toFixed(3)} s`;
          console.log(line('godwit send', row.godwit));
          console.log(line(`ssh -c ${cipher.replace('@openssh.com', '')} cat`, row.openssh));
          if (row.opensshDefault) console.log(line('ssh (default cipher) cat', row.opensshDefault));
          console.log(`  ratio (OpenSSH time / godwit time, same cipher): stream ${(row.openssh.stream / row.godwit.stream).toFixed(2)}, ` +
            `whole ${(row.openssh.whole / row.godwit.whole).toFixed(2)}` +
            (row.opensshDefault ? `; against the default cipher: stream ${(row.opensshDefault.stream / row.godwit.stream).toFixed(2)}` : ''));
          console.log(`  all rounds (stream s): ${Object.entries(all).map(([k, ts]) => `${k} ${ts.map((t) => t.stream.toFixed(2)).join('/')}`).join('; ')}`);
          fs.rmSync(src, { recursive: true, force: true });
        }
      }
    });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  console.log('\n| data | input | godwit send (stream) | ssh cat (stream) | stream ratio | whole-command ratio |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const mbs = (t: Timing) => `${(r.bytes / t.stream / 1e6).toFixed(1)} MB/s`;
    console.log(`| ${r.mib} MiB, ${r.kind} | ${(r.bytes / 1e6).toFixed(1)} MB | ${mbs(r.godwit)} | ${mbs(r.openssh)} | ` +
      `${(r.openssh.stream / r.godwit.stream).toFixed(2)}x | ${(r.openssh.whole / r.godwit.whole).toFixed(2)}x |`);
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
