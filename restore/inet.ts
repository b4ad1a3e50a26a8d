/**
 * TCP and UDP sockets, made in the restorer and pulled into tasks like any file (checkpoint/inet.ts writes
 * them). Listening sockets are bound and listen again; UDP sockets are bound and connected; established TCP
 * connections are rebuilt with TCP_REPAIR, as CRIU does:
 *
 *   socket -> TCP_REPAIR on -> bind (repair mode may share the port with the listener) -> sequence numbers of
 *   both queues (the image holds each queue's end: its start is end - length) -> connect (no SYN in repair
 *   mode) -> options (mss, window scale, SACK, timestamps) and the timestamp clock -> refill the receive queue
 *   and the sent part of the send queue -> window (after the queues: the kernel checks it against rcv_nxt)
 *
 * Every connection is rebuilt before any leaves repair mode (a window probe to a peer that does not exist yet
 * would be answered with a reset). A half-closed connection (or a closed one: CLOSE with a peer) then gets its
 * FINs back, as CRIU's libsoccr does: our own with shutdown() (in repair mode with the send queue selected when
 * the peer had acked it: it counts as sent), the peer's as a FIN segment forged from the peer's address through a
 * raw socket, and the peer's ACK of our FIN (FIN_WAIT2, CLOSE) the same way, last. Only once every socket exists:
 * a socket answers the forged FIN with an ACK, which would draw a reset from a port whose socket is not back yet
 * (or closed already). Then repair mode off, the unsent part of the send queue sent normally (our unsent FIN after
 * it), and the remaining options set.
 */
import * as os from 'node:os';
import { GodwitError } from '../util/errors';
import type { RestoreContext } from './context';
import { readEntries, Msg } from './image-files';
import { Batch, runLocal } from './syscalls';
import { addCommonSockOpts } from './sockopts';
import { hasTcpStream, TCP_STATES, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING } from '../checkpoint/inet';

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_RAW = 3;
const IPPROTO_RAW = 255;
const SHUT_WR = 1;
const TCP_INFO = 11;
const TCP_QUICKACK = 12;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_TCP = 6;
const TCP_ESTABLISHED = 1;
const TCP_LISTEN = 10;
const TCP_NO_QUEUE = 0;
const TH_FIN = 0x01;
const TH_ACK = 0x10;

const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_BROADCAST = 6;
const SO_KEEPALIVE = 9;
const SO_LINGER = 13;
const SO_REUSEPORT = 15;
const SO_RCVTIMEO_OLD = 20;
const SO_SNDTIMEO_OLD = 21;
const SO_BINDTODEVICE = 25;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const IPPROTO_IP = 0;
const IP_FREEBIND = 15;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const TCP_NODELAY = 1;
const TCP_CORK = 3;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
const TCP_REPAIR = 19;
const TCP_REPAIR_QUEUE = 20;
const TCP_QUEUE_SEQ = 21;
const TCP_REPAIR_OPTIONS = 22;
const TCP_TIMESTAMP = 24;
const TCP_REPAIR_WINDOW = 29;
const TCP_RECV_QUEUE = 1;
const TCP_SEND_QUEUE = 2;
const TCPOPT_MAXSEG = 2;
const TCPOPT_WINDOW = 3;
const TCPOPT_SACK_PERM = 4;
const TCPOPT_TIMESTAMP = 8;
const TCPI_OPT_TIMESTAMPS = 1;
const TCPI_OPT_SACK = 2;
const TCPI_OPT_WSCALE = 4;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const MSG_DONTWAIT = 0x40;
/** Queue bytes per sendto: the kernel refills a repaired receive queue with one skb of at most 17 pages per call. */
const QUEUE_CHUNK = 64 << 10;
/** Buffer room beyond a queue's bytes while it is refilled (before doubling): headroom for skb overhead. */
const QUEUE_ROOM = 256 << 10;

interface InetSock {
  fileId: number;
  e: Msg;
  ino: number;
  family: number;
  tcp: boolean;
  state: number;
  /** A listener whose port another listener of the image shares: bound with SO_REUSEPORT whatever its own. */
  sharedPort?: boolean;
  /** The TCP_REPAIR state (tcp-stream-INO.img) of an established or half-closed connection. */
  stream?: { tse: Msg; inq: Buffer; outq: Buffer };
  fd?: number;
}

function words(v: unknown): number[] {
  return Array.isArray(v) ? v.map((x) => Number(x) >>> 0) : [];
}

/** struct sockaddr_in / sockaddr_in6 from the image's port and address words (network byte order). */
export function sockaddr(family: number, addrWords: number[], port: number): Buffer {
  if (family === AF_INET) {
    const a = Buffer.alloc(16);
    a.writeUInt16LE(AF_INET, 0);
    a.writeUInt16BE(port, 2);
    a.writeUInt32LE((addrWords[0] ?? 0) >>> 0, 4);
    return a;
  }
  const a = Buffer.alloc(28);
  a.writeUInt16LE(AF_INET6, 0);
  a.writeUInt16BE(port, 2);
  for (let i = 0; i < 4; i++) a.writeUInt32LE((addrWords[i] ?? 0) >>> 0, 8 + 4 * i);
  return a;
}

/** Printable address: "127.0.0.1:80", "[::1]:80". */
export function addrText(family: number, addrWords: number[], port: number): string {
  const b = Buffer.alloc(family === AF_INET ? 4 : 16);
  addrWords.slice(0, b.length / 4).forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  if (family === AF_INET) return `${[...b].join('.')}:${port}`;
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return `[${g.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}]:${port}`;
}

/** The IP address a socket is bound to, as text; undefined for the wildcard address. */
function boundIp(family: number, addrWords: number[]): string | undefined {
  if (addrWords.every((w) => w === 0)) return undefined;
  const b = Buffer.alloc(family === AF_INET ? 4 : 16);
  addrWords.slice(0, b.length / 4).forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  if (family === AF_INET) return [...b].join('.');
  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 address of the host.
  if (b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) return [...b.subarray(12)].join('.');
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(':');
}

function expandV6(a: string): string {
  const [head, tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail !== undefined ? new Array(8 - h.length - t.length).fill('0') : [];
  return [...h, ...fill, ...t].map((x) => parseInt(x, 16).toString(16)).join(':');
}

/** Addresses configured in this network namespace (IPv4 loopback is a whole /8). */
function hostHasAddress(ip: string): boolean {
  if (/^127\./.test(ip)) return true;
  const v6 = ip.includes(':') ? expandV6(ip.split('%')[0]) : undefined;
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) {
      if (v6 ? a.family === 'IPv6' && expandV6(a.address.split('%')[0]) === v6 : a.family === 'IPv4' && a.address === ip) return true;
    }
  return false;
}

/**
 * Preflight: every address a socket was bound to must exist here (else bind fails with EADDRNOTAVAIL half-way
 * through the restore). Returns the problems, one line each.
 */
export function inetProblems(ctx: RestoreContext): string[] {
  const problems: string[] = [];
  const missing = new Map<string, number>();
  for (const f of ctx.set!.files.values()) {
    const e = f.isk as Msg | undefined;
    if (!e) continue;
    const family = Number(e.family);
    if (family !== AF_INET && family !== AF_INET6) {
      problems.push(`inet socket ${e.ino}: address family ${family} is not IPv4 or IPv6`);
      continue;
    }
    if (((e.ip_opts as Msg | undefined)?.freebind as boolean | undefined) === true) continue; // may bind any address
    const ip = boundIp(family, words(e.src_addr));
    if (ip && !hostHasAddress(ip)) missing.set(ip, (missing.get(ip) ?? 0) + 1);
  }
  for (const [ip, n] of missing)
    problems.push(
      `address ${ip}, which ${n} socket(s) of the image are bound to, is not configured on this host: restore in a network namespace that has it, or add it (ip addr add ${ip}/PREFIX dev DEV)`,
    );
  return problems;
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v | 0);
  return b;
}

function setInt(b: Batch, fd: number, level: number, opt: number, v: number, what: string): void {
  b.call('setsockopt', [fd, level, opt, b.data(int32(v)), 4], what);
}

async function local(ctx: RestoreContext, b: Batch, what: string): Promise<bigint[]> {
  return (await runLocal(ctx.restorer!, b, what)).results;
}

function loadSockets(ctx: RestoreContext): InetSock[] {
  const out: InetSock[] = [];
  for (const f of ctx.set!.files.values()) {
    const e = f.isk as Msg | undefined;
    if (!e) continue;
    const s: InetSock = {
      fileId: Number(f.id),
      e,
      ino: Number(e.ino),
      family: Number(e.family),
      tcp: Number(e.proto) === IPPROTO_TCP,
      state: Number(e.state),
    };
    if (s.tcp && hasTcpStream(s.state, Number(e.dst_port ?? 0))) {
      const file = `tcp-stream-${s.ino.toString(16)}.img`;
      const entries = readEntries(ctx.set!.dir, file);
      const tse = entries?.[0];
      if (!tse) throw new GodwitError(`${file} is missing from ${ctx.set!.dir}: the established TCP connection (inet socket ${s.ino}) cannot be restored without it`);
      const q = (tse.extra ?? {}) as { inq?: Buffer; outq?: Buffer };
      s.stream = { tse, inq: q.inq ?? Buffer.alloc(0), outq: q.outq ?? Buffer.alloc(0) };
    }
    out.push(s);
  }
  return out;
}

function describe(s: InetSock): string {
  const src = addrText(s.family, words(s.e.src_addr), Number(s.e.src_port ?? 0));
  if (s.state === TCP_LISTEN) return `${s.tcp ? 'tcp' : 'udp'} listener ${src}`;
  const state = s.state === TCP_ESTABLISHED ? '' : ` (${TCP_STATES[s.state] ?? s.state})`;
  if (s.state === TCP_ESTABLISHED || s.stream) return `${s.tcp ? 'tcp' : 'udp'} ${src} -> ${addrText(s.family, words(s.e.dst_addr), Number(s.e.dst_port ?? 0))}${state}`;
  return `${s.tcp ? 'tcp' : 'udp'} socket ${src}`;
}

/**
 * Where a connection's FINs are (the image counts them in outq_seq / inq_seq, as CRIU): sent = ours is in the
 * send queue, acked = and the peer acked it, received = the peer's was received, oursFirst = ours went first.
 * A closed connection (CLOSE with a peer) has had both, ours second.
 */
function finsOf(state: number): { sent: number; acked: boolean; received: number; oursFirst: boolean } {
  const oursFirst = state === TCP_FIN_WAIT1 || state === TCP_FIN_WAIT2 || state === TCP_CLOSING;
  const sent = oursFirst || state === TCP_LAST_ACK || state === TCP_CLOSE;
  const received = state === TCP_CLOSE_WAIT || state === TCP_LAST_ACK || state === TCP_CLOSING || state === TCP_CLOSE;
  return { sent: sent ? 1 : 0, acked: state === TCP_FIN_WAIT2 || state === TCP_CLOSE, received: received ? 1 : 0, oursFirst };
}

/** One's-complement sum of 16-bit words, for IP and TCP checksums. */
function csum16(parts: Buffer[]): number {
  let sum = 0;
  for (const p of parts) for (let i = 0; i < p.length; i += 2) sum += (p[i] << 8) | (i + 1 < p.length ? p[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The 4 or 16 address bytes of image address words; an IPv4-mapped IPv6 address gives its IPv4 bytes. */
function addrBytes(family: number, addrWords: number[]): Buffer {
  const b = Buffer.alloc(family === AF_INET ? 4 : 16);
  addrWords.slice(0, b.length / 4).forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  if (family === AF_INET6 && b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) return b.subarray(12);
  return b;
}

/**
 * A TCP segment (no payload, no options) from the connection's peer to it, with its IP header, and where to send
 * it: for a raw IPPROTO_RAW socket, which sends the header as given (the kernel fills in the IP checksum).
 */
function peerSegment(s: InetSock, seq: number, ack: number, flags: number): { family: number; packet: Buffer; to: Buffer } {
  const e = s.e;
  const t = s.stream!.tse;
  const ours = addrBytes(s.family, words(e.src_addr));
  const peer = addrBytes(s.family, words(e.dst_addr));
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(Number(e.dst_port ?? 0), 0);
  tcp.writeUInt16BE(Number(e.src_port ?? 0), 2);
  tcp.writeUInt32BE(seq >>> 0, 4);
  tcp.writeUInt32BE(ack >>> 0, 8);
  tcp[12] = 5 << 4;
  tcp[13] = flags;
  // The window the peer advertised, in its units (it scales by our snd_wscale): a segment must not shrink it.
  const wscale = Number(t.opt_mask ?? 0) & TCPI_OPT_WSCALE ? Number(t.snd_wscale ?? 0) : 0;
  tcp.writeUInt16BE(Math.min(0xffff, Math.floor(Number(t.snd_wnd ?? 0xffff) / 2 ** wscale)), 14);
  const v4 = ours.length === 4;
  const pseudo = Buffer.alloc(v4 ? 12 : 40);
  peer.copy(pseudo, 0);
  ours.copy(pseudo, peer.length);
  if (v4) {
    pseudo[9] = IPPROTO_TCP;
    pseudo.writeUInt16BE(tcp.length, 10);
  } else {
    pseudo.writeUInt32BE(tcp.length, 32);
    pseudo[39] = IPPROTO_TCP;
  }
  tcp.writeUInt16BE(csum16([pseudo, tcp]), 16);
  let ip: Buffer;
  if (v4) {
    ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + tcp.length, 2);
    ip.writeUInt16BE(0x4000, 6); // DF
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    peer.copy(ip, 12);
    ours.copy(ip, 16);
  } else {
    ip = Buffer.alloc(40);
    ip.writeUInt32BE(0x60000000, 0);
    ip.writeUInt16BE(tcp.length, 4);
    ip[6] = IPPROTO_TCP;
    ip[7] = 64;
    peer.copy(ip, 8);
    ours.copy(ip, 24);
  }
  const family = v4 ? AF_INET : AF_INET6;
  const to = v4 ? sockaddr(AF_INET, [ours.readUInt32LE(0)], 0) : sockaddr(AF_INET6, [0, 1, 2, 3].map((i) => ours.readUInt32LE(4 * i)), 0);
  return { family, packet: Buffer.concat([ip, tcp]), to };
}

/** socket(), options that must precede bind, bind; for a connection the whole repair sequence. */
async function build(ctx: RestoreContext, s: InetSock): Promise<void> {
  const e = s.e;
  const o = (e.opts as Msg | undefined) ?? {};
  const name = describe(s);
  let b = new Batch();
  b.call('socket', [s.family, Number(e.type ?? SOCK_STREAM) | SOCK_CLOEXEC, Number(e.proto)], `create ${name}`);
  const fd = Number((await local(ctx, b, name))[0]);
  ctx.restorerFds.push(fd);
  s.fd = fd;

  b = new Batch();
  // Bind over sockets of the dumped tree that may linger (the real value is set at the end). Before TCP_REPAIR:
  // SO_REUSEADDR would replace the forced port sharing that repair mode gives.
  setInt(b, fd, SOL_SOCKET, SO_REUSEADDR, 1, `SO_REUSEADDR for ${name}`);
  if (s.stream) setInt(b, fd, IPPROTO_TCP, TCP_REPAIR, 1, `TCP_REPAIR on for ${name}`);
  if (o.so_reuseport || s.sharedPort) setInt(b, fd, SOL_SOCKET, SO_REUSEPORT, 1, `SO_REUSEPORT for ${name}`);
  if (s.family === AF_INET6) setInt(b, fd, IPPROTO_IPV6, IPV6_V6ONLY, e.v6only ? 1 : 0, `IPV6_V6ONLY for ${name}`);
  if ((e.ip_opts as Msg | undefined)?.freebind) setInt(b, fd, IPPROTO_IP, IP_FREEBIND, 1, `IP_FREEBIND for ${name}`);
  if (o.so_bound_dev) {
    const dev = Buffer.from(String(o.so_bound_dev) + '\0');
    b.call('setsockopt', [fd, SOL_SOCKET, SO_BINDTODEVICE, b.data(dev), dev.length], `bind ${name} to device ${o.so_bound_dev}`);
  }
  // The kernel doubles what it is given. While the queues are refilled, room for them at least twice over (skb
  // overhead on top of the bytes, laid out differently than when they arrived); the dumped sizes come back in finish().
  const room = (q: Buffer | undefined) => (q ? q.length + QUEUE_ROOM : 0);
  for (const [opt, v, q] of [[SO_SNDBUFFORCE, o.so_sndbuf, s.stream?.outq], [SO_RCVBUFFORCE, o.so_rcvbuf, s.stream?.inq]] as const) {
    const size = Math.max(Math.floor(Number(v ?? 0) / 2), room(q));
    if (size) setInt(b, fd, SOL_SOCKET, opt, size, `buffer size of ${name}`);
  }
  const src = words(e.src_addr);
  const srcPort = Number(e.src_port ?? 0);
  if (srcPort || src.some((w) => w !== 0)) {
    const sa = sockaddr(s.family, src, srcPort);
    b.call('bind', [fd, b.data(sa), sa.length], `bind ${name} to ${addrText(s.family, src, srcPort)} (is the port taken on this host?)`);
  }
  const dst = sockaddr(s.family, words(e.dst_addr), Number(e.dst_port ?? 0));
  if (s.stream) {
    const t = s.stream.tse;
    const inq = s.stream.inq;
    const outq = s.stream.outq;
    const unsent = Math.min(Number(t.unsq_len ?? 0), outq.length);
    setInt(b, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, `select the send queue of ${name}`);
    // The FINs come back later (putFinsBack, finish): the queues start before them.
    const fin = finsOf(s.state);
    setInt(b, fd, IPPROTO_TCP, TCP_QUEUE_SEQ, (Number(t.outq_seq) - fin.sent - outq.length) | 0, `send sequence of ${name}`);
    setInt(b, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, `select the receive queue of ${name}`);
    setInt(b, fd, IPPROTO_TCP, TCP_QUEUE_SEQ, (Number(t.inq_seq) - fin.received - inq.length) | 0, `receive sequence of ${name}`);
    b.call('connect', [fd, b.data(dst), dst.length], `connect ${name} in repair mode`);
    const mask = Number(t.opt_mask ?? 0);
    const opts: [number, number][] = [[TCPOPT_MAXSEG, Number(t.mss_clamp ?? 0)]];
    if (mask & TCPI_OPT_WSCALE) opts.push([TCPOPT_WINDOW, Number(t.snd_wscale ?? 0) | (Number(t.rcv_wscale ?? 0) << 16)]);
    if (mask & TCPI_OPT_SACK) opts.push([TCPOPT_SACK_PERM, 0]);
    if (mask & TCPI_OPT_TIMESTAMPS) opts.push([TCPOPT_TIMESTAMP, 0]);
    const ob = Buffer.alloc(8 * opts.length);
    opts.forEach(([c, v], i) => {
      ob.writeUInt32LE(c, 8 * i);
      ob.writeUInt32LE(v >>> 0, 8 * i + 4);
    });
    b.call('setsockopt', [fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, b.data(ob), ob.length], `TCP options of ${name}`);
    // The peer checks timestamps against the last one it saw (PAWS): the clock continues where it was.
    if (mask & TCPI_OPT_TIMESTAMPS && t.timestamp !== undefined)
      setInt(b, fd, IPPROTO_TCP, TCP_TIMESTAMP, Number(t.timestamp) | 0, `timestamp clock of ${name}`);
    const chunks: { at: number; len: number }[] = [];
    const refill = (queue: number, data: Buffer, which: string): void => {
      setInt(b, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue, `select the ${which} queue of ${name}`);
      for (let off = 0; off < data.length; off += QUEUE_CHUNK) {
        const part = data.subarray(off, Math.min(off + QUEUE_CHUNK, data.length));
        const r = b.call('sendto', [fd, b.data(Buffer.from(part)), part.length, MSG_DONTWAIT, 0, 0], `refill the ${which} queue of ${name}`);
        chunks.push({ at: r.result, len: part.length });
      }
    };
    refill(TCP_RECV_QUEUE, inq, 'receive');
    refill(TCP_SEND_QUEUE, outq.subarray(0, outq.length - unsent), 'send');
    if (t.rcv_wnd !== undefined) {
      const w = Buffer.alloc(20);
      // rcv_wup was taken past the peer's FIN, which is not back yet (the kernel refuses one beyond rcv_nxt).
      const wup = Number(t.rcv_wup ?? 0) - fin.received;
      const wnd = Number(t.rcv_wnd ?? 0) + fin.received;
      [t.snd_wl1, t.snd_wnd, t.max_window, wnd, wup].forEach((v, i) => w.writeUInt32LE(Number(v ?? 0) >>> 0, 4 * i));
      b.call('setsockopt', [fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, b.data(w), w.length], `window of ${name}`);
    }
    const res = await local(ctx, b, name);
    for (const c of chunks)
      if (Number(res[c.at]) !== c.len)
        throw new GodwitError(`${name}: the kernel took ${res[c.at]} of ${c.len} queued bytes back (buffers smaller than the queue?)`);
    return;
  }
  if (s.state === TCP_LISTEN && s.tcp) b.call('listen', [fd, Number(e.backlog ?? 0) || 128], `listen on ${name}`);
  else if (s.state === TCP_ESTABLISHED) b.call('connect', [fd, b.data(dst), dst.length], `connect ${name}`);
  await local(ctx, b, name);
}

/** TCP_INFO's state of a restorer fd. */
async function tcpState(ctx: RestoreContext, fd: number, name: string): Promise<number> {
  const b = new Batch();
  const info = b.data(Buffer.alloc(8));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(8);
  b.call('getsockopt', [fd, IPPROTO_TCP, TCP_INFO, info, b.data(len)], `TCP_INFO of ${name}`);
  return (await runLocal(ctx.restorer!, b, name)).scratch[info.scratch];
}

/** Sends the peer's segment (seq, ack, flags) to a rebuilt connection, then waits for it to reach state `want`. */
async function fromPeer(ctx: RestoreContext, s: InetSock, b: Batch, seq: number, ack: number, flags: number, what: string, want: number): Promise<void> {
  const name = describe(s);
  const seg = peerSegment(s, seq, ack, flags);
  const raw = b.call('socket', [seg.family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW], `raw socket for ${what} of ${name}`);
  b.call('sendto', [raw, b.data(seg.packet), seg.packet.length, 0, b.data(seg.to), seg.to.length], `send ${what} to ${name}`);
  b.call('close', [raw], `close the raw socket`);
  await local(ctx, b, name);
  // Loopback delivers the segment in the sender's softirq, normally before sendto returns; wait a little if not.
  let state = await tcpState(ctx, s.fd!, name);
  for (let i = 0; state !== want && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 20));
    state = await tcpState(ctx, s.fd!, name);
  }
  if (state !== want)
    throw new GodwitError(`${name}: in state ${TCP_STATES[state] ?? state} after ${what}, not ${TCP_STATES[want]} (a firewall dropping forged loopback segments?)`);
  // A FIN puts the receiver in delayed-ACK mode: its ACK now (TCP_QUICKACK sends a pending one), not once an
  // in-image peer has closed (the ACK would then draw a reset from the closed port).
  if (flags & TH_FIN) {
    const q = new Batch();
    setInt(q, s.fd!, IPPROTO_TCP, TCP_QUICKACK, 1, `ACK the FIN now on ${name}`);
    await local(ctx, q, name);
  }
}

/** Our FIN as sent (shutdown with the send queue selected), for a peer that acked it. */
function ourFinSent(b: Batch, s: InetSock, name: string): void {
  setInt(b, s.fd!, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, `select the send queue of ${name}`);
  b.call('shutdown', [s.fd!, SHUT_WR], `queue the FIN of ${name} as sent`);
  setInt(b, s.fd!, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE, `no queue selected on ${name}`);
}

/**
 * A half-closed or closed connection's FINs, every socket being rebuilt (see the top), in the order they came:
 * the peer's FIN, our FIN when the peer acked it. Our FIN not acked yet waits for finish(), behind the unsent
 * bytes; the peer's ACK of ours for ackOurFin().
 */
async function putFinsBack(ctx: RestoreContext, s: InetSock): Promise<void> {
  const fin = finsOf(s.state);
  if (!s.stream || (!fin.acked && !fin.received)) return;
  const t = s.stream.tse;
  const name = describe(s);
  const b = new Batch();
  if (fin.acked && fin.oursFirst) ourFinSent(b, s, name);
  if (fin.received) {
    const sndUna = Number(t.outq_seq) - fin.sent - s.stream.outq.length;
    await fromPeer(ctx, s, b, Number(t.inq_seq) - 1, sndUna, TH_FIN | TH_ACK, "the peer's FIN", TCP_CLOSE_WAIT);
    if (fin.acked && !fin.oursFirst) {
      const b2 = new Batch();
      ourFinSent(b2, s, name);
      await local(ctx, b2, name);
    }
  } else await local(ctx, b, name);
}

/**
 * The peer's ACK of our FIN (FIN_WAIT2, CLOSE), once every connection has its FINs: a connection that closes
 * leaves the port's table, and a peer's reply to the segments above would then draw a reset.
 */
async function ackOurFin(ctx: RestoreContext, s: InetSock): Promise<void> {
  const fin = finsOf(s.state);
  if (!s.stream || !fin.acked) return;
  const t = s.stream.tse;
  // A peer in the image acked it already, answering its own FIN coming back: ours on top would find the port
  // closed and draw a reset.
  if ((await tcpState(ctx, s.fd!, describe(s))) === s.state) return;
  await fromPeer(ctx, s, new Batch(), Number(t.inq_seq), Number(t.outq_seq), TH_ACK, "the peer's ACK of our FIN", s.state);
}

/** Repair mode off, the unsent bytes sent, then the options that may change behaviour from now on. */
async function finish(ctx: RestoreContext, s: InetSock): Promise<void> {
  const e = s.e;
  const o = (e.opts as Msg | undefined) ?? {};
  const t = (e.tcp_opts as Msg | undefined) ?? {};
  const fd = s.fd!;
  const name = describe(s);
  const b = new Batch();
  let unsentAt = -1;
  let unsentLen = 0;
  if (s.tcp && (t.cork || s.stream?.tse.cork)) setInt(b, fd, IPPROTO_TCP, TCP_CORK, 1, `TCP_CORK on ${name}`);
  if (s.stream)
    for (const [opt, v] of [[SO_SNDBUFFORCE, o.so_sndbuf], [SO_RCVBUFFORCE, o.so_rcvbuf]] as const)
      if (v) setInt(b, fd, SOL_SOCKET, opt, Math.floor(Number(v) / 2), `buffer size of ${name}`);
  if (s.stream) {
    setInt(b, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, 0, `no queue selected on ${name}`);
    setInt(b, fd, IPPROTO_TCP, TCP_REPAIR, 0, `TCP_REPAIR off for ${name}`);
    const outq = s.stream.outq;
    const unsent = Math.min(Number(s.stream.tse.unsq_len ?? 0), outq.length);
    if (unsent) {
      const part = Buffer.from(outq.subarray(outq.length - unsent));
      unsentAt = b.call('sendto', [fd, b.data(part), part.length, MSG_DONTWAIT, 0, 0], `send the unsent bytes of ${name}`).result;
      unsentLen = part.length;
    }
    // Our FIN not acked yet: after the bytes it follows. (CLOSING comes back as LAST_ACK: the same to the
    // application, and both end once the peer acks the FIN.)
    const fin = finsOf(s.state);
    if (fin.sent && !fin.acked) b.call('shutdown', [fd, SHUT_WR], `send the FIN of ${name} again`);
  }
  setInt(b, fd, SOL_SOCKET, SO_REUSEADDR, o.reuseaddr ? 1 : 0, `SO_REUSEADDR of ${name}`);
  // A listener may drop SO_REUSEPORT once bound, and stays in the port's group (zdtm socket-tcp-reuseport).
  if (s.sharedPort && !o.so_reuseport) setInt(b, fd, SOL_SOCKET, SO_REUSEPORT, 0, `SO_REUSEPORT of ${name}`);
  if (o.so_keepalive) setInt(b, fd, SOL_SOCKET, SO_KEEPALIVE, 1, `SO_KEEPALIVE on ${name}`);
  if (o.so_broadcast) setInt(b, fd, SOL_SOCKET, SO_BROADCAST, 1, `SO_BROADCAST on ${name}`);
  addCommonSockOpts(b, fd, o, name);
  if (o.so_linger) {
    const l = Buffer.alloc(8);
    l.writeInt32LE(1, 0);
    l.writeInt32LE(Number(o.so_linger), 4);
    b.call('setsockopt', [fd, SOL_SOCKET, SO_LINGER, b.data(l), 8], `SO_LINGER of ${name}`);
  }
  for (const [opt, sec, usec] of [
    [SO_SNDTIMEO_OLD, o.so_snd_tmo_sec, o.so_snd_tmo_usec],
    [SO_RCVTIMEO_OLD, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec],
  ] as const) {
    const sv = BigInt((sec as bigint | number | undefined) ?? 0);
    const uv = BigInt((usec as bigint | number | undefined) ?? 0);
    if (!sv && !uv) continue;
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(sv, 0);
    tv.writeBigInt64LE(uv, 8);
    b.call('setsockopt', [fd, SOL_SOCKET, opt, b.data(tv), 16], `timeout of ${name}`);
  }
  if (s.tcp) {
    if (t.nodelay || s.stream?.tse.nodelay) setInt(b, fd, IPPROTO_TCP, TCP_NODELAY, 1, `TCP_NODELAY on ${name}`);
    if (t.keepidle) setInt(b, fd, IPPROTO_TCP, TCP_KEEPIDLE, Number(t.keepidle), `TCP_KEEPIDLE of ${name}`);
    if (t.keepintvl) setInt(b, fd, IPPROTO_TCP, TCP_KEEPINTVL, Number(t.keepintvl), `TCP_KEEPINTVL of ${name}`);
    if (t.keepcnt) setInt(b, fd, IPPROTO_TCP, TCP_KEEPCNT, Number(t.keepcnt), `TCP_KEEPCNT of ${name}`);
  }
  if (Number(e.flags ?? 0) & O_NONBLOCK) b.call('fcntl', [fd, F_SETFL, O_NONBLOCK], `make ${name} non-blocking`);
  const res = await local(ctx, b, name);
  if (unsentAt >= 0 && Number(res[unsentAt]) !== unsentLen)
    throw new GodwitError(`${name}: only ${res[unsentAt]} of ${unsentLen} unsent bytes could be queued again`);
}

/** Every inet socket of the image, as restorer fds in ctx.objects (files.img id -> fd). */
export async function createInetSockets(ctx: RestoreContext): Promise<void> {
  const socks = loadSockets(ctx);
  if (!socks.length) return;
  // Listeners sharing a port were bound with SO_REUSEPORT (the application may have cleared it since): all of
  // them get it for bind, else the second finds the port taken.
  const listeners = new Map<number, InetSock[]>();
  for (const s of socks)
    if (s.tcp && s.state === TCP_LISTEN) {
      const port = Number(s.e.src_port ?? 0);
      listeners.set(port, [...(listeners.get(port) ?? []), s]);
    }
  for (const group of listeners.values())
    if (group.length > 1 && group.some((s) => (s.e.opts as Msg | undefined)?.so_reuseport))
      for (const s of group) s.sharedPort = true;
  // Listeners first: connections accepted from them bind to the same port (allowed in repair mode).
  const order = [...socks.filter((s) => s.state === TCP_LISTEN), ...socks.filter((s) => s.state !== TCP_LISTEN)];
  for (const s of order) await build(ctx, s);
  for (const s of order) await putFinsBack(ctx, s);
  // The ACKs those segments drew from peers in the image go through the loopback softirq, which may lag behind:
  // let them land before ackOurFin looks at what is still unacked.
  if (order.some((s) => s.stream && finsOf(s.state).acked)) await new Promise((r) => setTimeout(r, 50));
  for (const s of order) await ackOurFin(ctx, s);
  for (const s of order) {
    await finish(ctx, s);
    ctx.objects.set(s.fileId, s.fd!);
  }
}
