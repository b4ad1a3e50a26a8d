/**
 * `godwit send DIR --to [user@]HOST:DIR`: stream an image directory to another host over SSH, where
 * `godwit receive` writes it (checked, 0600 files in a 0700 directory, nothing left behind on failure).
 */
import type { Command } from 'commander';
import { UsageError } from '../util/errors';
import { Endpoint, localEndpoint, sendImageDir } from '../transport/endpoint';
import type { SendProgress, SendResult } from '../transport/send';
import { sshEndpoint } from '../transport/ssh-endpoint';
import { parseSshTarget, sshConnect, SshConnectOptions } from '../transport/ssh';
import { printJson } from './output';

export interface SendCliOptions {
  dir: string;
  /** "[user@]host:DIR", or "local:DIR" for this machine (no SSH). */
  to: string;
  port?: number;
  identity?: string;
  knownHosts?: string;
  fingerprint?: string;
  godwitPath?: string;
  json?: boolean;
}

/** Split "[user@]host:DIR" ("[v6]:DIR" too) into the SSH target and the remote directory. */
export function parseDestination(spec: string): { target: string; dir: string } {
  const m = /^((?:[^@\s:]+@)?(?:\[[^\]]+\]|[^:\s\[\]]+)):(.+)$/.exec(spec);
  if (!m) throw new UsageError(`--to ${spec}: expected [user@]HOST:DIR (e.g. root@10.0.0.2:/var/lib/godwit/img)`);
  return { target: m[1]!, dir: m[2]! };
}

export async function runSend(o: SendCliOptions, onProgress?: (p: SendProgress) => void): Promise<SendResult> {
  const { target, dir } = parseDestination(o.to);
  let endpoint: Endpoint;
  if (target === 'local') {
    endpoint = localEndpoint();
  } else {
    const t = parseSshTarget(target);
    if (t.port !== undefined && o.port !== undefined) throw new UsageError('give the port once: in --to or with --port');
    const c: SshConnectOptions = { host: t.host, username: t.username ?? 'root' };
    const port = o.port ?? t.port;
    if (port !== undefined) c.port = port;
    if (o.identity) c.privateKeyPath = o.identity;
    if (o.knownHosts) c.knownHostsFiles = [o.knownHosts];
    if (o.fingerprint) c.fingerprint = o.fingerprint;
    endpoint = sshEndpoint(await sshConnect(c), o.godwitPath);
  }
  const ac = new AbortController();
  const onSig = () => ac.abort();
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  try {
    return await sendImageDir(endpoint, o.dir, dir, { signal: ac.signal, ...(onProgress ? { onProgress } : {}) });
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    endpoint.close();
  }
}

export function register(program: Command): void {
  program
    .command('send')
    .description('stream an image directory to another host over SSH (runs `godwit receive` there)')
    .argument('<dir>', 'image directory to send')
    .requiredOption('--to <[user@]host:dir>', 'destination: SSH target and a new (or empty) directory there; local:DIR for this host')
    .option('--port <n>', 'SSH port (default 22)')
    .option('--identity <key>', 'private key file (default: ssh-agent, then ~/.ssh/id_*)')
    .option('--known-hosts <file>', 'known_hosts file to verify the host key against (default ~/.ssh/known_hosts)')
    .option('--fingerprint <SHA256:...>', 'pin the host key instead of known_hosts')
    .option('--godwit-path <cmd>', 'how to start godwit on the target (default: godwit on its PATH)')
    .option('--json', 'print the result as JSON')
    .action(async (dir: string, opts: { to: string; port?: string; identity?: string; knownHosts?: string; fingerprint?: string; godwitPath?: string; json?: boolean }) => {
      const o: SendCliOptions = { dir, to: opts.to };
      if (opts.port !== undefined) {
        const p = Number(opts.port);
        if (!Number.isInteger(p) || p < 1 || p > 65535) throw new UsageError(`--port ${opts.port}: not a TCP port (1-65535)`);
        o.port = p;
      }
      if (opts.identity) o.identity = opts.identity;
      if (opts.knownHosts) o.knownHosts = opts.knownHosts;
      if (opts.fingerprint) {
        if (!/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(opts.fingerprint)) throw new UsageError(`--fingerprint ${opts.fingerprint}: expected SHA256:... as ssh-keygen -lf prints it`);
        o.fingerprint = opts.fingerprint;
      }
      if (opts.godwitPath) o.godwitPath = opts.godwitPath;
      if (opts.json) o.json = true;
      const r = await runSend(o);
      if (o.json) printJson(r);
      else {
        const mb = (n: number) => (n / 1e6).toFixed(1);
        process.stdout.write(`sent ${r.files} files, ${mb(r.rawBytes)} MB (${mb(r.wireBytes)} MB on the wire) in ${r.seconds.toFixed(2)} s, ` +
          `${mb(r.rawBytes / r.seconds)} MB/s\n`);
      }
    });
}
