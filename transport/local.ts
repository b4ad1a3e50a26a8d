/**
 * The local transport: the same protocol over a child process's stdio, no SSH. Used by tests and by
 * `migrate` on one host. The child is `godwit receive` (or any godwit command speaking the receiver side).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import type { Channel } from './wire';

/** The godwit CLI of this installation (dist/cli/main.js), run with this Node. */
export const GODWIT_CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

export interface LocalOptions {
  /** Arguments after `godwit` (default: receive --dir DIR). */
  args: string[];
  /** Replace the command entirely (tests: a missing or old godwit). */
  command?: string[];
  env?: NodeJS.ProcessEnv;
  label?: string;
}

export type LocalChannel = Channel & { pid: number; exited: Promise<{ code: number | null; signal: string | null }> };

const live = new Set<LocalChannel>();

/** Close every local peer still open (tests' afterEach; an operation's last-resort clean-up). */
export async function closeAllLocal(): Promise<void> {
  const all = [...live];
  for (const ch of all) ch.close();
  await Promise.all(all.map((ch) => ch.exited));
}

/** Spawn a local godwit peer and return the channel to it. close() ends its stdin and, if it lingers, kills it. */
export function spawnLocal(opts: LocalOptions): LocalChannel {
  const [cmd, ...args] = opts.command ?? [process.execPath, GODWIT_CLI, ...opts.args];
  const child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
  let exitState: { code: number | null; signal: string | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on('close', (code, signal) => resolve((exitState = { code, signal })));
    // A spawn failure (no such executable) shows up as an error and a close with code -2: report it as 127,
    // what a shell says for a missing command.
    child.on('error', () => undefined);
  });
  let closing = false;
  const ch: LocalChannel = {
    label: opts.label ?? `local receiver (pid ${child.pid})`,
    pid: child.pid ?? -1,
    toPeer: child.stdin!,
    fromPeer: child.stdout!,
    stderr: child.stderr!,
    exited: exited.then((e) => (e.code !== null && e.code < 0 ? { code: 127, signal: null } : e)),
    close() {
      if (closing) return;
      closing = true;
      child.stdin!.destroy();
      // The peer cleans up on EOF and exits; one that does not within 10 s is killed (we started it, by pid).
      const t = setTimeout(() => {
        if (!exitState && child.pid) process.kill(child.pid, 'SIGKILL');
      }, 10_000);
      t.unref();
      void exited.then(() => clearTimeout(t));
    },
  };
  live.add(ch);
  void exited.then(() => live.delete(ch));
  return ch;
}
