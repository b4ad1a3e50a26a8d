/**
 * TCP and UDP sockets over IPv4 and IPv6, as CRIU writes them: an inet_sk_entry in files.img (addresses,
 * ports, state, backlog, options) and, for an established or half-closed TCP connection, tcp-stream-<ino>.img
 * with its TCP_REPAIR state (sequence numbers, both queues, options, window, timestamp).
 *
 * Connections are put into repair mode all at once, before any is read (lockConnections): in repair mode the
 * kernel sends no new data and, if the tree is killed after the dump, closes them without FIN or RST. A dump
 * that fails, or one with --leave-running, takes them out of repair mode again (unlockConnections) before
 * the tree runs. Not supported (refused with pid, fd and state): TCP states other than listening, established,
 * half-closed (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, CLOSING: as CRIU, the image's outq_seq/inq_seq count a queued or
 * received FIN, outq_len/unsq_len do not) and closed, listeners with connections not accepted yet. Datagrams
 * queued on a UDP socket are not carried (no sender could put them back); CRIU drops them too.
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { listProcNumbers, isNoEntry } from './proc/read';
import { classifyFd } from './fdkinds';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';
import type { Helper, SockOpts } from '../native/helper';

export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
/** UDP-Lite: UDP with partial checksums; the same socket calls and state (zdtm socket_udplite). */
export const IPPROTO_UDPLITE = 136;

/** Kernel TCP states (include/net/tcp_states.h); UDP uses ESTABLISHED (connected) and CLOSE. */
export const TCP_STATES: Record<number, string> = {
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
};
export const TCP_ESTABLISHED = 1;
export const TCP_FIN_WAIT1 = 4;
export const TCP_FIN_WAIT2 = 5;
export const TCP_CLOSE = 7;
export const TCP_CLOSE_WAIT = 8;
export const TCP_LAST_ACK = 9;
export const TCP_LISTEN = 10;
export const TCP_CLOSING = 11;

/**
 * States of a TCP connection dumped with TCP_REPAIR: established, and half-closed with a FIN sent and/or received
 * (restore/inet.ts puts the FINs back). A server being migrated holds such connections while its clients finish.
 */
export const REPAIRED_TCP_STATES = new Set([TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING]);

/** Whether an inet_sk_entry comes with a tcp-stream image: a repaired state, or a closed connection (it has a peer). */
export function hasTcpStream(state: number, dstPort: number): boolean {
  return REPAIRED_TCP_STATES.has(state) || (state === TCP_CLOSE && dstPort !== 0);
}

/** What one dump knows about inet sockets; lives in CollectContext. */
export interface InetDumpState {
  /** Socket inode -> files.img id. */
  seen: Map<number, number>;
  /** Inodes of the connections in repair mode. */
  repaired: Set<number>;
  /** The helper may hold connections in repair mode: a resume or failure must end it (unlockConnections). */
  locked: boolean;
}

export function newInetState(): InetDumpState {
  return { seen: new Map(), repaired: new Set(), locked: false };
}

/** Which states of an inet socket godwit dumps; undefined when supported, else why not. */
export function unsupportedInetState(what: string, state: number): string | undefined {
  const tcp = what.includes('tcp');
  if (state === TCP_ESTABLISHED || state === TCP_CLOSE || (tcp && (state === TCP_LISTEN || REPAIRED_TCP_STATES.has(state)))) return undefined;
  return `${what} in state ${TCP_STATES[state] ?? state}: not supported yet (only listening, established, half-closed and unconnected sockets)`;
}

/**
 * Before anything is read: every established or half-closed TCP connection of the tree into repair mode, in one helper
 * request, so none of them moves data while the others are dumped.
 */
export async function lockConnections(ctx: CollectContext): Promise<number> {
  const socks: { pid: number; fd: number }[] = [];
  const inodes = new Set<number>();
  for (const p of ctx.tree.processes) {
    if (p.zombie) continue;
    let fds: number[];
    try {
      fds = listProcNumbers(p.pid, 'fd');
    } catch (err) {
      if (isNoEntry(err)) continue;
      throw err;
    }
    for (const fd of fds) {
      const c = classifyFd(p.pid, fd, ctx.sockets);
      if (c.kind !== 'inet' || !c.what.includes('tcp')) continue;
      const ino = Number(c.proc.stat.ino);
      if (inodes.has(ino) || !REPAIRED_TCP_STATES.has(ctx.sockets.inetState(p.pid, ino) ?? TCP_CLOSE)) continue;
      inodes.add(ino);
      socks.push({ pid: p.pid, fd });
    }
  }
  if (!socks.length) return 0;
  ctx.inet.locked = true; // before the request: a partial failure leaves some in repair mode
  await ctx.helper.tcpRepairOn(socks);
  for (const i of inodes) ctx.inet.repaired.add(i);
  return socks.length;
}

/**
 * Ends what lockConnections began. release = false: repair mode off (the tree runs on: --leave-running or a
 * failed dump). release = true: after the tree was killed, the helper only drops its copies, so the sockets
 * close still in repair mode and the peers see nothing (their connection continues on restore).
 */
export async function unlockConnections(helper: Helper, state: InetDumpState, release: boolean): Promise<void> {
  if (!state.locked) return;
  state.locked = false;
  await helper.tcpRepairOff(release);
}

interface SockName {
  port: number;
  /** 1 (IPv4) or 4 (IPv6) u32 words of the address in network byte order, as CRIU stores them. */
  addr: number[];
  scopeId: number;
}

/** getsockname/getpeername bytes after sa_family (SockOpts) -> port and address words. */
export function parseSockName(family: number, raw: Buffer): SockName {
  const words = family === AF_INET6 ? 4 : 1;
  if (raw.length < 2) return { port: 0, addr: new Array(words).fill(0), scopeId: 0 };
  const port = raw.readUInt16BE(0);
  const at = family === AF_INET6 ? 6 : 2;
  const addr: number[] = [];
  for (let i = 0; i < words; i++) addr.push(raw.length >= at + 4 * (i + 1) ? raw.readUInt32LE(at + 4 * i) : 0);
  const scopeId = family === AF_INET6 && raw.length >= 26 ? raw.readUInt32LE(22) : 0;
  return { port, addr, scopeId };
}

/** "127.0.0.1:80" / "[::1]:80" for messages. */
export function formatAddr(family: number, addr: number[], port: number): string {
  const b = Buffer.alloc(addr.length * 4);
  addr.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  if (family === AF_INET) return `${[...b].join('.')}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return `[${groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}]:${port}`;
}

function skOpts(o: SockOpts, boundDev: string): Record<string, unknown> {
  const sec = (us: bigint) => us / 1000000n;
  const usec = (us: bigint) => us % 1000000n;
  const e: Record<string, unknown> = {
    so_sndbuf: o.sndbuf,
    so_rcvbuf: o.rcvbuf,
    so_snd_tmo_sec: sec(o.sndTimeoUsec),
    so_snd_tmo_usec: usec(o.sndTimeoUsec),
    so_rcv_tmo_sec: sec(o.rcvTimeoUsec),
    so_rcv_tmo_usec: usec(o.rcvTimeoUsec),
    reuseaddr: o.reuseaddr,
    so_priority: o.priority,
    so_rcvlowat: o.rcvlowat || 1,
    so_mark: o.mark,
    so_dontroute: o.dontroute,
    so_no_check: o.noCheck,
    so_oobinline: o.oobinline ? 1 : 0,
    so_reuseport: o.reuseport,
    so_broadcast: o.broadcast,
    so_keepalive: o.keepalive,
    so_linger: o.lingerOnoff ? o.linger : 0,
  };
  if (boundDev) e.so_bound_dev = boundDev;
  return e;
}

/** One TCP or UDP socket fd: its inet_sk_entry (once per socket) and, if connected TCP, its tcp-stream image. */
export async function dumpInetFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const ino = Number(c.proc.stat.ino);
  const have = ctx.inet.seen.get(ino);
  if (have !== undefined) return have;
  const where = `pid ${pid} fd ${c.fd}`;
  const opts = await ctx.helper.sockOpts(pid, c.fd);
  const family = opts.domain;
  const proto = opts.protocol;
  const protoName = proto === IPPROTO_TCP ? 'tcp' : proto === IPPROTO_UDP ? 'udp' : proto === IPPROTO_UDPLITE ? 'udplite' : `protocol ${proto}`;
  const what = `${family === AF_INET6 ? 'inet6' : 'inet'} socket (${protoName}${family === AF_INET6 ? '6' : ''})`;
  if ((family !== AF_INET && family !== AF_INET6) || (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP && proto !== IPPROTO_UDPLITE))
    throw new GodwitError(`${where}: socket of family ${family}, protocol ${proto} (${c.link}) cannot be checkpointed yet`);
  const sk = await ctx.helper.inetSock(pid, c.fd);
  const bad = unsupportedInetState(what, sk.state);
  if (bad) throw new GodwitError(`${where}: ${bad}`);
  if (sk.state === TCP_LISTEN && sk.acceptQueue > 0)
    throw new GodwitError(
      `${where}: listening ${what} has ${sk.acceptQueue} connection(s) not accepted yet: not supported (they would be lost); dump again once the application has accepted them`,
    );
  const src = parseSockName(family, opts.boundName);
  const tcp = proto === IPPROTO_TCP;
  // A connection closed both ways keeps its addresses (the application may still ask for them): as CRIU, it is
  // dumped like the half-closed ones and restored by running it through both FINs (restore/inet.ts).
  const closedConn = tcp && sk.state === TCP_CLOSE && parseSockName(family, opts.peerName).port !== 0;
  const connected = sk.state === TCP_ESTABLISHED || (tcp && REPAIRED_TCP_STATES.has(sk.state)) || closedConn;
  const dst = parseSockName(family, connected ? opts.peerName : Buffer.alloc(0));
  if (tcp && connected) {
    const conn = `TCP connection ${formatAddr(family, src.addr, src.port)} -> ${formatAddr(family, dst.addr, dst.port)}`;
    if (closedConn && opts.soErrorPending)
      throw new GodwitError(`${where}: ${conn} was reset (an error is pending on it): not supported (it would come back closed in order)`);
    if (closedConn && !ctx.inet.repaired.has(ino)) {
      // Not in /proc/net/tcp, so lockConnections did not see it; nothing moves on it, repair mode now is enough.
      ctx.inet.locked = true;
      await ctx.helper.tcpRepairOn([{ pid, fd: c.fd }]);
      ctx.inet.repaired.add(ino);
    }
    if (!ctx.inet.repaired.has(ino))
      throw new GodwitError(`${where}: ${conn} was not put into repair mode (it was established after the freeze began?)`);
    const r = await ctx.helper.tcpRepairDump(pid, c.fd);
    // What a closed connection's send queue still holds can never be read or sent (CRIU drops it too).
    if (closedConn) r.outq = Buffer.alloc(0);
    const tse: Record<string, unknown> = {
      inq_len: r.inq.length,
      inq_seq: r.rcvSeq >>> 0,
      outq_len: r.outq.length,
      outq_seq: r.sndSeq >>> 0,
      opt_mask: r.optMask,
      snd_wscale: r.sndWscale,
      mss_clamp: r.mssClamp,
      rcv_wscale: r.rcvWscale,
      cork: sk.cork,
      nodelay: sk.nodelay,
      unsq_len: closedConn ? 0 : r.unsent,
    };
    if (r.timestamp !== undefined) tse.timestamp = r.timestamp >>> 0;
    if (r.window) {
      tse.snd_wl1 = r.window.sndWl1 >>> 0;
      tse.snd_wnd = r.window.sndWnd;
      tse.max_window = r.window.maxWindow;
      tse.rcv_wnd = r.window.rcvWnd;
      tse.rcv_wup = r.window.rcvWup >>> 0;
    }
    ctx.images.add('TCP_STREAM', ino, tse, { inq: r.inq, outq: r.outq });
  }
  const id = ctx.files.add(`inet:${ino}`, (id) => {
    const isk: Record<string, unknown> = {
      id,
      ino,
      family,
      type: opts.type,
      proto,
      state: sk.state,
      src_port: src.port,
      dst_port: dst.port,
      flags: info.flags & ~O_CLOEXEC,
      backlog: sk.state === TCP_LISTEN ? sk.backlog : 0,
      src_addr: src.addr,
      dst_addr: dst.addr,
      fown: fown(),
      opts: skOpts(opts, sk.boundDev),
      ip_opts: { freebind: sk.freebind },
    };
    if (family === AF_INET6) isk.v6only = sk.v6only;
    if (tcp) isk.tcp_opts = { cork: sk.cork, nodelay: sk.nodelay, keepcnt: sk.keepcnt, keepidle: sk.keepidle, keepintvl: sk.keepintvl };
    return { type: FD_TYPES.INETSK, id, isk };
  });
  ctx.inet.seen.set(ino, id);
  return id;
}
