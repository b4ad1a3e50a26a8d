/**
 * The TypeScript client of godwit-helper (native/src): spawns one helper per operation and talks to it.
 *
 * - Control: fd 3 of the helper is one end of a unix stream socketpair (what child_process creates for a 'pipe'
 *   stdio entry): length-prefixed protobuf frames (native/helper.proto) both ways. Requests may be pipelined;
 *   the helper answers them in order.
 * - Bulk: page contents arrive on a pipe the helper creates; we open its read end through /proc/<pid>/fd and read
 *   it with fs.read in 1 MiB chunks (measured here: ~2x the throughput of a net.Socket on the same pipe). The
 *   stream is framed (16-byte header: magic, request id, length, flags) so that a request that fails half-way
 *   still ends with an END frame and no read is ever left waiting.
 * - Errors: every failure the helper reports becomes a SysError (errno, syscall, pid, detail). A helper that dies
 *   rejects everything pending with a GodwitError carrying its exit status and last stderr lines.
 * - close() ends the control channel; the helper then detaches every tracee (a task that was in group stop stays
 *   stopped) and exits. If it does not exit in time it is killed, and the kernel detaches the tracees.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import type { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { GodwitError, SysError } from '../util/errors';

/** Where the helper binary and its protocol live: native/build/godwit-helper, native/helper.proto (package root). */
const PACKAGE_ROOT = path.resolve(__dirname, '..', '..');
export const HELPER_PROTO = path.join(PACKAGE_ROOT, 'native', 'helper.proto');

export function helperPath(): string {
  return process.env.GODWIT_HELPER || path.join(PACKAGE_ROOT, 'native', 'build', 'godwit-helper');
}

let protoRoot: protobuf.Root | undefined;
function proto(): { Request: protobuf.Type; Response: protobuf.Type } {
  if (!protoRoot) protoRoot = protobuf.loadSync(HELPER_PROTO);
  return {
    Request: protoRoot.lookupType('godwit.helper.Request'),
    Response: protoRoot.lookupType('godwit.helper.Response'),
  };
}

// ---------------------------------------------------------------- types returned to callers

export type SeizeStatus = 'stopped' | 'group-stopped' | 'zombie' | 'vanished' | 'timeout' | 'already-seized';
const SEIZE_STATUS: Record<number, SeizeStatus> = {
  1: 'stopped',
  2: 'group-stopped',
  3: 'zombie',
  4: 'vanished',
  5: 'timeout',
  6: 'already-seized',
};

export interface SeizedThread {
  tid: number;
  status: SeizeStatus;
  tgid: number;
  /** For 'group-stopped': the job-control stop signal. */
  stopSignal: number;
  seccompSuspended: boolean;
  /** Signals that were being delivered as we seized, let through before the stop. */
  deliveredSignals: number[];
}

export interface XsaveComponent {
  index: number;
  offset: number;
  size: number;
}

export interface HelperInfo {
  version: number;
  pid: number;
  bulkPipeSize: number;
  pageSize: number;
  /** XCR0 of this CPU (which xsave features the kernel enables). */
  xcr0: bigint;
  xsaveSize: number;
  xsaveComponents: XsaveComponent[];
}

export type RestartKind = 'none' | 'syscall' | 'eintr';
const RESTART: Record<number, RestartKind> = { 0: 'none', 1: 'syscall', 2: 'eintr' };

export interface ThreadRegs {
  tid: number;
  /** struct user_regs_struct (216 bytes), syscall restart normalised as CRIU does (see `restart`). */
  regs: Buffer;
  /** The registers as read. */
  regsRaw: Buffer;
  restart: RestartKind;
  /** NT_X86_XSTATE as read (interpret with HelperInfo.xsaveComponents), or undefined when only fpregs exist. */
  xsave?: Buffer;
  /** NT_PRFPREG (512-byte fxsave area), only when the kernel has no xstate regset. */
  fpregs?: Buffer;
  sigmask: bigint;
  /** Raw siginfo_t, 128 bytes each, queued for this thread (decode with decodeSiginfo). */
  pending: Buffer[];
  rseq?: { abiPointer: bigint; abiSize: number; signature: number; flags: number };
  robustList: bigint;
  robustListLen: bigint;
  syscall: { op: number; nr: bigint; args: bigint[]; rval: bigint };
  /** GDT TLS entries 12..14 (struct user_desc, 16 bytes each). */
  tls: Buffer[];
  /** Seccomp filters (struct sock_filter[]), oldest first, and each one's SECCOMP_FILTER_FLAG_* bits. */
  seccompFilters: Buffer[];
  seccompFlags: bigint[];
}

export interface SigAction {
  sig: number;
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}

export interface Itimer {
  which: number;
  interval: { sec: bigint; usec: bigint };
  value: { sec: bigint; usec: bigint };
}

export interface PosixTimer {
  id: number;
  interval: { sec: bigint; nsec: bigint };
  value: { sec: bigint; nsec: bigint };
  overrun: number;
}

export interface ThreadInjected {
  tid: number;
  altstack: { sp: bigint; flags: number; size: bigint };
  clearTidAddress: bigint;
  pdeathsig: number;
}

export interface ProcessState {
  pid: number;
  sigactions: SigAction[];
  itimers: Itimer[];
  posixTimers: PosixTimer[];
  dumpable: number;
  childSubreaper: number;
  sharedPending: Buffer[];
  rlimits: { resource: number; cur: bigint; max: bigint }[];
  threads: ThreadInjected[];
  injectedSyscalls: number;
  elapsedNs: bigint;
  /** membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS) in the process; -1 where the kernel cannot tell. */
  membarrierRegistrations: number;
}

export interface PageRange {
  start: bigint;
  length: bigint;
}

export interface ReadPagesResult {
  bytes: bigint;
  viaProcMem: bigint;
  elapsedNs: bigint;
}

/** A written range found by trackScan: [start, end), page aligned. */
export interface WrittenRange {
  start: number;
  end: number;
}

export interface TrackScanResult {
  /** In address order, adjacent ranges merged. */
  written: WrittenRange[];
  pages: number;
  /** Indices of ranges that could not be scanned (their mapping changed): nothing is known about them. */
  failed: number[];
  elapsedNs: bigint;
}

export interface QueuedPacket {
  data: Buffer;
  addr: Buffer;
  passedFds: number;
}

export interface UnixSock {
  inode: bigint;
  type: number;
  state: number;
  peerInode: bigint;
  name: Buffer;
  pendingConnections: bigint[];
  rqlen: number;
  wqlen: number;
  shutdown: number;
  vfsDev: bigint;
  vfsIno: bigint;
}

/** What SockOpts does not show of a TCP or UDP socket (native/src/inet.c). */
export interface InetSock {
  /** TCP: tcp_info state (1 ESTABLISHED, 7 CLOSE, 10 LISTEN, ...); UDP: 1 connected, 7 not. */
  state: number;
  v6only: boolean;
  /** Listening TCP: listen()'s backlog and the connections not accepted yet. */
  backlog: number;
  acceptQueue: number;
  nodelay: boolean;
  cork: boolean;
  keepcnt: number;
  keepidle: number;
  keepintvl: number;
  freebind: boolean;
  boundDev: string;
}

/** The TCP_REPAIR state of one connection (TcpRepairDump). */
export interface TcpRepairState {
  /** TCP_QUEUE_SEQ: end of the send queue (write_seq) and of the receive queue (rcv_nxt). */
  sndSeq: number;
  rcvSeq: number;
  /** Send queue: sent-but-unacknowledged bytes, then `unsent` bytes not sent yet. */
  outq: Buffer;
  unsent: number;
  inq: Buffer;
  optMask: number;
  sndWscale: number;
  rcvWscale: number;
  mssClamp: number;
  timestamp?: number;
  window?: { sndWl1: number; sndWnd: number; maxWindow: number; rcvWnd: number; rcvWup: number };
}

export interface SockOpts {
  domain: number;
  type: number;
  protocol: number;
  sndbuf: number;
  rcvbuf: number;
  sndTimeoUsec: bigint;
  rcvTimeoUsec: bigint;
  reuseaddr: boolean;
  reuseport: boolean;
  passcred: boolean;
  passsec: boolean;
  keepalive: boolean;
  broadcast: boolean;
  priority: number;
  mark: number;
  lingerOnoff: number;
  linger: number;
  /** A socket error is pending (POLLERR); not read through SO_ERROR, which would clear it. */
  soErrorPending: boolean;
  peekOff: number;
  boundName: Buffer;
  peerName: Buffer;
  fileFlags: number;
  /** SO_RCVLOWAT (0: not reported), SO_DONTROUTE, SO_NO_CHECK, SO_OOBINLINE. */
  rcvlowat: number;
  dontroute: boolean;
  noCheck: boolean;
  oobinline: boolean;
}

/** A page sink: called with consecutive chunks of the requested ranges' bytes; may return a promise (backpressure). */
export type PageSink = (chunk: Buffer) => void | Promise<void>;

// ---------------------------------------------------------------- decoding helpers

/** protobufjs gives 64-bit fields as Long, string or number; we want bigint. */
function big(v: unknown): bigint {
  if (v === undefined || v === null) return 0n;
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(v);
  if (typeof v === 'string') return BigInt(v);
  const l = v as { low: number; high: number; unsigned: boolean };
  if (typeof l.low === 'number' && typeof l.high === 'number') {
    const u = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
    return l.unsigned ? u : BigInt.asIntN(64, u);
  }
  throw new GodwitError(`helper protocol: expected a 64-bit integer, got ${String(v)}`);
}
const num = (v: unknown): number => (v === undefined || v === null ? 0 : Number(v));
const buf = (v: unknown): Buffer => (v ? Buffer.from(v as Uint8Array) : Buffer.alloc(0));
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Msg = any;

// ---------------------------------------------------------------- bulk pipe reader

const BULK_MAGIC = 0x47505747; // "GWPG" little-endian: G W P G
const BULK_HEADER = 16;
const BULK_FLAG_END = 1;
/** fs.read size: the pipe holds at most 1 MiB here, so larger reads return no more. */
const BULK_READ = 1 << 20;

class BulkReader {
  private pending: Buffer = Buffer.alloc(0);
  private eof = false;
  private reading = false;
  private closed = false;
  private released = false;
  constructor(
    private readonly fd: number,
    private readonly describe: () => string,
  ) {}

  private async fill(): Promise<void> {
    if (this.closed) throw new GodwitError(`the bulk pipe of godwit-helper is closed (${this.describe()})`);
    const b = Buffer.allocUnsafe(BULK_READ);
    this.reading = true;
    let n: number;
    try {
      n = await new Promise<number>((resolve, reject) =>
        fs.read(this.fd, b, 0, b.length, null, (err, bytes) => (err ? reject(err) : resolve(bytes))),
      );
    } catch (e) {
      throw new GodwitError(`cannot read the bulk pipe of godwit-helper (${this.describe()})`, { cause: e });
    } finally {
      this.reading = false;
      if (this.closed) this.release();
    }
    if (n === 0) {
      this.eof = true;
      throw new GodwitError(`godwit-helper closed its bulk pipe mid-transfer (${this.describe()})`);
    }
    const got = b.subarray(0, n);
    this.pending = this.pending.length ? Buffer.concat([this.pending, got]) : got;
  }

  private async take(n: number): Promise<Buffer> {
    while (this.pending.length < n) await this.fill();
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /**
   * Delivers the payload of request id's frames to sink until its END frame. If the sink fails, onSinkError is
   * called once (the caller cancels the request) and the rest is drained unseen, so the pipe stays in step;
   * the sink's error is thrown at the end.
   */
  async readRequest(id: number, sink: PageSink, onSinkError: () => void): Promise<bigint> {
    let total = 0n;
    let sinkError: { e: unknown } | undefined;
    for (;;) {
      const h = await this.take(BULK_HEADER);
      const magic = h.readUInt32LE(0);
      const rid = h.readUInt32LE(4);
      let len = h.readUInt32LE(8);
      const flags = h.readUInt32LE(12);
      if (magic !== BULK_MAGIC || rid !== id)
        throw new GodwitError(
          `godwit-helper bulk pipe out of step: frame magic 0x${magic.toString(16)} for request ${rid}, expected request ${id}`,
        );
      while (len > 0) {
        if (!this.pending.length) await this.fill();
        const chunk = this.pending.subarray(0, Math.min(len, this.pending.length));
        this.pending = this.pending.subarray(chunk.length);
        len -= chunk.length;
        total += BigInt(chunk.length);
        if (sinkError) continue;
        try {
          const r = sink(chunk);
          if (r) await r;
        } catch (e) {
          sinkError = { e };
          onSinkError();
        }
      }
      if (flags & BULK_FLAG_END) {
        if (sinkError) throw sinkError.e;
        return total;
      }
    }
  }

  /** Closes the pipe; a read in flight (which ends at EOF once the helper is gone) closes it when it returns. */
  close(): void {
    this.closed = true;
    if (!this.reading) this.release();
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    fs.closeSync(this.fd);
  }
}

// ---------------------------------------------------------------- the client

interface Waiter {
  resolve: (m: Msg) => void;
  reject: (e: Error) => void;
  what: string;
}

export interface SeizeOptions {
  /** Per-request deadline for all stops (default 5000 ms); threads that do not stop are 'timeout'. */
  timeoutMs?: number;
  /** PTRACE_O_SUSPEND_SECCOMP, so injected syscalls pass the target's seccomp filter (default true). */
  suspendSeccomp?: boolean;
  /** 'throw' (default): a tid that does not exist is a SysError ESRCH naming it; 'report': returned as 'vanished'. */
  vanished?: 'throw' | 'report';
}

export class Helper {
  readonly info: HelperInfo;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  private inbuf: Buffer = Buffer.alloc(0);
  private dead?: Error;
  private stderrTail = '';
  private readonly exited: Promise<void>;
  private bulkChain: Promise<unknown> = Promise.resolve();
  private closing = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly ctl: Socket,
    private readonly bulk: BulkReader,
    info: HelperInfo,
    exited: Promise<void>,
  ) {
    this.info = info;
    this.exited = exited;
  }

  get pid(): number {
    return this.info.pid;
  }

  /** Spawns a helper (as the current user: root for ptrace) and waits for its Hello. */
  static async start(): Promise<Helper> {
    const file = helperPath();
    if (!fs.existsSync(file))
      throw new GodwitError(
        `godwit-helper not found at ${file}: build it with \`make -C native\` (or npm install), or set GODWIT_HELPER`,
      );
    const child = spawn(file, [], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    const ctl = child.stdio[3] as Socket;
    let stderrTail = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      stderrTail = (stderrTail + s).slice(-4000);
    });
    let self: Helper | undefined;
    const exited = new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        const how = signal ? `killed by ${signal}` : `exited with status ${code}`;
        const tail = (self?.stderrTail ?? '') + stderrTail;
        const err = new GodwitError(`godwit-helper (pid ${child.pid}) ${how}${tail ? ': ' + tail.trim() : ''}`);
        if (self) self.fail(err);
        else pendingHello?.reject(err);
        resolve();
      });
      child.on('error', (e) => {
        const err = new GodwitError(`cannot start godwit-helper ${file}: ${e.message}`, { cause: e });
        if (self) self.fail(err);
        else pendingHello?.reject(err);
        resolve();
      });
    });
    let pendingHello: { resolve: (m: Msg) => void; reject: (e: Error) => void } | undefined;
    const hello = new Promise<Msg>((resolve, reject) => (pendingHello = { resolve, reject }));
    // Read frames before the Helper exists: the first one is the Hello.
    let early: Buffer = Buffer.alloc(0);
    const onEarly = (d: Buffer): void => {
      early = Buffer.concat([early, d]);
      if (early.length >= 4 && early.length >= 4 + early.readUInt32LE(0)) {
        const n = early.readUInt32LE(0);
        const m = proto().Response.decode(early.subarray(4, 4 + n));
        early = early.subarray(4 + n);
        pendingHello?.resolve(m);
      }
    };
    ctl.on('data', onEarly);
    ctl.on('error', () => {
      /* surfaced by the exit handler */
    });
    let helloMsg: Msg;
    try {
      helloMsg = proto().Response.toObject(await hello, { longs: String, enums: Number, defaults: true, arrays: true });
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    ctl.off('data', onEarly);
    if (helloMsg.error && helloMsg.error.errnum) {
      child.kill('SIGKILL');
      throw toSysError(helloMsg.error, 'start godwit-helper');
    }
    const h = helloMsg.hello;
    const info: HelperInfo = {
      version: num(h.version),
      pid: num(h.pid),
      bulkPipeSize: num(h.bulkPipeSize),
      pageSize: num(h.pageSize),
      xcr0: big(h.xcr0),
      xsaveSize: num(h.xsaveSize),
      xsaveComponents: (h.xsaveComponents as Msg[]).map((c) => ({
        index: num(c.index),
        offset: num(c.offset),
        size: num(c.size),
      })),
    };
    // Open the read end of the bulk pipe before the first request: the helper then drops its own copy.
    let bulkFd: number;
    try {
      bulkFd = fs.openSync(`/proc/${info.pid}/fd/${num(h.bulkFd)}`, fs.constants.O_RDONLY);
    } catch (e) {
      child.kill('SIGKILL');
      throw new GodwitError(`cannot open the bulk pipe of godwit-helper ${info.pid}`, { cause: e });
    }
    const bulk = new BulkReader(bulkFd, () => `helper pid ${info.pid}`);
    self = new Helper(child, ctl, bulk, info, exited);
    self.stderrTail = stderrTail;
    child.stderr?.on('data', (s: string) => {
      if (self) self.stderrTail = (self.stderrTail + s).slice(-4000);
    });
    ctl.on('data', (d: Buffer) => self!.onData(d));
    if (early.length) self.onData(early);
    return self;
  }

  private fail(err: Error): void {
    if (!this.dead) this.dead = err;
    for (const w of this.waiters.values()) w.reject(this.closing ? err : err);
    this.waiters.clear();
  }

  private onData(d: Buffer): void {
    this.inbuf = this.inbuf.length ? Buffer.concat([this.inbuf, d]) : d;
    while (this.inbuf.length >= 4) {
      const n = this.inbuf.readUInt32LE(0);
      if (this.inbuf.length < 4 + n) break;
      const frame = this.inbuf.subarray(4, 4 + n);
      this.inbuf = this.inbuf.subarray(4 + n);
      let m: Msg;
      try {
        m = proto().Response.toObject(proto().Response.decode(frame), {
          longs: String,
          enums: Number,
          defaults: true,
          arrays: true,
        });
      } catch (e) {
        this.fail(new GodwitError('godwit-helper sent an undecodable response', { cause: e }));
        this.child.kill('SIGKILL');
        return;
      }
      const id = num(m.id);
      const w = this.waiters.get(id);
      if (!w) {
        // id 0: the helper's last words before exiting (a fatal error); the exit handler reports it too.
        if (id === 0 && m.error?.errnum) this.stderrTail += `\n${describeWire(m.error)}`;
        continue;
      }
      this.waiters.delete(id);
      w.resolve(m);
    }
  }

  /** Sends one request; resolves with the decoded Response (the caller checks .error). */
  private send(op: string, body: Record<string, unknown>, what: string): { id: number; response: Promise<Msg> } {
    const id = this.nextId++;
    if (this.dead) return { id, response: Promise.reject(this.dead) };
    if (this.closing)
      return { id, response: Promise.reject(new GodwitError(`godwit-helper ${this.pid} is closing: ${what}`)) };
    const { Request } = proto();
    const payload = Request.encode(Request.fromObject({ id, [op]: body })).finish();
    const frame = Buffer.allocUnsafe(4 + payload.length);
    frame.writeUInt32LE(payload.length, 0);
    Buffer.from(payload.buffer, payload.byteOffset, payload.length).copy(frame, 4);
    const response = new Promise<Msg>((resolve, reject) => this.waiters.set(id, { resolve, reject, what }));
    this.ctl.write(frame);
    return { id, response };
  }

  private async call(op: string, body: Record<string, unknown>, what: string): Promise<Msg> {
    const m = await this.send(op, body, what).response;
    if (m.error && m.error.errnum) throw toSysError(m.error, what);
    return m[op];
  }

  /**
   * PTRACE_SEIZE + PTRACE_INTERRUPT every tid, then waits for all. Repeat with the new tids of the thread/child
   * set until it is stable. A thread frozen by a cgroup v1 freezer reports no stop until thawed ('timeout').
   */
  async seize(tids: number[], opts: SeizeOptions = {}): Promise<SeizedThread[]> {
    const r = await this.call(
      'seize',
      { tids, suspendSeccomp: opts.suspendSeccomp ?? true, timeoutMs: opts.timeoutMs ?? 0 },
      `seize ${tids.length} thread(s)`,
    );
    const out: SeizedThread[] = (r.threads as Msg[]).map((t) => ({
      tid: num(t.tid),
      status: SEIZE_STATUS[num(t.status)] ?? 'vanished',
      tgid: num(t.tgid),
      stopSignal: num(t.stopSignal),
      seccompSuspended: !!t.seccompSuspended,
      deliveredSignals: (t.deliveredSignals as unknown[]).map(num),
    }));
    if ((opts.vanished ?? 'throw') === 'throw') {
      const gone = out.find((t) => t.status === 'vanished');
      if (gone)
        throw new SysError({ errno: osConstants.errno.ESRCH, syscall: 'ptrace(PTRACE_SEIZE)', pid: gone.tid, what: `seize thread ${gone.tid}` });
    }
    return out;
  }

  /** Detaches the given tids (default: every tracee). Group-stopped tasks stay stopped. */
  async detach(tids: number[] = []): Promise<{ detached: number[]; gone: number[] }> {
    const r = await this.call('detach', { tids }, tids.length ? `detach ${tids.join(',')}` : 'detach all');
    return { detached: (r.detached as unknown[]).map(num), gone: (r.gone as unknown[]).map(num) };
  }

  /** SIGKILLs the given thread groups and reaps their seized threads (threads before their leader). */
  async kill(pids: number[], timeoutMs = 0): Promise<number[]> {
    const r = await this.call('kill', { pids, timeoutMs }, `kill ${pids.join(',')}`);
    return (r.reaped as unknown[]).map(num);
  }

  /** Per-thread state that ptrace gives directly (threads must be seized and stopped). */
  async threadRegs(tids: number[]): Promise<ThreadRegs[]> {
    const r = await this.call('threadRegs', { tids }, `read registers of ${tids.join(',')}`);
    return (r.threads as Msg[]).map((t) => ({
      tid: num(t.tid),
      regs: buf(t.regs),
      regsRaw: buf(t.regsRaw),
      restart: RESTART[num(t.restart)] ?? 'none',
      ...(t.xsave?.length ? { xsave: buf(t.xsave) } : {}),
      ...(t.fpregs?.length ? { fpregs: buf(t.fpregs) } : {}),
      sigmask: big(t.sigmask),
      pending: (t.pending as Uint8Array[]).map(buf),
      ...(num(t.rseqAbiSize)
        ? {
            rseq: {
              abiPointer: big(t.rseqAbiPointer),
              abiSize: num(t.rseqAbiSize),
              signature: num(t.rseqSignature),
              flags: num(t.rseqFlags),
            },
          }
        : {}),
      robustList: big(t.robustList),
      robustListLen: big(t.robustListLen),
      syscall: {
        op: num(t.syscallOp),
        nr: big(t.syscallNr),
        args: (t.syscallArgs as unknown[]).map(big),
        rval: big(t.syscallRval),
      },
      tls: (t.tls as Uint8Array[]).map(buf),
      seccompFilters: ((t.seccompFilters as Uint8Array[] | undefined) ?? []).map(buf),
      seccompFlags: ((t.seccompFlags as unknown[] | undefined) ?? []).map(big),
    }));
  }

  /**
   * One read-only fcntl ('fcntl') or ioctl ('ioctl') on fd `fd` of `pid`, or on `path` (opened by the helper)
   * when given. `argLen` > 0 hands the call a zeroed buffer of that size (an ioctl's first 8 bytes of it hold
   * `arg`: its input, when it reads one) and returns what it filled in.
   */
  async fdQuery(q: { pid: number; fd?: number; path?: string; kind: 'fcntl' | 'ioctl'; cmd: number; arg?: number; argLen?: number }): Promise<{ result: number; data: Buffer }> {
    const r = await this.call(
      'fdQuery',
      { pid: q.pid, fd: q.fd ?? -1, path: q.path ?? '', kind: q.kind === 'ioctl' ? 1 : 0, cmd: q.cmd, arg: q.arg ?? 0, argLen: q.argLen ?? 0 },
      `${q.kind} 0x${q.cmd.toString(16)} on ${q.path ?? `fd ${q.fd} of pid ${q.pid}`}`,
    );
    return { result: num(r.result), data: buf(r.data) };
  }

  /**
   * The owner of fd `fd` of `pid` for SIGIO/SIGURG: F_GETOWN_EX type and pid (as this helper's pid namespace
   * sees it), F_GETSIG signal, and the uid/euid recorded by F_SETOWN (`uids` false when the kernel cannot tell:
   * no F_GETOWNER_UIDS).
   */
  async fdOwner(pid: number, fd: number): Promise<{ type: number; pid: number; signum: number; uid: number; euid: number; uids: boolean }> {
    const r = await this.call('fdQuery', { pid, fd, path: '', kind: 2, cmd: 0, arg: 0, argLen: 0 }, `owner of fd ${fd} of pid ${pid}`);
    const d = buf(r.data);
    return { type: d.readInt32LE(0), pid: d.readInt32LE(4), signum: d.readInt32LE(8), uid: d.readUInt32LE(12), euid: d.readUInt32LE(16), uids: num(r.result) === 1 };
  }

  /** getpeername() of socket fd `fd` of `pid`: the peer's address (a sockaddr, its length as returned). */


  /**
   * Whether `pid` and `pid2` share their memory, fd table or fs (cwd, root, umask), as clone() with CLONE_VM,
   * CLONE_FILES or CLONE_FS leaves two processes (kcmp).
   */
  async sharesWith(pid: number, pid2: number, what: 'vm' | 'files' | 'fs'): Promise<boolean> {
    const type = { vm: 1, files: 2, fs: 3 }[what]; // KCMP_VM, KCMP_FILES, KCMP_FS
    const r = await this.call('fdQuery', { pid, fd: 0, path: '', kind: 5, cmd: pid2, arg: type, argLen: 0 }, `does pid ${pid} share its ${what} with pid ${pid2}`);
    return num(r.result) === 0;
  }

  async peerName(pid: number, fd: number): Promise<Buffer> {
    const r = await this.call('fdQuery', { pid, fd, path: '', kind: 3, cmd: 0, arg: 0, argLen: 0 }, `peer address of socket fd ${fd} of pid ${pid}`);
    return buf(r.data);
  }

  /**
   * Gives the file of fd `fd` of `pid` the new name `path` (linkat of the fd: a deleted name that still has
   * other links, checkpoint/files.ts link remaps). EEXIST when `path` is taken.
   */
  async linkFd(pid: number, fd: number, path: string): Promise<void> {
    await this.call('fdQuery', { pid, fd, path, kind: 6, cmd: 0, arg: 0, argLen: 0 }, `link fd ${fd} of pid ${pid} to ${path}`);
  }

  /** Are fd `fd` of `pid` and fd `otherFd` of `otherPid` the same open file description (kcmp KCMP_FILE)? */
  async sameFile(pid: number, fd: number, otherPid: number, otherFd: number): Promise<boolean> {
    const r = await this.call('fdQuery', { pid, fd, path: '', kind: 4, cmd: otherPid, arg: otherFd, argLen: 0 }, `compare fd ${fd} of pid ${pid} with fd ${otherFd} of pid ${otherPid}`);
    return num(r.result) === 0;
  }

  /**
   * Is fd `fd` of `pid` the file watched by the item of epoll fd `epfd` (same pid) registered under fd number
   * `tfd`, the `toff`-th such item in fdinfo order (kcmp KCMP_EPOLL_TFD)?
   */
  async epollTarget(pid: number, fd: number, epfd: number, tfd: number, toff: number): Promise<boolean> {
    const arg = Number((BigInt(toff) << 32n) | BigInt(tfd));
    const r = await this.call('fdQuery', { pid, fd, path: '', kind: 7, cmd: epfd, arg, argLen: 0 }, `compare fd ${fd} of pid ${pid} with item ${tfd} of epoll fd ${epfd}`);
    return num(r.result) === 0;
  }

  /** Per-process state through injected syscalls, in one round trip (all tids seized and stopped). */
  async dumpProcess(pid: number, tids: number[], posixTimers: number[] = []): Promise<ProcessState> {
    const r = await this.call('dumpProcess', { pid, tids, posixTimers }, `read the state of process ${pid}`);
    return {
      pid: num(r.pid),
      sigactions: (r.sigactions as Msg[]).map((s) => ({
        sig: num(s.sig),
        handler: big(s.handler),
        flags: big(s.flags),
        restorer: big(s.restorer),
        mask: big(s.mask),
      })),
      itimers: (r.itimers as Msg[]).map((t) => ({
        which: num(t.which),
        interval: { sec: big(t.intervalSec), usec: big(t.intervalUsec) },
        value: { sec: big(t.valueSec), usec: big(t.valueUsec) },
      })),
      posixTimers: (r.posixTimers as Msg[]).map((t) => ({
        id: num(t.id),
        interval: { sec: big(t.intervalSec), nsec: big(t.intervalNsec) },
        value: { sec: big(t.valueSec), nsec: big(t.valueNsec) },
        overrun: num(t.overrun),
      })),
      dumpable: num(r.dumpable),
      childSubreaper: num(r.childSubreaper),
      sharedPending: (r.sharedPending as Uint8Array[]).map(buf),
      rlimits: (r.rlimits as Msg[]).map((l) => ({ resource: num(l.resource), cur: big(l.cur), max: big(l.max) })),
      threads: (r.threads as Msg[]).map((t) => ({
        tid: num(t.tid),
        altstack: { sp: big(t.altstackSp), flags: num(t.altstackFlags), size: big(t.altstackSize) },
        clearTidAddress: big(t.clearTidAddress),
        pdeathsig: num(t.pdeathsig),
      })),
      injectedSyscalls: num(r.injectedSyscalls),
      elapsedNs: big(r.elapsedNs),
      membarrierRegistrations: num(r.membarrierRegistrations),
    };
  }

  /**
   * Reads the ranges of pid's memory, in order, and hands their bytes to sink in consecutive chunks. Resolves
   * once all bytes were delivered. On failure or abort the bytes that were read are still delivered first, then
   * the SysError (ECANCELED for an abort) is thrown.
   */
  async readPages(
    pid: number,
    ranges: PageRange[],
    sink: PageSink,
    opts: { signal?: AbortSignal } = {},
  ): Promise<ReadPagesResult> {
    const run = async (): Promise<ReadPagesResult> => {
      const what = `read ${ranges.length} memory range(s) of pid ${pid}`;
      const { id, response } = this.send(
        'readPages',
        { pid, starts: ranges.map((r) => r.start.toString()), lengths: ranges.map((r) => r.length.toString()) },
        what,
      );
      let cancelled = false;
      const onAbort = (): void => {
        if (cancelled || this.dead || this.closing) return;
        cancelled = true;
        this.ctl.write(this.frame({ id: this.nextId++, cancel: { target: id } }));
      };
      if (opts.signal?.aborted) onAbort();
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        // Read the bulk frames and the response together; a dead helper fails both.
        const [delivered, m] = await Promise.all([this.bulk.readRequest(id, sink, onAbort), response]);
        const r = m.readPages ?? {};
        const result = { bytes: big(r.bytes), viaProcMem: big(r.viaProcMem), elapsedNs: big(r.elapsedNs) };
        if (m.error && m.error.errnum) throw toSysError(m.error, what);
        if (delivered !== result.bytes)
          throw new GodwitError(`${what}: helper reported ${result.bytes} bytes but the bulk pipe carried ${delivered}`);
        return result;
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
      }
    };
    const p = this.bulkChain.then(run, run);
    this.bulkChain = p.catch(() => undefined);
    return p;
  }

  /** Convenience for small reads (tests, metadata): the bytes of the ranges in one Buffer. */
  async readPagesToBuffer(pid: number, ranges: PageRange[]): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await this.readPages(pid, ranges, (c) => {
      chunks.push(Buffer.from(c));
    });
    return Buffer.concat(chunks);
  }

  /**
   * Starts dirty tracking of pid (pre-copy): a userfaultfd (write-protect, WP_ASYNC) is created by an injected
   * syscall in thread `tid` (seized and stopped; default pid), copied into the helper and closed in the target.
   * The thread may be detached afterwards: tracking needs no stopped task. Closed by trackStop, or by the
   * kernel when the helper exits: the protection goes with it.
   */
  async trackStart(pid: number, tid = pid): Promise<{ targetFd: number; features: bigint; elapsedNs: bigint }> {
    const r = await this.call('trackStart', { pid, tid }, `start dirty tracking of pid ${pid}`);
    return { targetFd: num(r.targetFd), features: big(r.features), elapsedNs: big(r.elapsedNs) };
  }

  /**
   * Registers ranges (page aligned, one per mapping) for write tracking and write-protects them. Per range: 0,
   * or the errno that refused it (EBUSY: the process's own userfaultfd holds it; EINVAL: cannot be
   * write-protected, e.g. file-backed).
   */
  async trackRegister(pid: number, ranges: { start: number; end: number }[]): Promise<number[]> {
    const r = await this.call(
      'trackRegister',
      { pid, starts: ranges.map((x) => x.start), lengths: ranges.map((x) => x.end - x.start) },
      `register ${ranges.length} range(s) of pid ${pid} for dirty tracking`,
    );
    return (r.errnos as unknown[]).map(num);
  }

  /** Written pages of registered ranges since the last reset; `reset` write-protects them again in the same walk. */
  async trackScan(pid: number, ranges: { start: number; end: number }[], reset: boolean): Promise<TrackScanResult> {
    const r = await this.call(
      'trackScan',
      { pid, starts: ranges.map((x) => x.start), lengths: ranges.map((x) => x.end - x.start), reset },
      `scan ${ranges.length} range(s) of pid ${pid} for written pages`,
    );
    const raw = buf(r.regions);
    const written: WrittenRange[] = [];
    for (let at = 0; at + 16 <= raw.length; at += 16)
      written.push({ start: Number(raw.readBigUInt64LE(at)), end: Number(raw.readBigUInt64LE(at + 8)) });
    return { written, pages: num(r.pages), failed: (r.failed as unknown[]).map(num), elapsedNs: big(r.elapsedNs) };
  }

  /**
   * Pages a dump takes from the given ranges of pid (private mappings): present or swapped, without the shared
   * zero page and page-cache pages (kept with keepFile: anonymous mappings, where only the vdso has them); one
   * PAGEMAP_SCAN walk per range (kernel 6.7+; older ones fail with ENOTTY or EINVAL). Regions in address order,
   * adjacent ones merged. With guards: the guard regions (MADV_GUARD_INSTALL) instead (kernel 6.14+, else EINVAL).
   */
  async presentPages(
    pid: number,
    ranges: { start: number; end: number }[],
    keepFile = false,
    guards = false,
  ): Promise<{ regions: WrittenRange[]; pages: number; elapsedNs: bigint }> {
    const r = await this.call(
      'presentPages',
      { pid, starts: ranges.map((x) => x.start), lengths: ranges.map((x) => x.end - x.start), keepFile, guards },
      `find the ${guards ? 'guard' : 'present'} pages of ${ranges.length} range(s) of pid ${pid}`,
    );
    const raw = buf(r.regions);
    const regions: WrittenRange[] = [];
    for (let at = 0; at + 16 <= raw.length; at += 16)
      regions.push({ start: Number(raw.readBigUInt64LE(at)), end: Number(raw.readBigUInt64LE(at + 8)) });
    return { regions, pages: num(r.pages), elapsedNs: big(r.elapsedNs) };
  }

  /** Ends dirty tracking of pid (closes the helper's userfaultfd: the kernel unregisters and unprotects). */
  async trackStop(pid: number): Promise<boolean> {
    const r = await this.call('trackStop', { pid }, `stop dirty tracking of pid ${pid}`);
    return num(r.stopped) === pid;
  }

  /** The bytes in flight in pid's pipe fd, without consuming them. */
  async peekPipe(pid: number, fd: number, maxBytes = 0): Promise<{ data: Buffer; pipeSize: number; truncated: boolean }> {
    const r = await this.call('peekPipe', { pid, fd, maxBytes }, `peek pipe fd ${fd} of pid ${pid}`);
    return { data: buf(r.data), pipeSize: num(r.pipeSize), truncated: !!r.truncated };
  }

  /**
   * The bytes queued in the pty pair whose master is pid's fd, both ways. Read and written back at once (a tty
   * cannot be peeked): the pair holds them again afterwards.
   */
  async ttyQueue(pid: number, fd: number): Promise<{ slaveIn: Buffer; masterIn: Buffer }> {
    const r = await this.call('ttyQueue', { pid, fd }, `read the queued bytes of pty master fd ${fd} of pid ${pid}`);
    return { slaveIn: buf(r.slaveIn), masterIn: buf(r.masterIn) };
  }

  /** The receive queue of pid's unix socket fd, without consuming it. */
  async peekSocket(pid: number, fd: number, maxBytes = 0): Promise<{ packets: QueuedPacket[]; truncated: boolean }> {
    const r = await this.call('peekSocket', { pid, fd, maxBytes }, `peek socket fd ${fd} of pid ${pid}`);
    return {
      packets: (r.packets as Msg[]).map((p) => ({ data: buf(p.data), addr: buf(p.addr), passedFds: num(p.passedFds) })),
      truncated: !!r.truncated,
    };
  }

  /** Unix sockets from NETLINK_SOCK_DIAG (in netnsPid's network namespace; 0: the helper's). */
  async unixDiag(inodes: bigint[] = [], netnsPid = 0): Promise<UnixSock[]> {
    const r = await this.call(
      'unixDiag',
      { inodes: inodes.map((i) => i.toString()), netnsPid },
      `list unix sockets${netnsPid ? ` in the network namespace of pid ${netnsPid}` : ''}`,
    );
    return (r.sockets as Msg[]).map((s) => ({
      inode: big(s.inode),
      type: num(s.type),
      state: num(s.state),
      peerInode: big(s.peerInode),
      name: buf(s.name),
      pendingConnections: (s.pendingConnections as unknown[]).map(big),
      rqlen: num(s.rqlen),
      wqlen: num(s.wqlen),
      shutdown: num(s.shutdown),
      vfsDev: big(s.vfsDev),
      vfsIno: big(s.vfsIno),
    }));
  }

  /** State and TCP/IP options of pid's inet socket fd. */
  async inetSock(pid: number, fd: number): Promise<InetSock> {
    const r = await this.call('inetSock', { pid, fd }, `read inet socket fd ${fd} of pid ${pid}`);
    return {
      state: num(r.state),
      v6only: !!r.v6only,
      backlog: num(r.backlog),
      acceptQueue: num(r.acceptQueue),
      nodelay: !!r.nodelay,
      cork: !!r.cork,
      keepcnt: num(r.keepcnt),
      keepidle: num(r.keepidle),
      keepintvl: num(r.keepintvl),
      freebind: !!r.freebind,
      boundDev: String(r.boundDev ?? ''),
    };
  }

  /**
   * TCP_REPAIR on for every listed connection at once (the kernel then sends no new data on them). The helper
   * holds them until tcpRepairOff(); if it exits first, it ends repair mode itself.
   */
  async tcpRepairOn(socks: { pid: number; fd: number }[]): Promise<number> {
    const r = await this.call('tcpRepairOn', { socks }, `put ${socks.length} TCP connection(s) into repair mode`);
    return num(r.count);
  }

  /** Sequence numbers, queues, options and window of a connection in repair mode. */
  async tcpRepairDump(pid: number, fd: number, maxBytes = 0): Promise<TcpRepairState> {
    const r = await this.call('tcpRepairDump', { pid, fd, maxBytes }, `read TCP repair state of fd ${fd} of pid ${pid}`);
    return {
      sndSeq: num(r.sndSeq),
      rcvSeq: num(r.rcvSeq),
      outq: buf(r.outq),
      unsent: num(r.unsent),
      inq: buf(r.inq),
      optMask: num(r.optMask),
      sndWscale: num(r.sndWscale),
      rcvWscale: num(r.rcvWscale),
      mssClamp: num(r.mssClamp),
      ...(num(r.optMask) & 1 ? { timestamp: num(r.timestamp) } : {}),
      ...(r.hasWindow
        ? {
            window: {
              sndWl1: num(r.sndWl1),
              sndWnd: num(r.sndWnd),
              maxWindow: num(r.maxWindow),
              rcvWnd: num(r.rcvWnd),
              rcvWup: num(r.rcvWup),
            },
          }
        : {}),
    };
  }

  /**
   * Ends repair mode on every connection tcpRepairOn() took (release = false), or, after the tree was killed,
   * only drops the helper's copies so the sockets close in repair mode, sending nothing (release = true).
   */
  async tcpRepairOff(release = false): Promise<number> {
    const r = await this.call('tcpRepairOff', { release }, release ? 'release TCP connections' : 'end repair mode of TCP connections');
    return num(r.count);
  }

  /** Socket options of pid's socket fd (read through a pidfd_getfd copy). */
  async sockOpts(pid: number, fd: number): Promise<SockOpts> {
    const r = await this.call('sockOpts', { pid, fd }, `read socket options of fd ${fd} of pid ${pid}`);
    return {
      domain: num(r.domain),
      type: num(r.type),
      protocol: num(r.protocol),
      sndbuf: num(r.sndbuf),
      rcvbuf: num(r.rcvbuf),
      sndTimeoUsec: big(r.sndTimeoUsec),
      rcvTimeoUsec: big(r.rcvTimeoUsec),
      reuseaddr: !!r.reuseaddr,
      reuseport: !!r.reuseport,
      passcred: !!r.passcred,
      passsec: !!r.passsec,
      keepalive: !!r.keepalive,
      broadcast: !!r.broadcast,
      priority: num(r.priority),
      mark: num(r.mark),
      lingerOnoff: num(r.lingerOnoff),
      linger: num(r.linger),
      soErrorPending: !!r.soErrorPending,
      peekOff: num(r.peekOff),
      boundName: buf(r.boundName),
      peerName: buf(r.peerName),
      fileFlags: num(r.fileFlags),
      rcvlowat: num(r.rcvlowat),
      dontroute: !!r.dontroute,
      noCheck: !!r.noCheck,
      oobinline: !!r.oobinline,
    };
  }

  private frame(obj: Record<string, unknown>): Buffer {
    const { Request } = proto();
    const payload = Request.encode(Request.fromObject(obj)).finish();
    const frame = Buffer.allocUnsafe(4 + payload.length);
    frame.writeUInt32LE(payload.length, 0);
    Buffer.from(payload.buffer, payload.byteOffset, payload.length).copy(frame, 4);
    return frame;
  }

  /**
   * Ends the helper: it detaches every tracee (undoing nothing is needed: injected state never outlives a request)
   * and exits. Always resolves; a helper that does not exit within timeoutMs is SIGKILLed (the kernel then
   * detaches its tracees).
   */
  async close(timeoutMs = 5000): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.ctl.end();
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)));
    const done = await Promise.race([this.exited.then(() => false), timedOut]);
    clearTimeout(timer);
    if (done) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    this.bulk.close();
    this.ctl.destroy();
  }
}

function describeWire(e: Msg): string {
  return `${e.syscall}: errno ${e.errnum}${e.pid ? ` (pid ${e.pid})` : ''}${e.detail ? ': ' + e.detail : ''}`;
}

function toSysError(e: Msg, what: string): SysError {
  const pid = num(e.pid);
  return new SysError({
    errno: num(e.errnum),
    syscall: String(e.syscall || 'godwit-helper'),
    ...(pid ? { pid } : {}),
    what: e.detail ? `${what}: ${e.detail}` : what,
  });
}

/** Runs fn with a fresh helper and always closes it (tracees detached) afterwards. */
export async function withHelper<T>(fn: (h: Helper) => Promise<T>): Promise<T> {
  const h = await Helper.start();
  try {
    return await fn(h);
  } finally {
    await h.close();
  }
}
