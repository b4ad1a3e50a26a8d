/**
 * Unix sockets: socketpairs, listening and connected sockets whose peers are in the dumped tree, with the
 * data queued for reading (sk-queues.img, one packet entry per datagram, one for a stream's whole queue).
 * What cannot be restored faithfully is refused with the pid and fd: peers outside the tree, unaccepted
 * connections, fds in flight (SCM_RIGHTS).
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';

export interface UnixFd {
  pid: number;
  fd: number;
  inode: number;
  fileId: number;
  peer: number;
}

const TCP_LISTEN = 10;
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
    const peer = seenFds.find((u) => u.inode === inode)?.peer ?? 0;
    seenFds.push({ pid, fd: c.fd, inode, fileId: have, peer });
    return have;
  }
  const where = `unix socket fd ${c.fd} of pid ${pid} (inode ${inode})`;
  const [diag] = await ctx.helper.unixDiag([BigInt(inode)], pid);
  if (!diag) throw new GodwitError(`${where}: the kernel's socket diag does not know it`);
  if (diag.pendingConnections.length)
    throw new GodwitError(
      `${where}: listening socket with ${diag.pendingConnections.length} unaccepted connection(s): not supported yet; let the application accept them first`,
    );
  const opts = await ctx.helper.sockOpts(pid, c.fd);
  const queue = diag.state === TCP_LISTEN ? { packets: [], truncated: false } : await ctx.helper.peekSocket(pid, c.fd);
  if (queue.truncated) throw new GodwitError(`${where}: its receive queue is larger than the helper can peek`);
  const passed = queue.packets.reduce((n, p) => n + p.passedFds, 0);
  if (passed) throw new GodwitError(`${where}: ${passed} fd(s) in flight (SCM_RIGHTS) in its queue cannot be dumped`);
  const flags = info.flags & ~O_CLOEXEC;
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
        so_rcvlowat: 1,
        so_mark: opts.mark,
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
    return { type: FD_TYPES.UNIXSK, id, usk };
  });
  ctx.unixSeen.set(inode, id);
  for (const p of queue.packets) ctx.images.add('SK_QUEUES', undefined, { id_for: id, length: p.data.length }, p.data);
  seenFds.push({ pid, fd: c.fd, inode, fileId: id, peer: Number(diag.peerInode) });
  return id;
}

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

/** After all processes: every connected socket's peer must be a socket of the tree. */
export function checkUnixPeers(fds: UnixFd[]): void {
  const inodes = new Set(fds.map((u) => u.inode));
  for (const u of fds) {
    if (u.peer && !inodes.has(u.peer))
      throw new GodwitError(
        `unix socket fd ${u.fd} of pid ${u.pid} (inode ${u.inode}) is connected to socket ${u.peer} outside the dumped tree: not supported (dump the peer's process too)`,
      );
  }
}

export { SK_SHUTDOWN };
