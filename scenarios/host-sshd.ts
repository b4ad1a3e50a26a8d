/**
 * OpenSSH's sshd for a test host: keys, configuration, start, readiness.
 *
 * Debian's sshd runs directly (`/usr/sbin/sshd -D -e -f CONFIG`; the service is not used). Everything it needs
 * is in the host's private directory (mode 0700): its ed25519 host key, the authorized client key, the config and
 * its pid file. Privilege separation wants /run/sshd: the host's init mounts a private tmpfs on /run and creates
 * it (hosts.ts). The key files live under /tmp, whose mode (1777) sshd's StrictModes would reject, so
 * StrictModes is off; the directory itself is 0700 and root's.
 */
import { execFile } from 'node:child_process';
import { openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GodwitError } from '../util/errors';
import { fingerprintSha256, knownHostsLine, parsePublicKeyLine } from '../transport/known-hosts';
import { HostProcess, type NamespaceTarget } from './host-process';

const execFileP = promisify(execFile);

export const SSHD_PATH = '/usr/sbin/sshd';
export const SSH_PORT = 22;

export interface KeyPair {
  privateKeyPath: string;
  /** `ssh-ed25519 AAAA... comment` */
  publicKey: string;
  fingerprint: string;
}

/** ssh-keygen an ed25519 key without passphrase. */
export async function generateKey(path: string, comment: string): Promise<KeyPair> {
  try {
    await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path]);
  } catch (err) {
    throw new GodwitError(`ssh-keygen could not create ${path} (is openssh-client installed? scripts/setup.sh)`, { cause: err });
  }
  const publicKey = readFileSync(`${path}.pub`, 'utf8').trim();
  const parsed = parsePublicKeyLine(publicKey);
  if (!parsed) throw new GodwitError(`${path}.pub: ssh-keygen wrote an unreadable public key`);
  return { privateKeyPath: path, publicKey, fingerprint: fingerprintSha256(parsed.key) };
}

export interface SshdEndpoint {
  address: string;
  port: number;
  /** Host public key line, `ssh-ed25519 AAAA...`. */
  hostPublicKey: string;
  /** SHA256 fingerprint of the host key, for pinning. */
  hostKeyFingerprint: string;
  /** known_hosts line for this host's address and port. */
  knownHostsLine: string;
  /** sshd's pid in the root PID namespace. */
  pid: number;
  /** sshd's log (stderr, -e). */
  logPath: string;
  configPath: string;
}

export interface RunningSshd {
  endpoint: SshdEndpoint;
  process: HostProcess;
}

function sshdConfig(dir: string, address: string): string {
  return [
    '# Written by godwit\'s test bed (scenarios/host-sshd.ts) for one test host.',
    `ListenAddress ${address}:${SSH_PORT}`,
    `HostKey ${join(dir, 'ssh_host_ed25519_key')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    // /tmp is mode 1777, which StrictModes refuses on the path to authorized_keys; our directory is 0700.
    'StrictModes no',
    'UseDNS no',
    'PrintMotd no',
    'PrintLastLog no',
    'X11Forwarding no',
    'AllowTcpForwarding no',
    'PermitTunnel no',
    // Tests open many connections at once (parallel migrations, fault injection): do not throttle them.
    'MaxStartups 100',
    'MaxSessions 100',
    'LoginGraceTime 30',
    'Subsystem sftp internal-sftp',
    'LogLevel INFO',
    '',
  ].join('\n');
}

const READY_POLL_MS = 10;

/** Generate the host key and config in `dir`, start sshd inside `host`, wait until it listens. */
export async function startSshd(
  host: NamespaceTarget & { address: string },
  dir: string,
  authorizedKeys: string,
  timeoutMs: number,
): Promise<RunningSshd> {
  const hostKey = await generateKey(join(dir, 'ssh_host_ed25519_key'), `godwit-bed-host-${host.name}`);
  writeFileSync(join(dir, 'authorized_keys'), authorizedKeys.endsWith('\n') ? authorizedKeys : authorizedKeys + '\n', { mode: 0o600 });
  const configPath = join(dir, 'sshd_config');
  writeFileSync(configPath, sshdConfig(dir, host.address), { mode: 0o600 });
  const logPath = join(dir, 'sshd.log');
  // A file, not a pipe: sshd must never block on a log nobody reads.
  const logFd = openSync(logPath, 'a', 0o600);
  let proc: HostProcess;
  try {
    proc = new HostProcess(host, SSHD_PATH, ['-D', '-e', '-f', configPath], { stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  proc.child.unref();
  const log = (): string => {
    try {
      return readFileSync(logPath, 'utf8').trim().slice(-2000);
    } catch {
      return '';
    }
  };
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (proc.exitStatus !== undefined) {
        throw new GodwitError(`sshd on host ${host.name} exited (${JSON.stringify(proc.exitStatus)}) before listening:\n${log()}`);
      }
      if (log().includes(`Server listening on ${host.address} port ${SSH_PORT}`)) break;
      if (Date.now() > deadline) {
        throw new GodwitError(`sshd on host ${host.name} did not listen on ${host.address}:${SSH_PORT} within ${timeoutMs} ms:\n${log()}`);
      }
      await new Promise((r) => setTimeout(r, READY_POLL_MS));
    }
    const pid = await proc.pid();
    if (pid === undefined) throw new GodwitError(`sshd on host ${host.name} is gone right after starting:\n${log()}`);
    const parsed = parsePublicKeyLine(hostKey.publicKey)!;
    return {
      process: proc,
      endpoint: {
        address: host.address,
        port: SSH_PORT,
        hostPublicKey: `${parsed.keyType} ${parsed.key.toString('base64')}`,
        hostKeyFingerprint: hostKey.fingerprint,
        knownHostsLine: knownHostsLine(host.address, SSH_PORT, parsed.keyType, parsed.key),
        pid,
        logPath,
        configPath,
      },
    };
  } catch (err) {
    await proc.stop('SIGKILL', 1000);
    throw err;
  }
}
