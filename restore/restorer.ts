/**
 * Client of native/build/godwit-restorer: spawns it (optionally as PID 1 of a new PID namespace), frames
 * requests on the control socket (fd 3) and turns its errors into SysError. Page data never passes through here:
 * the restorer reads the pages file itself (LOAD_PAGES). The wire format is described in native/src/restore/rst.h.
 */
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { GodwitError, SysError } from '../util/errors';

export enum Op {
  HELLO = 1,
  TREE = 2,
  TRAMPOLINE = 3,
  SYSCALLS = 4,
  OPEN = 6,
  PIPE = 7,
  WRITE_FD = 8,
  CLOSE = 9,
  SETREGS = 10,
  PRLIMIT = 11,
  RESUME = 12,
  WAIT = 13,
  KILL = 14,
  SOCKETPAIR = 15,
  XSTATE_INFO = 16,
  FCNTL = 17,
  SYSCALL_AT = 18,
  FIND_SYSCALL = 19,
  UFFD = 20,
  HOST_PIDS = 21,
  LOCAL = 22,
  LOAD_PAGES = 23,
  CONTAINER = 24,
}

const HDR = 4 + 4 + 4 + 24;

export function restorerPath(): string {
  // dist/restore/restorer.js -> repo root is two levels up; running from source (ts-node) is one level less.
  const candidates = [
    path.resolve(__dirname, '..', '..', 'native', 'build', 'godwit-restorer'),
    path.resolve(__dirname, '..', 'native', 'build', 'godwit-restorer'),
  ];
  for (const c of candidates) if (fs.existsSync(c)) return c;
  throw new GodwitError(`godwit-restorer not found (looked in ${candidates.join(', ')}): run \`make -C native\``, {
    code: 'ENOENT',
  });
}

export interface Reply {
  payload: Buffer;
}

/** What a failed request tells: errno, the syscall (or step) and the pid it concerned. */
export class RestorerError extends SysError {}

export class Restorer {
  private proc: ChildProcess;
  private sock: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiters: { resolve: (b: Buffer) => void; reject: (e: Error) => void; what: string }[] = [];
  private closed: Error | null = null;
  private stderr = '';
  readonly exited: Promise<number>;
  /** PID of the restorer process itself (outside any namespace it made). */
  readonly pid: number;

  private constructor(proc: ChildProcess) {
    this.proc = proc;
    this.pid = proc.pid!;
    this.sock = proc.stdio[3] as net.Socket;
    this.sock.on('data', (d: Buffer) => this.onData(d));
    const fail = (e: Error) => {
      if (!this.closed) this.closed = e;
      for (const w of this.waiters.splice(0)) w.reject(e);
    };
    this.sock.on('error', fail);
    this.sock.on('close', () => fail(new GodwitError(`godwit-restorer closed its control channel${this.stderrNote()}`)));
    proc.stderr?.on('data', (d: Buffer) => {
      if (this.stderr.length < 4096) this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve(code ?? 128 + (sig ? 9 : 0))));
  }

  private stderrNote(): string {
    const s = this.stderr.trim();
    return s ? `: ${s}` : '';
  }

  /** `detached`: its own session, so a restore that outlives us is not in our process group. */
  static start(opts: { newPidns?: boolean; detached?: boolean; extraArgs?: string[] } = {}): Restorer {
    const args = [...(opts.newPidns ? ['--new-pidns'] : []), ...(opts.extraArgs ?? [])];
    const proc = spawn(restorerPath(), args, {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      detached: !!opts.detached,
    });
    return new Restorer(proc);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32LE(0);
      if (this.buf.length < 4 + len) break;
      const msg = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      const w = this.waiters.shift();
      if (!w) continue;
      const errno = msg.readInt32LE(0);
      const pid = msg.readInt32LE(4);
      const sc = msg.subarray(8, 32);
      const syscall = sc.subarray(0, sc.indexOf(0) >= 0 ? sc.indexOf(0) : 24).toString();
      const payload = Buffer.from(msg.subarray(HDR - 4));
      if (errno) {
        const e = new RestorerError({ errno, syscall, pid: pid || undefined, what: w.what });
        (e as RestorerError & { payload?: Buffer }).payload = payload;
        w.reject(e);
      } else w.resolve(payload);
    }
  }

  /** One request; `what` names the step for the error message. */
  request(op: Op, payload: Buffer, what: string): Promise<Buffer> {
    if (this.closed) return Promise.reject(this.closed);
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE(payload.length + 4, 0);
    hdr.writeUInt32LE(op, 4);
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject, what });
      this.sock.write(Buffer.concat([hdr, payload]));
    });
  }

  async hello(): Promise<{ self: number; insn: bigint }> {
    const b = await this.request(Op.HELLO, Buffer.alloc(0), 'hello');
    return { self: b.readInt32LE(0), insn: b.readBigUInt64LE(4) };
  }

  /** Closes the control channel: before RESUME the restorer then kills and reaps everything it made. */
  async close(): Promise<number> {
    this.sock.end();
    (this.proc.stdio[4] as net.Socket | null)?.end();
    return this.exited;
  }

  /** Last resort: kill the restorer (its tracees die with it: PTRACE_O_EXITKILL / PDEATHSIG). */
  kill(): void {
    try {
      this.proc.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }

  /** Ends the control channel after resume without waiting: the restorer lives on as the namespace's init. */
  detach(): void {
    this.sock.end();
    (this.proc.stdio[4] as net.Socket | null)?.end();
    this.unref();
  }

  /** Waits for a detached restorer to exit (keeps node alive until then). */
  waitExit(): Promise<number> {
    this.proc.ref();
    return this.exited;
  }

  /** Lets node exit while a detached restorer keeps running as the namespace's init. */
  unref(): void {
    this.sock.unref();
    (this.proc.stdio[4] as net.Socket | null)?.unref?.();
    this.proc.stderr?.destroy();
    this.proc.unref();
  }
}
