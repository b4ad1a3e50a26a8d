/**
 * The SSH flags `godwit send` and `godwit migrate` share (--port, --identity, --known-hosts, --fingerprint,
 * --godwit-path): declared once, checked once, turned into transport's TargetOptions.
 */
import type { Command } from 'commander';
import type { TargetOptions } from '../transport/ssh-endpoint';
import { UsageError } from '../util/errors';

export interface SshFlags {
  port?: string;
  identity?: string;
  knownHosts?: string;
  fingerprint?: string;
  godwitPath?: string;
}

export function addSshFlags(cmd: Command): Command {
  return cmd
    .option('--port <n>', 'SSH port (default 22)')
    .option('--identity <key>', 'private key file (default: ssh-agent, then ~/.ssh/id_*)')
    .option('--known-hosts <file>', 'known_hosts file to verify the host key against (default ~/.ssh/known_hosts)')
    .option('--fingerprint <SHA256:...>', 'pin the host key instead of known_hosts')
    .option('--godwit-path <cmd>', 'how to start godwit on the target (default: godwit on its PATH)');
}

export function targetOptions(f: SshFlags): TargetOptions {
  const o: TargetOptions = {};
  if (f.port !== undefined) {
    const p = Number(f.port);
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new UsageError(`--port ${f.port}: not a TCP port (1-65535)`);
    o.port = p;
  }
  if (f.identity) o.identity = f.identity;
  if (f.knownHosts) o.knownHosts = f.knownHosts;
  if (f.fingerprint) {
    if (!/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(f.fingerprint)) throw new UsageError(`--fingerprint ${f.fingerprint}: expected SHA256:... as ssh-keygen -lf prints it`);
    o.fingerprint = f.fingerprint;
  }
  if (f.godwitPath) o.godwitPath = f.godwitPath;
  return o;
}
