/**
 * An Endpoint over SSH: `godwit ARGS` run through an exec channel of an ssh2 connection (transport/ssh.ts), its
 * stdin/stdout carrying the image stream. The remote command line is built with shell quoting, since sshd hands
 * it to the user's shell.
 */
import type { Endpoint } from './endpoint';
import type { SshConnection } from './ssh';
import type { Channel } from './wire';

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
