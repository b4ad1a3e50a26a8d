/**
 * Running a command inside a test host's namespaces.
 *
 * A host is a set of namespaces held by a small init process (see hosts.ts). A command enters them with
 * util-linux `nsenter --target INIT --net --pid --mount --uts --ipc`. Entering a PID namespace only affects
 * children, so nsenter forks: the process we spawn is nsenter, the command is its child. nsenter passes the
 * child's exit status (or signal) on, but it does not forward signals, so `HostProcess.kill` signals the
 * command itself, found through /proc/NSENTER/task/NSENTER/children.
 *
 * By default the command runs under `setpriv --pdeathsig KILL`: if nsenter (and so the harness) dies, the
 * command dies with it instead of living on inside the host.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { GodwitError } from '../util/errors';

export interface HostSpawnOptions {
  env?: NodeJS.ProcessEnv;
  /** Working directory (the hosts share the machine's filesystem). Default: this process's cwd. */
  cwd?: string;
  /** Default ['pipe', 'pipe', 'pipe']. */
  stdio?: StdioOptions;
  /** SIGKILL the command when its nsenter parent dies (default true), so nothing outlives the harness. */
  dieWithHarness?: boolean;
}

export interface HostExecOptions extends Omit<HostSpawnOptions, 'stdio'> {
  /** Written to the command's stdin, which is then closed (stdin is empty otherwise). */
  input?: string | Buffer;
  /** Kill the command (SIGKILL) and fail after this long. Default 60 s. */
  timeoutMs?: number;
  /** Fail instead of buffering more than this much stdout or stderr. Default 64 MiB. */
  maxOutputBytes?: number;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Where a command runs: enough to describe it in errors and to enter its namespaces. */
export interface NamespaceTarget {
  /** Hostname, for messages. */
  name: string;
  /** PID (in the root PID namespace) of the process holding the host's namespaces. */
  initPid: number;
}

const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
const DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024;

export function nsenterArgv(target: NamespaceTarget, cmd: string, args: readonly string[], opts: HostSpawnOptions): string[] {
  const argv = [
    '--target', String(target.initPid),
    '--net', '--pid', '--mount', '--uts', '--ipc',
    `--wd=${opts.cwd ?? process.cwd()}`,
    '--',
  ];
  if (opts.dieWithHarness !== false) argv.push('setpriv', '--pdeathsig', 'KILL', '--');
  argv.push(cmd, ...args);
  return argv;
}

/** The children of `pid` (its main thread's), from /proc; empty if it has none or is gone. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Parent pid of `pid` from /proc/PID/stat, or undefined when it is gone. */
export function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields after it start past the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return undefined;
  }
}

/** A command running inside a host. */
export class HostProcess {
  readonly child: ChildProcess;
  readonly description: string;
  /** Resolves when the command has ended (nsenter reports the command's own status). */
  readonly exited: Promise<ExitStatus>;
  private innerPid: number | undefined;
  private status: ExitStatus | undefined;

  constructor(target: NamespaceTarget, cmd: string, args: readonly string[], opts: HostSpawnOptions = {}) {
    this.description = `${[cmd, ...args].join(' ').slice(0, 200)} on host ${target.name}`;
    // nsenter itself also dies with the harness, so no stray nsenter is left waiting on a dead parent.
    const wrap = opts.dieWithHarness !== false ? ['--pdeathsig', 'KILL', '--', 'nsenter'] : null;
    const argv = nsenterArgv(target, cmd, args, opts);
    this.child = spawn(wrap ? 'setpriv' : 'nsenter', wrap ? [...wrap, ...argv] : argv, {
      env: opts.env ?? process.env,
      stdio: opts.stdio ?? ['pipe', 'pipe', 'pipe'],
    });
    this.exited = new Promise((resolve, reject) => {
      this.child.once('error', (err) =>
        reject(new GodwitError(`cannot start ${this.description}: nsenter failed to spawn`, { cause: err })));
      this.child.once('exit', (code, signal) => {
        this.status = { code, signal };
        resolve(this.status);
      });
    });
    // A failed spawn is reported through `exited`; never let it become an unhandled rejection.
    this.exited.catch(() => undefined);
  }

  /** The nsenter process (in this PID namespace). */
  get nsenterPid(): number | undefined {
    return this.child.pid;
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  /**
   * PID of the command itself as seen from the root PID namespace: nsenter's only child. Undefined if the
   * command has already ended.
   */
  async pid(timeoutMs = 2000): Promise<number | undefined> {
    if (this.innerPid !== undefined) return this.innerPid;
    const outer = this.child.pid;
    if (outer === undefined) return undefined;
    const deadline = Date.now() + timeoutMs;
    while (this.status === undefined && Date.now() < deadline) {
      const kids = childPids(outer);
      if (kids.length > 0) {
        this.innerPid = kids[0];
        return this.innerPid;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    return undefined;
  }

  /**
   * Signal the command. Goes to the command itself (nsenter would not pass it on); falls back to nsenter,
   * whose death takes the command along when it runs with dieWithHarness.
   */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.status !== undefined) return;
    const outer = this.child.pid;
    const inner = this.innerPid ?? (outer !== undefined ? childPids(outer)[0] : undefined);
    // Check the parent link so that a recycled pid is never signalled.
    if (inner !== undefined && outer !== undefined && parentPid(inner) === outer) {
      this.innerPid = inner;
      try {
        process.kill(inner, signal);
        return;
      } catch {
        // Gone in between: nsenter is about to exit too.
      }
    }
    this.child.kill(signal === 'SIGKILL' ? 'SIGKILL' : signal);
  }

  /** Wait for the end; after `timeoutMs`, SIGKILL it and wait again. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 3000): Promise<ExitStatus> {
    if (this.status !== undefined) return this.status;
    if (this.child.pid === undefined) return this.exited.catch(() => ({ code: null, signal: null }));
    await this.pid(200);
    this.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false, () => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.kill('SIGKILL');
      this.child.kill('SIGKILL');
    }
    return this.exited.catch(() => ({ code: null, signal: null }));
  }
}

/** Run a command inside a host to completion and collect its output. */
export async function hostExec(
  target: NamespaceTarget,
  cmd: string,
  args: readonly string[] = [],
  opts: HostExecOptions = {},
): Promise<ExecResult> {
  const maxOutput = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  const proc = new HostProcess(target, cmd, args, { ...opts, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outLen = 0;
  let errLen = 0;
  let failure: GodwitError | undefined;
  const fail = (e: GodwitError): void => {
    if (failure === undefined) {
      failure = e;
      proc.kill('SIGKILL');
    }
  };
  proc.child.stdout!.on('data', (b: Buffer) => {
    outLen += b.length;
    if (outLen > maxOutput) fail(new GodwitError(`${proc.description}: stdout exceeds ${maxOutput} bytes`));
    else out.push(b);
  });
  proc.child.stderr!.on('data', (b: Buffer) => {
    errLen += b.length;
    if (errLen > maxOutput) fail(new GodwitError(`${proc.description}: stderr exceeds ${maxOutput} bytes`));
    else err.push(b);
  });
  // EPIPE when the command does not read its input is not our failure: its exit status tells.
  proc.child.stdin!.on('error', () => undefined);
  proc.child.stdin!.end(opts.input ?? '');
  const timer = setTimeout(
    () => fail(new GodwitError(`${proc.description}: timed out after ${timeoutMs} ms`, { code: 'ETIMEDOUT' })),
    timeoutMs,
  );
  try {
    const status = await proc.exited;
    // 'exit' may come before the pipes are drained: wait for both to close.
    await Promise.all([onceClosed(proc.child.stdout!), onceClosed(proc.child.stderr!)]);
    if (failure) throw failure;
    return { ...status, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
  } finally {
    clearTimeout(timer);
  }
}

function onceClosed(stream: NodeJS.ReadableStream & { closed?: boolean; readableEnded?: boolean }): Promise<void> {
  if (stream.closed || stream.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('close', () => resolve());
    stream.once('end', () => resolve());
  });
}
