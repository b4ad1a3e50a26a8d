/**
 * Unix sockets: socketpairs, listening and connected sockets whose peers are in the dumped tree, with the
 * data queued for reading (sk-queues.img, one packet entry per datagram, one for a stream's whole queue).
 * Connections not accepted yet are kept as their own entries (dumpEmbryo). What cannot be restored faithfully
 * is refused with the pid and fd: connections to peers outside the tree (but for datagram sockets connected to a
 * named one: dumpExternalPeer), unaccepted connections with queued data, fds in flight (SCM_RIGHTS).
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import type { UnixSock } from '../native/helper';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

const O_RDWR = 2;

export interface UnixFd {
  pid: number;
  fd: number;
  inode: number;
  fileId: number;
  peer: number;
  /** A listener: its address and how many connections wait in its queue. */
  listenName?: Buffer;
  pending?: number;
  /** A client whose connection the listener at this address has not accepted yet. */
  unacceptedBy?: Buffer;
  /** SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET; its own name; datagrams queued for it (checkUnixPeers). */
  type: number;
  name: Buffer;
  queued: number;
}

const TCP_LISTEN = 10;
const TCP_ESTABLISHED = 1;
const TCP_CLOSE = 7;
const SOCK_DGRAM = 2;
const SK_SHUTDOWN = ['NONE', 'READ', 'WRITE', 'BOTH'];

export async function dumpUnixFd(
  ctx: CollectContext,
  pid: number,
  c: FdClass,
  info: ProcFdInfo,
  seenFds: UnixFd[],
): Promise<number> {
  const inode = Number(c.proc.stat.ino);
  const have = ctx.unixSeen.get(inode);
  if (have !== undefined) {
    // Another fd of a socket seen already: the same peer; listener and unaccepted-connection counts stay the first's.
    const first = seenFds.find((u) => u.inode === inode);
    seenFds.push({ pid, fd: c.fd, inode, fileId: have, peer: first?.peer ?? 0, type: first?.type ?? 0, name: first?.name ?? Buffer.alloc(0), queued: 0 });
    return have;
  }
  const where = `unix socket fd ${c.fd} of pid ${pid} (inode ${inode})`;
  const [diag] = await ctx.helper.unixDiag([BigInt(inode)], pid);
  if (!diag) throw new GodwitError(`${where}: the kernel's socket diag does not know it`);
  // Connected to a connection its listener has not accepted yet (that one has no inode: peer 0, unlike a
  // socket whose peer is gone, which is shut down both ways): its address is the listener's.
  const embryoOf =
    diag.type !== SOCK_DGRAM && diag.state === TCP_ESTABLISHED && !diag.peerInode && !diag.shutdown
      ? unixName((await ctx.helper.peerName(pid, c.fd)).subarray(2))
      : undefined;
  if (embryoOf?.length && diag.wqlen > 0)
    throw new GodwitError(
      `${where}: it sent ${diag.wqlen} byte(s) into a connection ${printable(embryoOf)} has not accepted yet, which cannot be read without accepting it: not supported yet; let the application accept it first`,
    );
  const opts = await ctx.helper.sockOpts(pid, c.fd);
  // A listener's queue holds connections, not data; an unconnected stream socket has none (recvmsg: EINVAL).
  const noQueue = diag.state === TCP_LISTEN || (diag.type !== SOCK_DGRAM && diag.state === TCP_CLOSE);
  const queue = noQueue ? { packets: [], truncated: false } : await ctx.helper.peekSocket(pid, c.fd);
  if (queue.truncated) throw new GodwitError(`${where}: its receive queue is larger than the helper can peek`);
  const passed = queue.packets.reduce((n, p) => n + p.passedFds, 0);
  if (passed) throw new GodwitError(`${where}: ${passed} fd(s) in flight (SCM_RIGHTS) in its queue cannot be dumped`);
  const flags = info.flags & ~O_CLOEXEC;
  const file = socketFile(pid, diag, where);
  const sec = (us: bigint) => us / 1000000n;
  const usec = (us: bigint) => us % 1000000n;
  const id = ctx.files.add(`unix:${inode}`, (id) => {
    const usk: Record<string, unknown> = {
      id,
      ino: inode,
      type: diag.type,
      state: diag.state,
      flags,
      uflags: 0,
      backlog: diag.state === TCP_LISTEN ? diag.wqlen : 0,
      peer: Number(diag.peerInode),
      fown: fown(),
      opts: {
        so_sndbuf: opts.sndbuf,
        so_rcvbuf: opts.rcvbuf,
        so_snd_tmo_sec: sec(opts.sndTimeoUsec),
        so_snd_tmo_usec: usec(opts.sndTimeoUsec),
        so_rcv_tmo_sec: sec(opts.rcvTimeoUsec),
        so_rcv_tmo_usec: usec(opts.rcvTimeoUsec),
        reuseaddr: opts.reuseaddr,
        so_priority: opts.priority,
        so_rcvlowat: opts.rcvlowat || 1,
        so_mark: opts.mark,
        so_dontroute: opts.dontroute,
        so_no_check: opts.noCheck,
        so_oobinline: opts.oobinline ? 1 : 0,
        so_passcred: opts.passcred,
        so_passsec: opts.passsec,
        so_reuseport: opts.reuseport,
        so_broadcast: opts.broadcast,
        so_keepalive: opts.keepalive,
        so_linger: opts.lingerOnoff ? opts.linger : 0,
      },
      name: unixName(diag.name),
    };
    if (diag.shutdown) usk.shutdown = Math.min(diag.shutdown, 3);
    if (file.perms) usk.file_perms = file.perms;
    if (file.dir) usk.name_dir = file.dir;
    return { type: FD_TYPES.UNIXSK, id, usk };
  });
  ctx.unixSeen.set(inode, id);
  for (const p of queue.packets) {
    const pe: Record<string, unknown> = { id_for: id, length: p.data.length };
    // A datagram's sender address is what recvfrom() gives for it (zdtm socket_snd_addr); present even when
    // empty, so that restore tells an unnamed sender from an image that does not say (CRIU's).
    if (diag.type === SOCK_DGRAM) pe.addr = unixName(p.addr);
    ctx.images.add('SK_QUEUES', undefined, pe, p.data);
  }
  const self: UnixFd = {
    pid, fd: c.fd, inode, fileId: id, peer: Number(diag.peerInode), type: diag.type, name: unixName(diag.name), queued: queue.packets.length,
  };
  if (diag.state === TCP_LISTEN) Object.assign(self, { listenName: unixName(diag.name), pending: diag.pendingConnections.length });
  if (embryoOf?.length) {
    dumpEmbryo(ctx, diag, embryoOf);
    self.unacceptedBy = embryoOf;
  }
  seenFds.push(self);
  return id;
}

/**
 * Where a socket's path name lives: a relative name was resolved against the binder's cwd at bind() time, and
 * restore binds and connects from some other directory, so it needs that directory (name_dir). The holder's cwd
 * is taken when the file there is this socket's (same inode as diag says) or no longer exists (a removed socket
 * file: made again where it was); another file there means the process moved since bind(), which is refused
 * rather than guessed. Also the file's mode and owner (bind() makes it with the umask, root-owned at restore),
 * read through the task's root or cwd while the file is still this socket's.
 */
function socketFile(pid: number, diag: UnixSock, where: string): { perms?: { mode: number; uid: number; gid: number }; dir?: string } {
  const name = unixName(diag.name);
  if (!name.length || name[0] === 0) return {};
  const rel = name[0] !== 0x2f; // '/'
  const out: { perms?: { mode: number; uid: number; gid: number }; dir?: string } = {};
  if (rel) out.dir = fs.readlinkSync(`/proc/${pid}/cwd`, 'latin1').replace(/ \(deleted\)$/, '') || '/';
  const at = `/proc/${pid}/${rel ? 'cwd/' : 'root'}${name.toString('latin1')}`;
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(at, { bigint: true });
  } catch {
    return out; // removed since bind(): nothing to carry
  }
  if (!diag.vfsIno || !st.isSocket() || st.ino !== diag.vfsIno) {
    if (rel && diag.vfsIno)
      throw new GodwitError(
        `${where}: bound to the relative name ${name.toString('latin1')}, but ${out.dir}/${name.toString('latin1')} is another file: the process changed directory since bind(), so where its name lives is unknown: not supported`,
      );
    return out;
  }
  out.perms = { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid) };
  return out;
}

/**
 * A connection waiting in a listener's queue (connect() done, accept() not yet): a socket no fd holds and with no
 * inode, named as its listener, whose peer is the connecting socket `client`. It gets a files.img entry of its
 * own (ino 0) that no fdinfo refers to, which is how restore knows to connect the client to the listener again
 * and leave the connection unaccepted. checkUnixPeers matches these with the listeners' pending counts.
 */
function dumpEmbryo(ctx: CollectContext, client: UnixSock, name: Buffer): void {
  ctx.files.add(undefined, (id) => ({
    type: FD_TYPES.UNIXSK,
    id,
    usk: {
      id,
      ino: 0,
      type: client.type,
      state: TCP_ESTABLISHED,
      flags: O_RDWR,
      uflags: 0,
      backlog: 0,
      peer: Number(client.inode),
      fown: fown(),
      opts: NO_OPTS,
      name,
    },
  }));
}

/** The options of an entry that stands for a socket no fd of the tree holds (sk_opts_entry's required fields). */
const NO_OPTS = { so_sndbuf: 0, so_rcvbuf: 0, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n };

const printable = (n: Buffer) => (n.length && n[0] === 0 ? `@${n.subarray(1).toString()}` : n.toString());

/**
 * A path name as the kernel reports it may end with the NUL that bind() was given; CRIU stores the path
 * without it. Abstract names (first byte NUL) are kept byte for byte.
 */
export function unixName(name: Buffer): Buffer {
  if (name.length > 0 && name[0] !== 0) {
    const nul = name.indexOf(0);
    if (nul >= 0) return name.subarray(0, nul);
  }
  return name;
}

/**
 * After all processes: every connected socket's peer must be a socket of the tree, or a named datagram socket
 * outside it (dumpExternalPeer).
 */
export async function checkUnixPeers(ctx: CollectContext, fds: UnixFd[]): Promise<void> {
  const inodes = new Set(fds.map((u) => u.inode));
  // Unaccepted connections: every one a listener of the tree holds must come from a socket of the tree, and
  // every such socket must be waiting on a listener of the tree.
  const clients = new Map<string, number>();
  for (const u of fds) if (u.unacceptedBy) clients.set(u.unacceptedBy.toString('latin1'), (clients.get(u.unacceptedBy.toString('latin1')) ?? 0) + 1);
  const seen = new Set<number>();
  for (const u of fds) {
    if (u.pending === undefined || seen.has(u.inode)) continue;
    seen.add(u.inode);
    const ours = clients.get(u.listenName!.toString('latin1')) ?? 0;
    clients.delete(u.listenName!.toString('latin1'));
    if (ours !== u.pending)
      throw new GodwitError(
        `unix socket fd ${u.fd} of pid ${u.pid} (inode ${u.inode}, listening on ${printable(u.listenName!)}) holds ${u.pending} unaccepted connection(s), ${u.pending - ours} of them from outside the dumped tree: not supported (dump the connecting processes too, or let the application accept them first)`,
      );
  }
  for (const name of clients.keys()) {
    const u = fds.find((x) => x.unacceptedBy?.toString('latin1') === name)!;
    throw new GodwitError(
      `unix socket fd ${u.fd} of pid ${u.pid} (inode ${u.inode}) waits to be accepted by ${printable(u.unacceptedBy!)}, a listener outside the dumped tree: not supported (dump its process too)`,
    );
  }
  for (const u of fds) if (u.peer && !inodes.has(u.peer)) await dumpExternalPeer(ctx, u);
}

const USK_EXTERN = 1;
/** The names the kernel gives at autobind (bind() with no name, or sending unbound with SO_PASSCRED): "\0" and five hex digits. */
const AUTOBIND_NAME = /^\0[0-9a-f]{5}$/;
const TYPE_NAMES: Record<number, string> = { 1: 'stream', 2: 'datagram', 5: 'seqpacket' };

/**
 * A datagram socket connected to a socket outside the tree (a syslog client's /dev/log, whose receiver is
 * journald or rsyslog): nothing of that connection is state but the peer's name, which restore connects to again
 * (restore/sockets.ts connectExternal). The peer gets an entry of its own as CRIU writes it for --ext-unix-sk
 * (uflags USK_EXTERN, the peer's inode and name, listening state, no fd), once however many sockets of the tree
 * are connected to it. What a reconnection cannot give back is refused: a stream or seqpacket connection (its
 * state lives in the peer too), a peer without a name to reach it by, or with one that does not stay its own
 * (an autobind name) or whose place is unknown (relative), and datagrams from the peer queued for a socket with
 * no name (only the peer could send them again). Datagrams the tree sent to the peer are the peer's.
 */
async function dumpExternalPeer(ctx: CollectContext, u: UnixFd): Promise<void> {
  const where = `unix socket fd ${u.fd} of pid ${u.pid} (inode ${u.inode})`;
  if (u.type !== SOCK_DGRAM)
    throw new GodwitError(
      `${where} is a ${TYPE_NAMES[u.type] ?? `type ${u.type}`} connection to socket ${u.peer} outside the dumped tree, whose end of the connection cannot be carried: not supported (dump the peer's process too)`,
    );
  // The socket diag lists the sockets of one network namespace: a peer bound by path may live in another, whose
  // name getpeername gives all the same.
  const [peer] = await ctx.helper.unixDiag([BigInt(u.peer)], u.pid);
  const peerName = unixName(peer ? peer.name : (await ctx.helper.peerName(u.pid, u.fd)).subarray(2));
  const outside = `${where} is a datagram socket connected to socket ${u.peer} outside the dumped tree`;
  if (!peerName.length)
    throw new GodwitError(`${outside}, which has no name (a socketpair half): restore could not connect to it again: not supported (dump the peer's process too)`);
  if (AUTOBIND_NAME.test(peerName.toString('latin1')))
    throw new GodwitError(
      `${outside}, whose name ${printable(peerName)} is one the kernel gave it (autobind): after restore another socket may hold it: not supported (bind the peer to a name of its own, or dump its process too)`,
    );
  if (peerName[0] !== 0 && peerName[0] !== 0x2f)
    throw new GodwitError(`${outside}, bound to the relative name ${printable(peerName)}, which directory it lives in is unknown: not supported (bind the peer to an absolute path)`);
  if (u.queued && !u.name.length)
    throw new GodwitError(
      `${where}: ${u.queued} datagram(s) from its peer ${printable(peerName)} outside the dumped tree wait in its receive queue, and it has no name, so after restore nothing but that peer could queue them again: not supported yet (let the application read them first)`,
    );
  ctx.files.add(`unix-external:${u.peer}`, (id) => ({
    type: FD_TYPES.UNIXSK,
    id,
    usk: { id, ino: u.peer, type: SOCK_DGRAM, state: TCP_LISTEN, flags: 0, uflags: USK_EXTERN, backlog: 0, peer: 0, fown: fown(), opts: NO_OPTS, name: peerName },
  }));
}


export { SK_SHUTDOWN };
