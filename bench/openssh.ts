/**
 * The OpenSSH baseline the stream benchmarks (bench/transport.ts, bench/migrate.ts) compare godwit with: OpenSSH's
 * own client on host A streaming the same bytes into `cat >/dev/null` on B, with the cipher godwit's ssh2 client
 * negotiates (so the comparison is of the two implementations, not of two ciphers).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Host, TestBed } from '../scenarios/hosts';
import { shellQuote } from '../transport/ssh-endpoint';

const REMOTE = 'echo go; exec cat >/dev/null';

export interface Timing {
  /** From the remote's "go" (the session is up, cat runs) to ssh's exit: the transfer alone. */
  stream: number;
  /** From spawning ssh to its exit (process start-up and SSH handshake included). */
  whole: number;
}

/** Reads the files once, so that OpenSSH's run reads them from the page cache, not the disk (a migration's target
 *  writes them O_DIRECT): godwit's own stream never reads a disk either. */
function warm(files: string[]): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    try {
      while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/**
 * `ssh [options] B 'echo go; exec cat >/dev/null'` run in A with `files` on its stdin: one file is given as
 * ssh's stdin itself (no other process in the path), several are concatenated by `cat` into a pipe. The files are
 * read once beforehand, so that the timed run reads them from memory.
 */
export async function opensshCat(bed: TestBed, to: Host, files: string[], options: string[] = []): Promise<Timing> {
  if (files.length === 0) throw new Error('opensshCat: no files to send');
  warm(files);
  const ssh = bed.sshArgv(to, REMOTE, options);
  const one = files.length === 1;
  const fd = one ? fs.openSync(files[0]!, 'r') : 'ignore';
  try {
    const t0 = process.hrtime.bigint();
    const proc = one
      ? bed.source.spawn(ssh[0]!, ssh.slice(1), { stdio: [fd, 'pipe', 'pipe'] })
      : bed.source.spawn('sh', ['-c', `cat -- "$@" | exec ${ssh.map(shellQuote).join(' ')}`, 'sh', ...files], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    proc.child.stderr!.on('data', (d: Buffer) => (err += d));
    let tGo: bigint | undefined;
    let out = '';
    proc.child.stdout!.on('data', (d: Buffer) => {
      out += d;
      if (tGo === undefined && out.includes('go\n')) tGo = process.hrtime.bigint();
    });
    const exit = await proc.exited;
    const tEnd = process.hrtime.bigint();
    if (exit.code !== 0 || tGo === undefined) throw new Error(`ssh cat failed (${exit.code ?? exit.signal}): ${err}`);
    return { stream: Number(tEnd - tGo) / 1e9, whole: Number(tEnd - t0) / 1e9 };
  } finally {
    if (typeof fd === 'number') fs.closeSync(fd);
  }
}

/** The cipher ssh2 (godwit's client) negotiates with B's sshd, asked from inside A: what OpenSSH gets with -c. */
export async function ssh2Cipher(bed: TestBed, to: Host): Promise<string> {
  const script = `require(${JSON.stringify(path.resolve(__dirname, '..', 'transport', 'ssh.js'))}).sshConnect(${JSON.stringify({
    host: to.ssh!.address, port: to.ssh!.port, privateKeyPath: bed.clientKeyPath, knownHostsFiles: [bed.knownHostsPath], agent: false,
  })}).then(async (c) => { console.log(c.cipher); await c.close(); })`;
  const r = await bed.source.execOk(process.execPath, ['-e', script]);
  return r.stdout.trim();
}
