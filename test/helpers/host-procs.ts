/**
 * /proc readings shared by the migration tests: which processes a test host holds (its leftovers), and the state
 * of a source's threads. Each read tolerates a process that ends meanwhile.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Host } from '../../scenarios/hosts';

/** The file's text, or '' when it (or its process) is gone. */
export function safeRead(f: string): string {
  try {
    return fs.readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}

export function nsInode(pid: number | string, kind: string): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return undefined;
  }
}

export const ppidOf = (pid: number): number => Number(/^PPid:\s+(\d+)/m.exec(safeRead(`/proc/${pid}/status`))?.[1] ?? 0);

export function childrenOf(pid: number): number[] {
  return safeRead(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter(Boolean).map(Number);
}

/**
 * Processes of host other than its init and sshd's listener, as "PID cmdline": those in its PID namespace, and
 * those in namespaces nested in it (a restorer with --new-pidns and its tree), found through their parents.
 */
export function processesIn(host: Host): string[] {
  const hostNs = nsInode(host.initPid, 'pid');
  const self = nsInode('self', 'pid');
  const out: string[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === host.initPid || pid === host.ssh?.pid) continue;
    if (/^State:\s+Z/m.test(safeRead(`/proc/${pid}/status`))) continue;
    let inside = false;
    for (let i = 0, p = pid; i < 8 && p > 1; i++, p = ppidOf(p)) {
      const ns = nsInode(p, 'pid');
      if (ns === hostNs) {
        inside = true;
        break;
      }
      if (ns === undefined || ns === self) break;
    }
    if (inside) out.push(`${pid} ${safeRead(`/proc/${pid}/cmdline`).split('\0').join(' ').trim()}`);
  }
  return out;
}

/** /proc state letter of every thread of pid ([] once it is gone). */
export function threadStates(pid: number): string[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
      const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    });
  } catch {
    return [];
  }
}

/**
 * Kills the first `godwit-restorer` that the process `receiver` starts, from a bash loop of its own at high priority
 * that polls without forking: the test's event loop, busy with the migration's events, can be late by more than a
 * whole restore on a loaded machine, and a restorer found only once it has resumed the tree tests nothing. `killed`
 * resolves with "PID argv..." of what it killed, or undefined if the receiver ended first (or stop() was called);
 * `killedAt` with when (ms since the epoch, the killer's own clock reading).
 */
export function killFirstRestorer(receiver: number): { killed: Promise<string | undefined>; killedAt: Promise<number | undefined>; stop(): void } {
  const script = `r=$1
while [ -d /proc/$r ]; do
  kids=
  read -r kids < /proc/$r/task/$r/children
  for c in $kids; do
    argv0=
    IFS= read -r -d '' argv0 < /proc/$c/cmdline
    case $argv0 in *godwit-restorer) kill -9 $c && echo "$EPOCHREALTIME $c $argv0"; exit 0;; esac
  done
done`;
  const child = spawn('nice', ['-n', '-15', 'bash', '-c', script, 'kill-restorer', String(receiver)], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  const line = new Promise<string>((resolve) => child.on('close', () => resolve(out.trim())));
  const killed = line.then((l) => l.slice(l.indexOf(' ') + 1) || undefined);
  return {
    killed,
    killedAt: line.then((l) => (l ? Number(l.split(' ')[0]) * 1000 : undefined)),
    stop: () => {
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
    },
  };
}

/**
 * killFirstRestorer for the `godwit receive` that host runs (found within 2 s): start it as the migration starts
 * streaming, so that it is already polling when a fast restore begins. `killed` is undefined if no receiver was found.
 */
export function killFirstRestorerOn(host: Host): { killed: Promise<string | undefined>; killedAt: Promise<number | undefined>; stop(): void } {
  let watch: ReturnType<typeof killFirstRestorer> | undefined;
  let stopped = false;
  const found = (async () => {
    for (let i = 0; i < 400 && !stopped; i++) {
      const receiver = Number(processesIn(host).find((p) => p.includes(' receive --dir '))?.split(' ')[0] ?? 0);
      if (receiver) {
        watch = killFirstRestorer(receiver);
        if (stopped) watch.stop();
        return watch;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return undefined;
  })();
  return {
    killed: found.then((w) => w?.killed),
    killedAt: found.then((w) => w?.killedAt),
    stop: () => {
      stopped = true;
      watch?.stop();
    },
  };
}
