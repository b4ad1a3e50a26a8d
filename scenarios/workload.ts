/**
 * The test harness side of the scenario protocol (scenarios/workloads/zdtm.h): start a workload, wait until it is
 * ready, ask it to verify itself, read its verdict, kill it, clean up.
 *
 * A workload must keep working across checkpoint + kill + restore, after which it is no longer our child. So the
 * only links are files in its state directory (ready, go, result, log) and signals, and processes are found by pid
 * and recognised by their command line (it holds the unique state directory), never by being our child.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { GodwitError } from '../util/errors';

export const WORKLOAD_NAMES = [
  'mem-counter',
  'threads',
  'pipe-tree',
  'signals',
  'timers',
  'files',
  'unix-sockets',
  'eventfd-epoll',
  'shared-mem',
  'inet-tcp',
  'inet-udp',
  'shmem-more',
  'seccomp',
  'pty',
  'file-locks',
  'proc-state',
  'maps',
  'fown',
  'sessions',
  'unix-pending',
  'stopped',
  'unix-odd',
  'cow',
  'fd-sharing',
  'ghosts',
  'sockopts',
  'dead-leader',
  'fs-places',
  'unix-more',
  'aio',
  'inet-halfclosed',
  'unix-ext',
  'ghostmap',
  'inotify-feed',
  'inet-peer',
] as const;
export type WorkloadName = (typeof WORKLOAD_NAMES)[number];

/** Workloads that need a peer outside the tree (inet-peer: an echo server's --port), started only by their tests. */
export const NEEDS_PEER: readonly WorkloadName[] = ['inet-peer'];

export interface StartOptions {
  /** Extra workload options, e.g. ['--mib', '256']. */
  args?: string[];
  /** How long setup may take before ready (a 1 GiB mem-counter needs a few seconds). Default 30 s. */
  readyTimeoutMs?: number;
  /** Parent directory of the state directory. Default os.tmpdir(). */
  tmpRoot?: string;
  /**
   * A command that execs the workload in place, e.g. ['nsenter', '--net=/proc/N/ns/net'] to run it in a test host's
   * network namespace (it must not fork: the spawned pid is taken as the workload's).
   */
  prefix?: string[];
}

export interface VerifyResult {
  pass: boolean;
  /** "PASS" or "FAIL: what differed, where; ..." as the workload wrote it, or why there is no verdict. */
  detail: string;
}

const POLL_MS = 10;
const DEFAULT_READY_MS = 30_000;
/** Verification of the largest workload (1 GiB compared byte by byte) takes about a second; leave room. */
const DEFAULT_VERIFY_MS = 60_000;
/** A SIGKILLed process is gone within milliseconds unless it is in uninterruptible sleep. */
const KILL_WAIT_MS = 5_000;
const LOG_TAIL = 4000;

/** Repository root: the nearest ancestor of this file holding scenarios/Makefile (works from dist/ and src). */
export function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'scenarios', 'Makefile'))) return dir;
    if (path.dirname(dir) === dir) throw new GodwitError(`cannot find the godwit repository above ${__dirname}`);
  }
}

/** Path of a built scenario program (a workload, `subreaper` or `tamper`). */
export function scenarioBinary(name: string): string {
  const bin = path.join(repoRoot(), 'scenarios', 'build', name);
  if (!fs.existsSync(bin)) {
    throw new GodwitError(`scenario program ${bin} is not built: run \`make -C scenarios\` (or npm install)`, {
      code: 'ENOENT',
    });
  }
  return bin;
}

/** The subreaper wrapper: `subreaper CMD ARGS...`. */
export function subreaperPath(): string {
  return scenarioBinary('subreaper');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for P or MS milliseconds, whichever comes first, leaving no timer behind. */
async function waitAtMost(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Is PID a live process started with `--state DIR`? (A zombie has an empty cmdline: not live.) */
export function isWorkloadProcess(pid: number, dir: string): boolean {
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return false;
  }
  const argv = cmdline.split('\0');
  const i = argv.indexOf('--state');
  return i >= 0 && argv[i + 1] === dir;
}

/**
 * Every live process started with `--state DIR` (the directory is unique per workload, so these are ours): finds
 * children a workload forked before it could list them, e.g. when its setup failed half-way.
 */
export function findWorkloadPids(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    const pid = Number(entry);
    if (Number.isInteger(pid) && pid > 0 && isWorkloadProcess(pid, dir)) pids.push(pid);
  }
  return pids;
}

function killPids(pids: number[], dir: string): void {
  for (const pid of pids) {
    if (!isWorkloadProcess(pid, dir)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
}

export interface ReadyFile {
  pids: number[];
  verifySignal: number;
  info: Record<string, string>;
}

export function parseReady(text: string, file: string): ReadyFile {
  const info: Record<string, string> = {};
  let pids: number[] | undefined;
  let verifySignal: number | undefined;
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sp = line.indexOf(' ');
    const key = sp < 0 ? line : line.slice(0, sp);
    const value = sp < 0 ? '' : line.slice(sp + 1);
    if (key === 'pids') pids = value.split(' ').map(Number);
    else if (key === 'verify-signal') verifySignal = Number(value);
    else info[key] = value;
  }
  if (!pids || pids.length === 0 || pids.some((p) => !Number.isInteger(p) || p <= 0) || verifySignal === undefined) {
    throw new GodwitError(`${file}: malformed ready file (needs "pids P..." and "verify-signal N"): ${text}`);
  }
  return { pids, verifySignal, info };
}

/** Workloads not yet cleaned up: killed on process exit so that a crashed test run leaves nothing behind. */
const live = new Set<Workload>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const w of live) w.killNowSync();
  });
}

export class Workload {
  readonly name: string;
  /** The state directory (absolute, no symlinks): ready, go, result, log and the workload's own files. */
  readonly dir: string;
  readonly verifySignal: number;
  /** Extra lines of the ready file: addresses, fd numbers, ... (see each workload's zt_info calls). */
  readonly info: Record<string, string>;
  private pidList: number[];
  private child: ChildProcess | undefined;
  private childExit: Promise<void>;
  private cleaned = false;

  /** @internal use startWorkload() */
  constructor(name: string, dir: string, ready: ReadyFile, child: ChildProcess | undefined, childExit: Promise<void>) {
    this.name = name;
    this.dir = dir;
    this.pidList = ready.pids;
    this.verifySignal = ready.verifySignal;
    this.info = ready.info;
    this.child = child;
    this.childExit = childExit;
  }

  /** The process that receives the verify request (the tree's root). */
  get pid(): number {
    return this.pidList[0]!;
  }

  /** Every process of the workload, root first (as the host sees them). */
  get pids(): number[] {
    return [...this.pidList];
  }

  /** Thread ids where the workload reports them (`tids` line), else just the pid. */
  get tids(): number[] {
    return this.info.tids ? this.info.tids.split(' ').map(Number) : [this.pid];
  }

  /**
   * After a restore into a new PID namespace the host sees other pids: give them here (same order as `pids`).
   */
  setPids(pids: number[]): void {
    if (pids.length !== this.pidList.length) {
      throw new GodwitError(`${this.name}: setPids got ${pids.length} pids for a workload of ${this.pidList.length}`);
    }
    this.pidList = [...pids];
  }

  /** Pids that are still live processes of this workload. */
  alivePids(): number[] {
    return this.pidList.filter((p) => isWorkloadProcess(p, this.dir));
  }

  /** The end of the workload's log (its stdout and stderr). */
  log(): string {
    const text = readIfExists(path.join(this.dir, 'log')) ?? '';
    return text.length > LOG_TAIL ? '...' + text.slice(-LOG_TAIL) : text;
  }

  /**
   * Asks the workload to check its whole state and waits for its verdict (DIR/result). The workload exits after
   * writing it. Throws if no verdict comes within the timeout; a workload that died without one gives pass=false.
   */
  async verify(opts: { timeoutMs?: number } = {}): Promise<VerifyResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_VERIFY_MS;
    const resultFile = path.join(this.dir, 'result');
    const goTmp = path.join(this.dir, '.go.tmp');
    fs.writeFileSync(goTmp, 'verify\n');
    fs.renameSync(goTmp, path.join(this.dir, 'go'));
    if (this.verifySignal > 0 && isWorkloadProcess(this.pid, this.dir)) {
      try {
        process.kill(this.pid, this.verifySignal);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = readIfExists(resultFile);
      if (text !== undefined) {
        const detail = text.trim();
        await this.waitGone(this.pidList, KILL_WAIT_MS).catch(() => undefined); // it exits right after writing
        return { pass: detail === 'PASS', detail };
      }
      if (!isWorkloadProcess(this.pid, this.dir)) {
        // It may have written the result just before exiting: look once more.
        const late = readIfExists(resultFile);
        if (late !== undefined) return { pass: late.trim() === 'PASS', detail: late.trim() };
        return { pass: false, detail: `no result: ${this.name} (pid ${this.pid}) is gone; log:\n${this.log()}` };
      }
      if (Date.now() > deadline) {
        throw new GodwitError(
          `${this.name} (pid ${this.pid}) gave no result within ${timeoutMs} ms of the verify request; log:\n${this.log()}`,
        );
      }
      await sleep(POLL_MS);
    }
  }

  /**
   * SIGKILLs every process of the workload that is still alive (children first, then any other process started
   * with this state directory) and waits until they are gone.
   */
  async kill(): Promise<void> {
    killPids([...this.pidList].reverse(), this.dir);
    const strays = findWorkloadPids(this.dir);
    killPids(strays, this.dir);
    await this.waitGone([...this.pidList, ...strays], KILL_WAIT_MS);
    if (this.child) {
      // Our own child (never restored): Node reaps it; wait for that so no zombie outlives the test.
      await waitAtMost(this.childExit, KILL_WAIT_MS);
    }
  }

  /** Kills what is left and removes the state directory. Safe to call more than once. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    live.delete(this);
    try {
      await this.kill();
    } finally {
      await fsp.rm(this.dir, { recursive: true, force: true });
    }
  }

  /** @internal last resort on process exit: no waiting possible there. */
  killNowSync(): void {
    try {
      killPids([...this.pidList, ...findWorkloadPids(this.dir)], this.dir);
    } catch {
      // nothing more can be done while exiting
    }
  }

  private async waitGone(pids: number[], ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      const left = pids.filter((p) => isWorkloadProcess(p, this.dir));
      if (left.length === 0) return;
      if (Date.now() > deadline) {
        throw new GodwitError(`${this.name}: pids ${left.join(' ')} still alive ${ms} ms after SIGKILL`);
      }
      await sleep(POLL_MS);
    }
  }
}

/**
 * Starts workload NAME with a fresh state directory and resolves once it is ready (DIR/ready written).
 * It runs in its own session (setsid): jest's or a shell's process-group signals cannot reach it by accident, and a
 * checkpoint of its tree holds its whole session. Its fds 0-2 are files in the state directory; it closes the rest.
 * On failure (exit before ready, timeout) everything is cleaned up and the error carries the workload's log.
 */
export async function startWorkload(name: WorkloadName, opts: StartOptions = {}): Promise<Workload> {
  if (!(WORKLOAD_NAMES as readonly string[]).includes(name)) {
    throw new GodwitError(`unknown workload '${name}': one of ${WORKLOAD_NAMES.join(', ')}`);
  }
  const bin = scenarioBinary(name);
  const root = opts.tmpRoot ?? os.tmpdir();
  const dir = fs.realpathSync(await fsp.mkdtemp(path.join(root, `godwit-${name}-`)));
  installExitHook();
  let child: ChildProcess | undefined;
  let exited: string | undefined;
  let spawnError: Error | undefined;
  const childExit = new Promise<void>((resolve) => {
    try {
      fs.writeFileSync(path.join(dir, 'stdin'), '');
      const stdinFd = fs.openSync(path.join(dir, 'stdin'), 'r');
      const logFd = fs.openSync(path.join(dir, 'log'), 'a');
      try {
        const argv = [...(opts.prefix ?? []), bin, '--state', dir, ...(opts.args ?? [])];
        child = spawn(argv[0]!, argv.slice(1), {
          detached: true,
          stdio: [stdinFd, logFd, logFd],
        });
      } finally {
        fs.closeSync(stdinFd);
        fs.closeSync(logFd);
      }
      child.on('error', (err) => {
        spawnError = err;
        resolve();
      });
      child.on('exit', (code, signal) => {
        exited = signal ? `was killed by ${signal}` : `exited with status ${code}`;
        resolve();
      });
      child.unref(); // a forgotten workload must not keep the test runner alive; the exit hook kills it
    } catch (err) {
      spawnError = err as Error;
      resolve();
    }
  });

  const readyFile = path.join(dir, 'ready');
  const timeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_MS;
  const deadline = Date.now() + timeoutMs;
  const fail = async (why: string): Promise<never> => {
    const log = readIfExists(path.join(dir, 'log')) ?? '';
    killPids([...(child?.pid !== undefined ? [child.pid] : []), ...findWorkloadPids(dir)], dir);
    if (child?.pid !== undefined) await waitAtMost(childExit, KILL_WAIT_MS);
    await fsp.rm(dir, { recursive: true, force: true });
    throw new GodwitError(`workload ${name} ${why}; log:\n${log.slice(-LOG_TAIL)}`, { cause: spawnError });
  };
  for (;;) {
    const text = readIfExists(readyFile);
    if (text !== undefined) {
      let ready: ReadyFile;
      try {
        ready = parseReady(text, readyFile);
      } catch (err) {
        return fail((err as Error).message);
      }
      const w = new Workload(name, dir, ready, child, childExit);
      live.add(w);
      return w;
    }
    if (spawnError) return fail(`could not be started: ${spawnError.message}`);
    if (exited !== undefined) return fail(`${exited} before it was ready`);
    if (Date.now() > deadline) return fail(`was not ready within ${timeoutMs} ms`);
    await sleep(POLL_MS);
  }
}
