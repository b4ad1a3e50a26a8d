/**
 * Runs a godwit command (or a test fixture) inside a test host's network namespace and collects its --json event
 * stream, for the migration tests. The child dies with the test (parent-death signal) and is tracked in `live`
 * so that an afterEach can kill what a failed test left running.
 */
import { ChildProcess, spawn } from 'node:child_process';
import type { Host } from '../../scenarios/hosts';

export type RunEvent = Record<string, unknown>;

export interface Run {
  code: number | null;
  events: RunEvent[];
  stderr: string;
  /** The message of its {"event":"error"} line, if it printed one. */
  error?: string;
}

/** `onEvent` sees each JSON line of the child's stdout as it comes (a line that is not JSON as {event:'text'}). */
export function runInHost(host: Host, argv: string[], live: Set<ChildProcess>,
  onEvent?: (e: RunEvent, child: ChildProcess) => void): Promise<Run> {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'nsenter', `--net=${host.nsPath('net')}`, ...argv],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const events: RunEvent[] = [];
  let stderr = '';
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      let e: RunEvent;
      try {
        e = JSON.parse(line) as RunEvent;
      } catch {
        e = { event: 'text', line };
      }
      events.push(e);
      onEvent?.(e, child);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => {
    live.delete(child);
    if (process.env.GODWIT_TEST_DEBUG) process.stderr.write(`${argv.join(' ')}\n=> ${code}\n${events.map((e) => JSON.stringify(e)).join('\n')}\n${stderr}\n`);
    const err = events.find((e) => e.event === 'error');
    resolve({ code, events, stderr, ...(err ? { error: String(err.message) } : {}) });
  }));
}
