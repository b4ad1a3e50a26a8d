/**
 * An Endpoint over SSH: `godwit ARGS` run through an exec channel of an ssh2 connection (transport/ssh.ts), its
 * stdin/stdout carrying the image stream. The remote command line is built with shell quoting, since sshd hands
 * it to the user's shell.
 */
import { UsageError } from '../util/errors';
import { Endpoint, localEndpoint } from './endpoint';
import { parseSshTarget, sshConnect, SshConnection, SshConnectOptions } from './ssh';
import type { Channel } from './wire';

/** How to reach godwit on a target: what `godwit send` and `godwit migrate` both take. */
export interface TargetOptions {
  /** SSH port (default 22; or given in the target as host:port, not both). */
  port?: number;
  /** SSH private key (default: ssh-agent, then ~/.ssh/id_*). */
  identity?: string;
  knownHosts?: string;
  /** Pinned host key, SHA256:... */
  fingerprint?: string;
  /** How godwit is started on the target (default `godwit` on its PATH). */
  godwitPath?: string;
}

/** Connection timing a caller may set (migrate's timeouts). */
export type SshTiming = Pick<SshConnectOptions, 'connectTimeoutMs' | 'keepaliveIntervalMs' | 'keepaliveCountMax'>;

/**
 * Connect to `target`: "[user@]host[:port]" over SSH (user root by default), or "local" (godwit as a child process
 * of this one, no SSH). `ssh` adds connection timing (connect timeout, keepalive).
 */
export async function connectTarget(target: string, o: TargetOptions, ssh: SshTiming = {}): Promise<Endpoint> {
  if (target === 'local') return localEndpoint();
  const t = parseSshTarget(target);
  if (t.port !== undefined && o.port !== undefined) throw new UsageError('give the port once: in --to or with --port');
  const c: SshConnectOptions = { host: t.host, username: t.username ?? 'root', ...ssh };
  const port = o.port ?? t.port;
  if (port !== undefined) c.port = port;
  if (o.identity) c.privateKeyPath = o.identity;
  if (o.knownHosts) c.knownHostsFiles = [o.knownHosts];
  if (o.fingerprint) c.fingerprint = o.fingerprint;
  return sshEndpoint(await sshConnect(c), o.godwitPath);
}

/** Quote one word for a POSIX shell. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_\/.,:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * `godwitCommand` is how godwit is started on the target: "godwit" (on PATH) by default, or e.g.
 * "/opt/godwit/bin/godwit" or "node /srv/godwit/dist/cli/main.js" (split on spaces, each word quoted).
 */
export function sshEndpoint(conn: SshConnection, godwitCommand = 'godwit'): Endpoint {
  const label = `${conn.username}@${conn.host}`;
  return {
    label,
    async run(args: string[]): Promise<Channel> {
      const command = [...godwitCommand.split(/\s+/).filter(Boolean), ...args].map(shellQuote).join(' ');
      const s = await conn.execStream(command, { stderr: 'pipe' });
      // Drain stderr always (an unread stderr stalls the channel once its window is full).
      s.stderr.resume();
      return {
        label,
        toPeer: s.channel,
        fromPeer: s.channel,
        stderr: s.stderr,
        exited: s.done.then(
          (st) => ({ code: st.code, signal: st.signal ?? null }),
          () => ({ code: null, signal: 'connection lost' }),
        ),
        close() {
          s.channel.close();
        },
      };
    },
    close() {
      void conn.close();
    },
  };
}
