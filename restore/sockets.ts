/**
 * Unix sockets, made in the restorer and pulled into tasks like any file: listeners bound and listening,
 * connected stream pairs re-made by connecting to their listener (so both sides keep their names) or as a
 * socketpair when nameless, datagram sockets bound and connected as they were (to a socket outside the tree by
 * its name, after their queues are refilled: connectExternal), buffer sizes, then the queued data sent again from
 * each receiver's peer (datagram boundaries kept), then shutdowns.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GodwitError, SysError } from '../util/errors';
import { RestoreContext, treePath } from './context';
import { Msg } from './image-files';
import { Batch, runLocal } from './syscalls';
import { addCommonSockOpts } from './sockopts';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const TCP_LISTEN = 10;
const TCP_ESTABLISHED = 1;
const SOL_SOCKET = 1;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const AT_FDCWD = -100;
const MSG_DONTWAIT = 0x40;
const AT_SYMLINK_NOFOLLOW = 0x100;
const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const ENOENT = 2;

interface Sock {
  fileId: number;
  e: Msg;
  ino: number;
  peer: number;
  name: Buffer;
  type: number;
  /** The directory a relative path name was bound in (name_dir): where calls that use the name run. */
  dir?: string;
  fd?: number;
}

/**
 * Runs `body`'s calls with the restorer's cwd at `dir` and returns to it after: a relative socket name is
 * resolved against the cwd of whoever binds or connects, and the restorer's own cwd is the host root, which its
 * host paths rely on (native/src/restore/main.c). A call of `body` that fails aborts the restore (the restorer
 * goes with it), so the return is only needed on success.
 */
function inDir(b: Batch, dir: string | undefined, body: () => void): void {
  if (!dir) return body();
  const back = b.call('openat', [AT_FDCWD, b.str('.'), O_PATH | O_DIRECTORY | O_CLOEXEC], "hold the restorer's cwd");
  b.call('chdir', [b.str(dir)], `enter ${dir}, where relative socket names were bound`);
  body();
  b.call('fchdir', [back], "return to the restorer's cwd");
  b.call('close', [back], "close the restorer's cwd");
}

/** NAME as a path the restored tree sees (relative to the directory it was bound in), for Node's own looks. */
const namePath = (s: Sock, name: string) => (s.dir ? path.join(s.dir, name) : name);

function sockaddr(name: Buffer): Buffer {
  const abstract = name.length > 0 && name[0] === 0;
  const a = Buffer.alloc(2 + name.length + (abstract ? 0 : 1));
  a.writeUInt16LE(AF_UNIX, 0);
  name.copy(a, 2);
  return a;
}

async function local(ctx: RestoreContext, b: Batch, what: string): Promise<bigint[]> {
  return (await runLocal(ctx.restorer!, b, what)).results;
}

async function newSocket(ctx: RestoreContext, s: Sock): Promise<number> {
  const b = new Batch();
  b.call('socket', [AF_UNIX, s.type | SOCK_CLOEXEC, 0], `create unix socket ${s.ino}`);
  const fd = Number((await local(ctx, b, 'unix socket'))[0]);
  ctx.restorerFds.push(fd);
  s.fd = fd;
  return fd;
}

async function bindTo(ctx: RestoreContext, s: Sock): Promise<void> {
  const b = new Batch();
  let unlink: { result: number } | undefined;
  const p = s.name.toString();
  const named = s.name.length > 0 && s.name[0] !== 0;
  const stale = named && fs.existsSync(treePath(ctx, namePath(s, p))) && fs.statSync(treePath(ctx, namePath(s, p))).isSocket();
  inDir(b, named ? s.dir : undefined, () => {
    // A socket file left by the dumped process (it is still bound there) must go before binding again; one
    // gone by now (removed since Node looked) is as good.
    if (stale) unlink = b.call('unlinkat', [AT_FDCWD, b.str(p), 0], `remove the stale socket file ${p}`, { allowFail: true });
    b.call('bind', [s.fd!, b.data(sockaddr(s.name)), sockaddr(s.name).length], `bind unix socket ${s.ino} to ${printable(s.name)}`);
    const perms = s.e.file_perms as Msg | undefined;
    if (perms && named) {
      // bind() made the file with the restorer's umask and owner: give it the dumped ones (owner first: chown
      // clears set-id bits)
      b.call('fchownat', [AT_FDCWD, b.str(p), Number(perms.uid), Number(perms.gid), AT_SYMLINK_NOFOLLOW], `give socket file ${p} its owner`);
      b.call('fchmodat', [AT_FDCWD, b.str(p), Number(perms.mode) & 0o7777], `give socket file ${p} its mode`);
    }
  });
  const r = await local(ctx, b, 'unix socket');
  const u = unlink ? Number(r[unlink.result]) : 0;
  if (u < 0 && -u !== ENOENT)
    throw new SysError({ errno: -u, syscall: 'unlinkat', what: `unix socket: remove the stale socket file ${namePath(s, p)}` });
}

/**
 * Connections a listener had not accepted (checkpoint/sockets.ts dumpEmbryo): entries no fd refers to, in
 * queue order. Each one's peer connects to the listener again and the connection is left in its queue; the
 * entry is marked made (fd -1) so nothing else creates it.
 */
async function connectEmbryos(ctx: RestoreContext, socks: Sock[], byIno: Map<number, Sock>, listeners: Sock[]): Promise<void> {
  const used = new Set(ctx.set!.tasks.flatMap((t) => t.fds.map((f) => Number(f.id))));
  for (const e of socks) {
    if (used.has(e.fileId) || e.ino !== 0) continue;
    const listener = listeners.find((l) => l.name.length && l.name.equals(e.name) && l.type === e.type);
    const client = byIno.get(e.peer);
    if (!listener || !client || client.fd !== undefined)
      throw new GodwitError(`unix socket ${e.ino} is held by no fd and is not a connection waiting on a listener of the image: the image is inconsistent`);
    await newSocket(ctx, client);
    if (client.name.length) await bindTo(ctx, client);
    const b = new Batch();
    inDir(b, listener.dir, () => {
      b.call('connect', [client.fd!, b.data(sockaddr(listener.name)), sockaddr(listener.name).length], `connect socket ${client.ino} to ${printable(listener.name)} (left unaccepted)`);
    });
    await local(ctx, b, 'unix socket');
    e.fd = -1;
  }
}

/** A fresh socket (or T, a socket made for it) sends DATA to RCV's name and is closed. */
function sendFromTemp(b: Batch, rcv: Sock, data: Buffer, t?: number): void {
  const sk = t ?? b.call('socket', [AF_UNIX, rcv.type | SOCK_CLOEXEC, 0], 'a socket to requeue data with');
  inDir(b, rcv.dir, () => {
    b.call('sendto', [sk, b.data(data), data.length, MSG_DONTWAIT, b.data(sockaddr(rcv.name)), sockaddr(rcv.name).length], `requeue ${data.length} bytes for socket ${rcv.ino}`);
  });
  b.call('close', [sk], 'close it');
}

/**
 * A datagram queued for RCV whose sender address the image has (FROM, empty: unnamed): recvfrom() must give it
 * again (zdtm socket_snd_addr). Sent by the socket of the image bound to that name when there is one (without
 * an address if it is connected to RCV), else by a temporary socket bound to the name for the time of the
 * send (a path name's file removed after; a relative one bound in a directory of its own, since only the bytes
 * of the name travel with the datagram), else unnamed. False: nothing better than the peer can send it (RCV
 * has no name to send to, or RCV is connected: it takes datagrams from its peer alone, unix_may_send); the
 * caller does.
 */
async function requeueFrom(ctx: RestoreContext, rcv: Sock, data: Buffer, from: Buffer, socks: Sock[], stand?: number): Promise<boolean> {
  const what = `requeue ${data.length} bytes for socket ${rcv.ino}`;
  const b = new Batch();
  if (!from.length) {
    // The stand-in, or the peer (of a connected RCV: then nameless itself, or FROM would name it): as it was.
    if (stand !== undefined || !rcv.name.length || rcv.peer) return false;
    sendFromTemp(b, rcv, data);
    await local(ctx, b, 'unix socket queue');
    return true;
  }
  const named = socks.find((x) => x.type === rcv.type && x.fd !== undefined && x.fd >= 0 && x.name.equals(from));
  if (named && named.peer === rcv.ino) {
    b.call('sendto', [named.fd!, b.data(data), data.length, MSG_DONTWAIT, 0, 0], what);
    await local(ctx, b, 'unix socket queue');
    return true;
  }
  if (!rcv.name.length) {
    ctx.warnings.push({ pid: 0, message: `unix socket ${rcv.ino}: a datagram from ${printable(from)} comes back from its peer's address (it has no name to be sent to)` });
    return false;
  }
  if (rcv.peer && named?.ino !== rcv.peer) {
    ctx.warnings.push({ pid: 0, message: `unix socket ${rcv.ino}: a datagram from ${printable(from)} comes back from its peer's address (it is connected: only its peer can send to it now)` });
    return false;
  }
  if (named) {
    inDir(b, rcv.dir, () => {
      b.call('sendto', [named.fd!, b.data(data), data.length, MSG_DONTWAIT, b.data(sockaddr(rcv.name)), sockaddr(rcv.name).length], what);
    });
    await local(ctx, b, 'unix socket queue');
    return true;
  }
  // The sender is gone: a temporary socket takes its name if that is free.
  const isPath = from[0] !== 0;
  const relative = isPath && from[0] !== 0x2f; // '/'
  let dir: string | undefined;
  if (relative && !ctx.fileRoot) dir = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-sk-'));
  const free = !isPath || (relative ? dir !== undefined : !fs.existsSync(treePath(ctx, from.toString())));
  try {
    const t = b.call('socket', [AF_UNIX, rcv.type | SOCK_CLOEXEC, 0], 'a socket to requeue data with');
    let bound: { result: number } | undefined;
    if (free) inDir(b, dir, () => (bound = b.call('bind', [t, b.data(sockaddr(from)), sockaddr(from).length], `bind it to ${printable(from)}`, { allowFail: true })));
    const r = await local(ctx, b, 'unix socket queue');
    const fd = Number(r[t.result]);
    ctx.restorerFds.push(fd); // closed below; listed so that a failure in between closes it too
    const ok = bound !== undefined && r[bound.result] === 0n;
    if (!ok) ctx.warnings.push({ pid: 0, message: `unix socket ${rcv.ino}: a datagram from ${printable(from)} comes back unnamed (the name is taken)` });
    const s = new Batch();
    sendFromTemp(s, rcv, data, fd);
    if (ok && isPath) inDir(s, dir, () => s.call('unlinkat', [AT_FDCWD, s.str(from.toString()), 0], `remove the temporary socket file ${printable(from)}`));
    await local(ctx, s, 'unix socket queue');
    ctx.restorerFds.splice(ctx.restorerFds.indexOf(fd), 1);
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  return true;
}

const printable = (n: Buffer) => (n.length && n[0] === 0 ? `@${n.subarray(1).toString()}` : n.toString());

/** USK_EXTERN: an entry that stands for a socket outside the dumped tree (checkpoint/sockets.ts dumpExternalPeer). */
const USK_EXTERN = 1;
const isExternal = (e: Msg) => (Number(e.uflags ?? 0) & USK_EXTERN) !== 0;

/** The sockets outside the dumped tree that sockets of the image were connected to: their names by inode. */
function externalPeers(ctx: RestoreContext): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (const f of ctx.set!.files.values()) {
    const e = f.usk as Msg | undefined;
    if (e && isExternal(e)) out.set(Number(e.ino), Buffer.from((e.name as Buffer | undefined) ?? Buffer.alloc(0)));
  }
  return out;
}

const externalHint = (name: Buffer) =>
  `start the program that receives on ${printable(name)} (e.g. the syslog daemon for /dev/log) before restoring, or restore where it runs`;

/**
 * Preflight: the names of the sockets outside the tree that the image's datagram sockets were connected to must
 * be there to connect to again. A path is looked at from here (as the tree will see it); an abstract name, or a
 * socket file nobody is bound to, shows only when connecting (connectExternal).
 */
export function unixProblems(ctx: RestoreContext): string[] {
  const problems: string[] = [];
  for (const [ino, name] of externalPeers(ctx)) {
    const users = [...ctx.set!.files.values()]
      .map((f) => f.usk as Msg | undefined)
      .filter((e) => e && !isExternal(e) && Number(e.peer ?? 0) === ino)
      .map((e) => String(e!.ino));
    if (!name.length || (name[0] !== 0 && name[0] !== 0x2f)) {
      problems.push(`unix socket ${ino} (outside the dumped tree, which socket(s) ${users.join(', ')} were connected to) has ${name.length ? `the relative name ${printable(name)}` : 'no name'}: restore cannot connect to it again`);
      continue;
    }
    if (name[0] === 0) continue;
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(treePath(ctx, name.toString()));
    } catch {
      st = undefined;
    }
    if (!st?.isSocket())
      problems.push(
        `unix socket(s) ${users.join(', ')} of the image were connected to ${printable(name)}, a socket outside the dumped tree, and ${st ? 'that is no socket' : 'there is nothing there'} on this host: ${externalHint(name)}`,
      );
  }
  return problems;
}

/** Connects S again to NAME, the socket outside the tree it was connected to; a clear error if nothing receives there. */
async function connectExternal(ctx: RestoreContext, s: Sock, name: Buffer): Promise<void> {
  const b = new Batch();
  const addr = sockaddr(name);
  const c = b.call('connect', [s.fd!, b.data(addr), addr.length], `connect socket ${s.ino} to ${printable(name)}`, { allowFail: true });
  const r = Number((await local(ctx, b, 'unix socket'))[c.result]);
  if (r < 0)
    throw new GodwitError(`unix socket ${s.ino} was connected to ${printable(name)}, a socket outside the dumped tree, which cannot be connected to again here: ${externalHint(name)}`, {
      cause: new SysError({ errno: -r, syscall: 'connect', what: `unix socket ${s.ino} to ${printable(name)}` }),
    });
}

export async function createUnixSockets(ctx: RestoreContext): Promise<void> {
  const set = ctx.set!;
  const socks: Sock[] = [];
  const external = externalPeers(ctx);
  for (const f of set.files.values()) {
    const e = f.usk as Msg | undefined;
    if (!e || isExternal(e)) continue;
    const name = Buffer.from((e.name as Buffer | undefined) ?? Buffer.alloc(0));
    const relative = name.length > 0 && name[0] !== 0 && name[0] !== 0x2f; // '/'
    socks.push({
      fileId: Number(f.id),
      e,
      ino: Number(e.ino),
      peer: Number(e.peer ?? 0),
      name,
      type: Number(e.type ?? SOCK_STREAM),
      dir: relative && e.name_dir ? String(e.name_dir) : undefined,
    });
  }
  if (!socks.length) return;
  const byIno = new Map(socks.filter((s) => s.ino).map((s) => [s.ino, s])); // ino 0: unaccepted connections
  const listeners = socks.filter((s) => Number(s.e.state) === TCP_LISTEN);
  for (const l of listeners) {
    await newSocket(ctx, l);
    await bindTo(ctx, l);
    const b = new Batch();
    b.call('listen', [l.fd!, Number(l.e.backlog ?? 0) || 128], `listen on ${printable(l.name)}`);
    await local(ctx, b, 'unix socket');
  }
  // Connected pairs (each the other's peer).
  for (const s of socks) {
    if (s.fd !== undefined || !s.ino) continue; // ino 0: an unaccepted connection (connectEmbryos)
    const p = byIno.get(s.peer);
    if (!p || p === s || p.peer !== s.ino || p.fd !== undefined) continue; // p === s: connected to itself, below
    const listener = listeners.find((l) => l.name.length && (l.name.equals(s.name) || l.name.equals(p.name)) && l.type === s.type);
    if (listener && s.type !== 2 /* SOCK_DGRAM */) {
      const [accepted, client] = listener.name.equals(s.name) ? [s, p] : [p, s];
      await newSocket(ctx, client);
      if (client.name.length) await bindTo(ctx, client);
      const b = new Batch();
      inDir(b, listener.dir, () => {
        b.call('connect', [client.fd!, b.data(sockaddr(listener.name)), sockaddr(listener.name).length], `connect to ${printable(listener.name)}`);
      });
      const acc = b.call('accept4', [listener.fd!, 0, 0, SOCK_CLOEXEC], `accept on ${printable(listener.name)}`);
      const r = await local(ctx, b, 'unix socket');
      accepted.fd = Number(r[acc.result]);
      ctx.restorerFds.push(accepted.fd);
    } else {
      const b = new Batch();
      const fds = Buffer.alloc(8);
      b.call('socketpair', [AF_UNIX, s.type | SOCK_CLOEXEC, 0, b.data(fds)], `create unix socket pair ${s.ino}/${p.ino}`);
      const { scratch } = await runLocal(ctx.restorer!, b, 'unix socket');
      s.fd = scratch.readInt32LE(0);
      p.fd = scratch.readInt32LE(4);
      ctx.restorerFds.push(s.fd, p.fd);
      if (s.name.length || p.name.length) ctx.warnings.push({ pid: 0, message: `unix sockets ${s.ino}/${p.ino}: recreated as a socketpair, their names are lost` });
    }
  }
  // After the accepted pairs (each accept takes the oldest waiting connection), the ones left waiting.
  await connectEmbryos(ctx, socks, byIno, listeners);
  // The rest: bound ones first (datagram receivers), then each connected to its bound peer (a bound socket
  // may be connected too: to another one's name, or to its own).
  const rest = socks.filter((x) => x.fd === undefined);
  for (const s of rest.filter((x) => x.name.length)) {
    await newSocket(ctx, s);
    await bindTo(ctx, s);
  }
  // A stream connection whose peer was closed with data still queued for this end (zdtm sockets02), or a
  // nameless datagram socket in the same state (zdtm socket_close_data: nothing can send to it by name): one
  // end of a new pair, the other end sends that data and is closed after, so reads get it, then end of file
  // (stream) or a refused send (datagram, as with the dead peer).
  const queued = new Set(set.skQueues.map((q) => Number(q.id_for)));
  const gonePeer = new Map<Sock, number>();
  for (const s of rest) {
    if (s.fd !== undefined || s.peer || !queued.has(s.fileId)) continue;
    if (s.type === SOCK_DGRAM ? s.name.length > 0 : Number(s.e.state) !== TCP_ESTABLISHED) continue;
    const b = new Batch();
    const fds = Buffer.alloc(8);
    b.call('socketpair', [AF_UNIX, s.type | SOCK_CLOEXEC, 0, b.data(fds)], `a pair for socket ${s.ino}, whose peer was closed`);
    const { scratch } = await runLocal(ctx.restorer!, b, 'unix socket');
    s.fd = scratch.readInt32LE(0);
    ctx.restorerFds.push(s.fd);
    gonePeer.set(s, scratch.readInt32LE(4));
  }
  for (const s of rest) {
    if (s.fd === undefined) await newSocket(ctx, s);
    const p = byIno.get(s.peer);
    if (s.peer && !p && !external.has(s.peer))
      throw new GodwitError(`unix socket ${s.ino} is connected to socket ${s.peer}, which is not in the image (outside the dumped tree)`);
    if (p) {
      const b = new Batch();
      inDir(b, p.dir, () => {
        b.call('connect', [s.fd!, b.data(sockaddr(p.name)), sockaddr(p.name).length], `connect socket ${s.ino} to ${printable(p.name)}`);
      });
      await local(ctx, b, 'unix socket');
    }
  }
  for (const s of socks) {
    if (s.fd! < 0) continue; // an unaccepted connection: only its peer exists
    const o = (s.e.opts as Msg | undefined) ?? {};
    const b = new Batch();
    for (const [opt, v] of [[SO_SNDBUFFORCE, o.so_sndbuf], [SO_RCVBUFFORCE, o.so_rcvbuf]] as const) {
      if (!v) continue;
      const val = Buffer.alloc(4);
      val.writeInt32LE(Math.floor(Number(v) / 2)); // the kernel doubles what it is given
      b.call('setsockopt', [s.fd!, SOL_SOCKET, opt, b.data(val), 4], `set buffer size of socket ${s.ino}`);
    }
    addCommonSockOpts(b, s.fd!, o, `unix socket ${s.ino}`);
    await local(ctx, b, 'unix socket');
  }
  // Queued data, sent again by whoever can reach the receiver; datagrams whose sender the image names, from
  // that name (requeueFrom).
  const byFile = new Map(socks.map((s) => [s.fileId, s]));
  for (const q of set.skQueues) {
    const rcv = byFile.get(Number(q.id_for));
    if (!rcv) throw new GodwitError(`sk-queues.img: data queued for file id ${q.id_for}, which is no unix socket of the image`);
    const data = (q.extra as Buffer | undefined) ?? Buffer.alloc(0);
    const stand = gonePeer.get(rcv);
    if (external.has(rcv.peer)) {
      // Not connected yet (connectExternal, below): the datagram comes from an unnamed socket, as the peer's name is
      // still its own. Dump refuses this for a socket without a name to send to.
      if (!rcv.name.length) throw new GodwitError(`unix socket ${rcv.ino} has queued data from a peer outside the image but no name to send it to: the image is inconsistent`);
      ctx.warnings.push({ pid: 0, message: `unix socket ${rcv.ino}: a datagram from ${printable(external.get(rcv.peer)!)} (outside the dumped tree) comes back unnamed` });
      const b = new Batch();
      sendFromTemp(b, rcv, data);
      await local(ctx, b, 'unix socket queue');
      continue;
    }
    if (rcv.type === SOCK_DGRAM && q.addr !== undefined && (await requeueFrom(ctx, rcv, data, Buffer.from(q.addr as Buffer), socks, stand))) continue;
    const sender = byIno.get(rcv.peer)?.peer === rcv.ino ? byIno.get(rcv.peer) : socks.find((x) => x.peer === rcv.ino);
    const b = new Batch();
    if (stand !== undefined) b.call('sendto', [stand, b.data(data), data.length, MSG_DONTWAIT, 0, 0], `requeue ${data.length} bytes for socket ${rcv.ino}`);
    else if (sender) b.call('sendto', [sender.fd!, b.data(data), data.length, MSG_DONTWAIT, 0, 0], `requeue ${data.length} bytes for socket ${rcv.ino}`);
    else {
      if (!rcv.name.length) throw new GodwitError(`unix socket ${rcv.ino} has queued data but neither a peer nor a name to send it to`);
      sendFromTemp(b, rcv, data);
    }
    await local(ctx, b, 'unix socket queue');
  }
  // After the queues: a connected datagram socket takes datagrams from its peer alone.
  for (const s of socks) if (external.has(s.peer)) await connectExternal(ctx, s, external.get(s.peer)!);
  for (const [s, stand] of gonePeer) {
    const b = new Batch();
    b.call('close', [stand], `close the stand-in peer of socket ${s.ino}`);
    await local(ctx, b, 'unix socket');
  }
  for (const s of socks) {
    if (s.fd! < 0) continue;
    const b = new Batch();
    const flags = Number(s.e.flags ?? 0);
    if (flags & O_NONBLOCK) b.call('fcntl', [s.fd!, F_SETFL, O_NONBLOCK], `make socket ${s.ino} non-blocking`);
    const shut = Number(s.e.shutdown ?? 0);
    if (shut) b.call('shutdown', [s.fd!, shut - 1], `shut socket ${s.ino} down as it was`);
    await local(ctx, b, 'unix socket');
    ctx.objects.set(s.fileId, s.fd!);
  }
}
