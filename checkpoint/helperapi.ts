/**
 * What the dump needs from the native helper (native/helper.ts), in the shapes checkpoint/ works with.
 * native/helper.ts speaks the wire protocol; adapt.ts maps its results onto these types, so the policy code
 * here does not depend on how protobuf field names come out.
 */
import type { InetSock, TcpRepairState } from '../native/helper';

export type { InetSock, TcpRepairState };

export type SeizeStatus = 'stopped' | 'group-stopped' | 'zombie' | 'vanished' | 'timeout' | 'already';

export interface SeizedThread {
  tid: number;
  status: SeizeStatus;
  stopSignal?: number;
}

export interface ThreadRegs {
  tid: number;
  /** struct user_regs_struct (216 bytes), syscall restart already normalised. */
  regs: Buffer;
  restart: 'none' | 'syscall' | 'eintr';
  /** NT_X86_XSTATE (layout from xsaveLayout()) or empty; fpregs = NT_PRFPREG (512 bytes). */
  xsave: Buffer;
  fpregs: Buffer;
  sigmask: bigint;
  pending: Buffer[];
  rseq?: { pointer: bigint; size: number; signature: number };
  robustList: bigint;
  robustListLen: bigint;
  /** GDT TLS entries 12..14 (struct user_desc, 16 bytes each). */
  tls: Buffer[];
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
  intervalSec: bigint;
  intervalUsec: bigint;
  valueSec: bigint;
  valueUsec: bigint;
}

export interface PosixTimerState {
  id: number;
  intervalSec: bigint;
  intervalNsec: bigint;
  valueSec: bigint;
  valueNsec: bigint;
  overrun: number;
}

export interface ThreadInjected {
  tid: number;
  altstackSp: bigint;
  altstackFlags: number;
  altstackSize: bigint;
  clearTidAddress: bigint;
  pdeathsig: number;
}

export interface ProcessState {
  pid: number;
  sigactions: SigAction[];
  itimers: Itimer[];
  posixTimers: PosixTimerState[];
  dumpable: number;
  childSubreaper: boolean;
  sharedPending: Buffer[];
  rlimits: { resource: number; cur: bigint; max: bigint }[];
  threads: ThreadInjected[];
}

export interface XsaveLayout {
  xcr0: bigint;
  size: number;
  /** component index -> offset and size in the XSAVE buffer */
  components: Map<number, { offset: number; size: number }>;
}

export interface UnixSockInfo {
  inode: number;
  type: number;
  state: number;
  peerInode: number;
  name: Buffer;
  pendingConnections: number[];
  rqlen: number;
  wqlen: number;
  shutdown: number;
  vfsDev: number;
  vfsIno: number;
}

export interface QueuedPacket {
  data: Buffer;
  addr: Buffer;
  passedFds: number;
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
  peekOff: number;
  boundName: Buffer;
  peerName: Buffer;
  fileFlags: number;
}

/** The operations of one helper process; a dump owns exactly one for its whole duration. */
export interface DumpHelper {
  readonly xsave: XsaveLayout;
  seize(tids: number[], opts?: { timeoutMs?: number }): Promise<SeizedThread[]>;
  threadRegs(tids: number[]): Promise<ThreadRegs[]>;
  dumpProcess(pid: number, tids: number[], posixTimers: number[]): Promise<ProcessState>;
  /** Streams the bytes of the ranges, in order, into `sink`; resolves once all are read from the target. */
  readPages(pid: number, starts: bigint[], lengths: bigint[], sink: (chunk: Buffer) => void | Promise<void>): Promise<{ bytes: bigint }>;
  /** Present/swapped pages of ranges without zero and (unless keepFile) page-cache pages: PAGEMAP_SCAN. */
  presentPages(pid: number, ranges: { start: number; end: number }[], keepFile: boolean): Promise<{ regions: { start: number; end: number }[] }>;
  /** truncated: the pipe held more than the helper could peek (never expected: a pipe holds at most 1 MiB here). */
  peekPipe(pid: number, fd: number): Promise<{ data: Buffer; pipeSize: number; truncated?: boolean }>;
  peekSocket(pid: number, fd: number): Promise<{ packets: QueuedPacket[]; truncated: boolean }>;
  unixDiag(inodes: number[], netnsPid: number): Promise<UnixSockInfo[]>;
  sockOpts(pid: number, fd: number): Promise<SockOpts>;
  /** inet sockets and TCP_REPAIR (checkpoint/inet.ts). */
  inetSock(pid: number, fd: number): Promise<InetSock>;
  tcpRepairOn(socks: { pid: number; fd: number }[]): Promise<number>;
  tcpRepairDump(pid: number, fd: number): Promise<TcpRepairState>;
  tcpRepairOff(release?: boolean): Promise<number>;
  /** Every task this helper holds, back to running as it was. */
  detach(): Promise<void>;
  kill(pids: number[]): Promise<void>;
  close(): Promise<void>;
}
