/**
 * Open files of one process: fdinfo-<files_id>.img (fd number -> file id, close-on-exec) and the file entries
 * in files.img, by kind. Regular files keep path, flags, position, size, mode and ELF build-id; the content of
 * a deleted file travels in a ghost file image (up to the ghost limit).
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { classifyFd, FdClass } from './fdkinds';
import { readFdInfo, ProcFdInfo } from './proc/fdinfo';
import { listProcNumbers, procPath } from './proc/read';
import { describe, FD_TYPES, O_CLOEXEC, REMAP_TYPE, setFown } from './filetable';
import { addRemap, ghostFor, readGhostContent, remapToGhost } from './ghosts';
import { dumpFifoFd, dumpPipeFd } from './pipes';
import { dumpUnixFd, UnixFd } from './sockets';
import { dumpInetFd } from './inet';
import { dumpEventfd } from './eventfd';
import { dumpEpoll } from './epoll';
import { dumpPidfd } from './pidfd';
import { dumpSignalfd } from './signalfd';
import { dumpTimerfd } from './timerfd';
import { dumpInotify } from './inotify';
import { dumpConsoleTerminal, dumpTtyFd } from './tty';
import { dumpFileLocks } from './filelocks';
import { dumpNsFile } from './nsfiles';

const FD_CLOEXEC = 1;
const TYPE_OF: Record<string, number> = {
  reg: FD_TYPES.REG,
  pipe: FD_TYPES.PIPE,
  fifo: FD_TYPES.FIFO,
  unix: FD_TYPES.UNIXSK,
  inet: FD_TYPES.INETSK,
  socket: FD_TYPES.INETSK,
  eventfd: FD_TYPES.EVENTFD,
  eventpoll: FD_TYPES.EVENTPOLL,
  signalfd: FD_TYPES.SIGNALFD,
  timerfd: FD_TYPES.TIMERFD,
  inotify: FD_TYPES.INOTIFY,
  memfd: FD_TYPES.MEMFD,
  tty: FD_TYPES.TTY,
  pidfd: FD_TYPES.PIDFD,
  nsfile: FD_TYPES.NS,
};

export interface FdRecord {
  fd: number;
  kind: string;
  fileId: number;
  /** For tests and the summary: position and path of regular files. */
  path?: string;
  pos?: bigint;
}

/** Every fd of `pid`, in fd order; unsupported kinds throw with the pid, fd and kind. */
export function listFds(ctx: CollectContext, pid: number): FdClass[] {
  return listProcNumbers(pid, 'fd').map((fd) => classifyFd(pid, fd, ctx.sockets));
}

export async function dumpFiles(ctx: CollectContext, pid: number, filesId: number, unixFds: UnixFd[]): Promise<FdRecord[]> {
  const out: FdRecord[] = [];
  ctx.images.touch('FDINFO', filesId);
  dumpConsoleTerminal(ctx, pid);
  for (const c of listFds(ctx, pid)) {
    if (c.kind === 'unsupported')
      throw new GodwitError(`pid ${pid} fd ${c.fd}: ${c.what} (${c.link}) cannot be checkpointed yet`);
    const info = readFdInfo(pid, c.fd);
    let fileId: number;
    const rec: FdRecord = { fd: c.fd, kind: c.kind, fileId: 0 };
    switch (c.kind) {
      case 'reg':
        fileId = await dumpRegularFd(ctx, pid, c, info);
        rec.path = c.link;
        rec.pos = info.pos;
        dumpFileLocks(ctx, pid, c.fd, `file ${fileId}`);
        break;
      case 'pipe':
        fileId = await dumpPipeFd(ctx, pid, c, info);
        break;
      case 'fifo':
        fileId = await dumpFifoFd(ctx, pid, c, info);
        break;
      case 'unix':
        fileId = await dumpUnixFd(ctx, pid, c, info, unixFds);
        break;
      case 'inet':
      case 'socket': // not bound: dumpInetFd asks the helper for its family, refuses anything but TCP/UDP
        fileId = await dumpInetFd(ctx, pid, c, info);
        break;
      case 'eventfd':
        fileId = dumpEventfd(ctx, pid, c, info);
        break;
      case 'eventpoll':
        fileId = await dumpEpoll(ctx, pid, c, info);
        break;
      case 'signalfd':
        fileId = dumpSignalfd(ctx, pid, c, info);
        break;
      case 'timerfd':
        fileId = dumpTimerfd(ctx, pid, c, info);
        break;
      case 'inotify':
        fileId = await dumpInotify(ctx, pid, c, info);
        break;
      case 'memfd':
        fileId = ctx.shmem.addFd(ctx, pid, c, info);
        break;
      case 'pidfd':
        fileId = await dumpPidfd(ctx, pid, c, info);
        break;
      case 'tty':
        fileId = await dumpTtyFd(ctx, pid, c, info);
        break;
      case 'nsfile':
        fileId = await dumpNsFile(ctx, pid, c, info);
        break;
    }
    rec.fileId = fileId;
    await dumpFown(ctx, pid, c.fd, fileId);
    ctx.images.add('FDINFO', filesId, {
      id: fileId,
      flags: info.flags & O_CLOEXEC ? FD_CLOEXEC : 0,
      type: TYPE_OF[c.kind],
      fd: c.fd,
    });
    out.push(rec);
  }
  return out;
}

/**
 * The fd's SIGIO/SIGURG owner (F_SETOWN/F_SETOWN_EX), its signal (F_SETSIG) and the credentials F_SETOWN
 * recorded: none of it is in /proc, so the helper asks the kernel (one request per fd, while frozen).
 */
async function dumpFown(ctx: CollectContext, pid: number, fd: number, fileId: number): Promise<void> {
  const o = await ctx.helper.fdOwner(pid, fd);
  if (o.pid === 0 && o.signum === 0) return;
  setFown(ctx.files, fileId, { uid: o.uid, euid: o.euid, signum: o.signum, pid_type: o.type, pid: o.pid });
}

async function dumpRegularFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  let path = c.link;
  const removed = path.endsWith(' (deleted)');
  const deleted = removed && c.proc.stat.nlink === 0n;
  // A removed name of a file that still has other links (zdtm unlink_fstat03): a link remap, not a ghost copy.
  const linked = removed && !deleted && (c.proc.stat.mode & 0o170000n) === 0o100000n;
  if (removed) path = path.slice(0, -' (deleted)'.length);
  const flags = info.flags & ~O_CLOEXEC;
  const st = c.proc.stat;
  const key = await describe(ctx, pid, c.fd, `reg:${st.dev}:${st.ino}:${flags}:${info.pos}:${path}`);
  const id = ctx.files.regular(path, st, flags, info.pos, key);
  if (deleted) dumpGhost(ctx, pid, c, id, path);
  if (linked) await dumpLinkRemap(ctx, pid, c, id, path);
  return id;
}

/**
 * CRIU's link remap: the file of a removed name that still has other links keeps its inode across restore (zdtm
 * unlink_fstat03 compares st_dev and st_ino), so instead of a copy it gets a name of ours beside the old one,
 * made by the helper with linkat (one per inode: ".godwit-link-remap.INODE"). The image points the file entry
 * at that name (remap-fpath.img, LINKED); restore opens the file through it and removes it once every task holds
 * its fds. The name stays until then: a snapshot (--leave-running) keeps it for a later restore, and a failed
 * dump removes the names it made (abortDump).
 */
async function dumpLinkRemap(ctx: CollectContext, pid: number, c: FdClass, fileId: number, path: string): Promise<void> {
  const st = c.proc.stat;
  const where = `${linkRemapDir(path)}/.godwit-link-remap.${st.ino}`;
  const key = `link:${st.dev}:${st.ino}`;
  if (!ctx.ghosts.has(key)) {
    try {
      await ctx.helper.linkFd(pid, c.fd, where);
      ctx.linkRemaps.push(where);
    } catch (err) {
      // Ours from an earlier dump (a snapshot that was never restored): the same inode, reused.
      const have = (err as { errno?: string; code?: string }).code === 'EEXIST' ? statOrNull(where) : null;
      if (!have || have.dev !== st.dev || have.ino !== st.ino)
        throw new GodwitError(`pid ${pid} fd ${c.fd}: cannot give the removed file ${path} (which has other links) a name of its own at ${where}`, { cause: err });
    }
    ctx.ghosts.set(key, ctx.files.regular(where, st, 0, 0n));
  }
  addRemap(ctx, fileId, ctx.ghosts.get(key)!, REMAP_TYPE.LINKED);
}

/**
 * Where the link-remap name goes: beside the old name, or, when its directory was removed too (zdtm
 * unlink_regular00), in the nearest ancestor still there (linkat fails with EXDEV if that is on another mount).
 */
function linkRemapDir(path: string): string {
  let dir = path.slice(0, path.lastIndexOf('/')) || '/';
  while (dir !== '/' && !statOrNull(dir)?.isDirectory()) dir = dir.slice(0, dir.lastIndexOf('/')) || '/';
  return dir === '/' ? '' : dir;
}

function statOrNull(p: string): fs.BigIntStats | null {
  try {
    return fs.statSync(p, { bigint: true });
  } catch {
    return null;
  }
}

/** CRIU's ghost file: the deleted file's attributes and whole content; remap-fpath.img points the file at it. */
function dumpGhost(ctx: CollectContext, pid: number, c: FdClass, fileId: number, path: string): void {
  const st = c.proc.stat;
  const ghostId = ghostFor(ctx, st, () => {
    const type = st.mode & 0o170000n;
    // An open removed directory (zdtm rmdir_open) or device node (zdtm deleted_dev): made again, nothing in it.
    if (type === 0o040000n || type === 0o020000n || type === 0o060000n) return Buffer.alloc(0);
    if (type !== 0o100000n)
      throw new GodwitError(`pid ${pid} fd ${c.fd}: deleted ${path} is neither a regular file, a directory nor a device node: cannot be checkpointed yet`);
    return readGhostContent(ctx, st, procPath(pid, `fd/${c.fd}`), `pid ${pid} fd ${c.fd}`, path);
  });
  remapToGhost(ctx, fileId, ghostId);
}
