/**
 * Files: the restorer opens every file object once (regular files at their flags and position; pipes in
 * pipes.ts), so fds that shared an open file description at dump time share one again. Each task pulls its
 * fds with injected pidfd_open + pidfd_getfd and dup3s them to their numbers; cwd, root and umask follow.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { RestoreContext, treePath } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { closeInRestorer, openInRestorer } from './memory';
import { Batch, runBatch, runLocal } from './syscalls';
import { fileNameFor } from '../images';
import { readEntries } from './image-files';
import { Op } from './restorer';
import { REMAP_TYPE } from '../checkpoint/filetable';
import { hostPidOf } from './tree';
import { openNsFile } from './nsfiles';
import { createEventfd, createInotify, createSignalfd, createTimerfd } from './anonfds';
import { createEpoll } from './epoll';
import { createPidfd } from './pidfd';
import { createMemfdFile } from './shmem';
import { createTtyFile, isCttyFile } from './tty';

export const FD_TYPE: Record<number, string> = {
  0: 'UND', 1: 'REG', 2: 'PIPE', 3: 'FIFO', 4: 'INETSK', 5: 'UNIXSK', 6: 'EVENTFD', 7: 'EVENTPOLL', 8: 'INOTIFY',
  9: 'SIGNALFD', 10: 'PACKETSK', 11: 'TTY', 12: 'FANOTIFY', 13: 'NETLINKSK', 14: 'NS', 15: 'TUNF', 16: 'EXT',
  17: 'TIMERFD', 18: 'MEMFD', 19: 'BPFMAP', 20: 'PIDFD',
};
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_NOCTTY = 0o400;
const O_TRUNC = 0o1000;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const FD_CLOEXEC = 1;

/** File kinds restore can recreate (pipes: pipes.ts; the rest here). */
export const SUPPORTED_FD_TYPES = new Set(['REG', 'PIPE', 'EVENTFD', 'SIGNALFD', 'TIMERFD', 'INOTIFY', 'EVENTPOLL', 'UNIXSK', 'FIFO', 'INETSK', 'MEMFD', 'TTY', 'NS', 'PIDFD']);

/** Creates, in the restorer, every file object the tree's fds refer to (one per files.img id). */
export async function openRegularFiles(ctx: RestoreContext): Promise<void> {
  const set = ctx.set!;
  // inotify last: a watch on a deleted file finds it among the ghosts made by then.
  for (const late of [false, true])
  for (const t of set.tasks)
    for (const fdi of t.fds) {
      const id = Number(fdi.id);
      if (ctx.objects.has(id)) continue;
      const f = set.files.get(id);
      if (!f) throw new GodwitError(`task ${t.pid}: fd ${fdi.fd} refers to file id ${id}, missing from files.img`);
      const type = FD_TYPE[Number(f.type)] ?? `type ${f.type}`;
      if (type === 'PIPE' || type === 'UNIXSK' || type === 'FIFO' || type === 'INETSK') continue; // pipes.ts, sockets.ts, inet.ts
      if ((type === 'INOTIFY') !== late) continue;
      if (type === 'TTY' && isCttyFile(ctx, f)) continue; // tty.ts openCttys, once the tasks can run calls
      const made = await createAnonObject(ctx, id, type, f);
      if (made !== null) {
        ctx.objects.set(id, made);
        continue;
      }
      if (type !== 'REG')
        throw new GodwitError(`task ${t.pid}: fd ${fdi.fd} is a ${type} file, which restore does not support yet`);
      const reg = f.reg as Msg;
      const name = reg.name as string;
      const flags = Number(reg.flags ?? 0) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY);
      const remap = ctx.set!.remaps.get(id);
      const fd = await (remap ? openGhost(ctx, id, name, flags, reg, remap) : openPlain(ctx, name, flags, isCharDevice(reg) ? undefined : ((reg.pos as bigint | undefined) ?? 0n))).catch((e) => {
        throw new GodwitError(`task ${t.pid}: cannot reopen fd ${fdi.fd} (${name})`, { cause: e });
      });
      ctx.objects.set(id, fd);
      ctx.restorerFds.push(fd);
    }
}

/**
 * A /proc path of a task of the dumped tree (an fd on /proc/self/maps reads /proc/PID/maps, zdtm memfd02): not
 * there before the tree is made, and PID must be the task as restored. Returns the dumped pid, whether it is a
 * thread group leader, and the rest of the path; undefined for any other path.
 */
export function treeProcPath(ctx: RestoreContext, name: string): { pid: number; leader: boolean; rest: string } | undefined {
  const m = /^\/proc\/(\d+)(\/.*)?$/.exec(name);
  if (!m) return undefined;
  const pid = Number(m[1]);
  for (const t of ctx.set!.tasks)
    if (t.threads.includes(pid) || t.pid === pid) return { pid, leader: t.pid === pid, rest: m[2] ?? '' };
  return undefined;
}

/**
 * A regular file by its path, at its position. A tree task's /proc file is opened now that the task exists: the
 * same pid on the host; in a new pid namespace the pid the host gives the task, through the host's /proc (the
 * restorer's cwd is the host's root, also inside a container). Non-leader threads there are refused by preflight.
 */
/** A character device has no position to set (a terminal's lseek fails with ESPIPE). */
function isCharDevice(reg: Msg): boolean {
  return (Number(reg.mode ?? 0) & 0o170000) === 0o020000;
}

async function openPlain(ctx: RestoreContext, name: string, flags: number, pos: bigint | undefined): Promise<number> {
  const proc = treeProcPath(ctx, name);
  if (!proc || !ctx.opts.newPidns) return openInRestorer(ctx, name, flags, pos);
  return openInRestorer(ctx, `/proc/${await hostPidOf(ctx, proc.pid)}${proc.rest}`, flags, pos, 0, true);
}

/** Preflight: a thread's /proc file in a new pid namespace (its host tid is not known here: refused by name). */
export function treeProcProblems(ctx: RestoreContext): string[] {
  if (!ctx.opts.newPidns) return [];
  const out: string[] = [];
  for (const t of ctx.set!.tasks)
    for (const fdi of t.fds) {
      const name = (ctx.set!.files.get(Number(fdi.id))?.reg as Msg | undefined)?.name as string | undefined;
      const proc = name !== undefined ? treeProcPath(ctx, name) : undefined;
      if (proc && !proc.leader)
        out.push(`${name} (fd ${fdi.fd} of task ${t.pid}): a /proc file of thread ${proc.pid} cannot be reopened in a new pid namespace yet`);
    }
  return out;
}

const { GHOST: REMAP_GHOST, LINKED: REMAP_LINKED } = REMAP_TYPE;

/** The name a link remap gave the file of entry `id` (checkpoint/files.ts dumpLinkRemap), or undefined. */
function linkRemapName(ctx: RestoreContext, id: number): string | undefined {
  const remap = ctx.set!.remaps.get(id);
  if (!remap || Number(remap.remap_type ?? REMAP_GHOST) !== REMAP_LINKED) return undefined;
  const reg = ctx.set!.files.get(Number(remap.remap_id))?.reg as Msg | undefined;
  if (!reg) throw new GodwitError(`file id ${id}: its link remap names file id ${remap.remap_id}, missing from files.img`);
  return reg.name as string;
}

/**
 * A removed name of a file that still had other links: opened through the name the dump gave it (the same
 * inode), which is removed once every task holds its fds (removeLinkRemaps).
 */
async function openLinked(ctx: RestoreContext, id: number, name: string, flags: number, reg: Msg, remap: Msg): Promise<number> {
  const link = linkRemapName(ctx, id)!;
  const fd = await openInRestorer(ctx, link, flags, (reg.pos as bigint | undefined) ?? 0n).catch((e) => {
    throw new GodwitError(`${name} (removed, with other links): cannot open it through its link remap ${link} (file id ${remap.remap_id})`, { cause: e });
  });
  ctx.linkRemaps.add(link);
  return fd;
}

/**
 * Removes the link remaps the restore opened files through, once every task holds its fds: the files have the
 * links they had at the dump again. Before the tree runs, so it never sees the extra name; a restore that fails
 * earlier leaves them, and the image can be restored again.
 */
export async function removeLinkRemaps(ctx: RestoreContext): Promise<void> {
  if (!ctx.linkRemaps.size) return;
  const u = new Batch();
  for (const p of ctx.linkRemaps) u.call('unlinkat', [AT_FDCWD, u.str(p), 0], `remove the link remap ${p}`);
  await runLocal(ctx.restorer!, u, 'link remaps');
  ctx.linkRemaps.clear();
}
/** Per restore: "file id:access mode" -> the restorer's fd of a deleted file that is mapped or an executable. */
const mappedGhosts = new WeakMap<RestoreContext, Map<string, number>>();

/**
 * A deleted file that is mapped or is a task's executable (file entry `id`, remapped to its ghost): the
 * restorer's fd of it opened at `mode` (O_RDONLY/O_RDWR), for tasks to fetch. The inode is made from the ghost
 * once, the one its fds get too, so MAP_SHARED mappings in every task (a sem_open()ed semaphore) share it.
 */
export async function openMappedGhost(ctx: RestoreContext, id: number, mode: number, what: string): Promise<number> {
  const cache = mappedGhosts.get(ctx) ?? new Map<string, number>();
  mappedGhosts.set(ctx, cache);
  const have = cache.get(`${id}:${mode}`);
  if (have !== undefined) return have;
  const reg = ctx.set!.files.get(id)?.reg as Msg | undefined;
  const remap = ctx.set!.remaps.get(id);
  if (!reg || !remap) throw new GodwitError(`${what}: file id ${id} is not a deleted file of files.img with a ghost (remap-fpath.img)`);
  const fd = await openGhost(ctx, id, reg.name as string, mode, { ...reg, pos: 0n }, remap).catch((e) => {
    throw new GodwitError(`${what}: cannot make the deleted file ${reg.name} again from its ghost image`, { cause: e });
  });
  ctx.restorerFds.push(fd);
  cache.set(`${id}:${mode}`, fd);
  return fd;
}

/** Per restore: ghost image id -> the restorer's fd of the file made from it. */
const ghostKeepers = new WeakMap<RestoreContext, Map<number, number>>();
const O_RDONLY = 0;
const O_RDWR = 2;
const AT_FDCWD = -100;

/**
 * A file that was deleted while open: recreated from its ghost image at its old path (so the fd reads
 * "PATH (deleted)" as before; a temporary name beside it if the path is taken now), opened as it was, unlinked.
 */
async function openGhost(ctx: RestoreContext, id: number, name: string, flags: number, reg: Msg, remap: Msg): Promise<number> {
  if (Number(remap.remap_type ?? REMAP_GHOST) === REMAP_LINKED) return openLinked(ctx, id, name, flags, reg, remap);
  if (Number(remap.remap_type ?? REMAP_GHOST) !== REMAP_GHOST)
    throw new GodwitError(`file id ${id} (${name}): remap type ${remap.remap_type} is not supported yet`);
  const ghostFile = fileNameFor('GHOST_FILE', Number(remap.remap_id));
  const entries = readEntries(ctx.set!.dir, ghostFile);
  if (!entries || !entries.length) throw new GodwitError(`${ghostFile} is missing: the content of deleted file ${name} is not in the image`);
  const g = entries[0];
  const pos = (reg.pos as bigint | undefined) ?? 0n;
  // Two opens of one deleted file (zdtm write_read10) are two file ids with one ghost: the inode is made once
  // and kept open, and every further open goes through it.
  const keepers = ghostKeepers.get(ctx) ?? new Map<number, number>();
  ghostKeepers.set(ctx, keepers);
  const remapId = Number(remap.remap_id);
  const kept = keepers.get(remapId);
  if (kept !== undefined) return openInRestorer(ctx, `/proc/self/fd/${kept}`, flags, pos, 0, true);
  const content = (g.extra as Buffer | undefined) ?? Buffer.alloc(0);
  const base = name.replace(/ \(deleted\)$/, '');
  const where = fs.existsSync(treePath(ctx, base)) ? `${base}.godwit-ghost-${process.pid}-${id}` : base;
  if ((Number(g.mode ?? 0) & 0o170000) === 0o040000) {
    const dir = await openGhostDir(ctx, where, flags, reg, g);
    keepers.set(remapId, dir);
    return dir;
  }
  const type = Number(g.mode ?? 0) & 0o170000;
  if (type === 0o020000 || type === 0o060000) {
    const dev = await openGhostDevice(ctx, where, flags, g);
    keepers.set(remapId, dev);
    return dev;
  }
  const w = await openInRestorer(ctx, where, O_RDWR | O_CREAT | O_EXCL, undefined, Number(g.mode ?? 0o600) & 0o7777);
  try {
    await writeSparse(ctx, w, content, `deleted file ${name}`);
    await setGhostAttrs(ctx, w, name, g);
    const fd = await openInRestorer(ctx, where, flags, pos);
    ctx.ghostFds.set(`${g.dev}:${g.ino}`, fd);
    // The keeper is read-only: a file open for writing cannot become a task's executable (PR_SET_MM_MAP's
    // deny_write_access: EACCES). Later opens go through /proc/self/fd, which takes any mode.
    const keeper = await openInRestorer(ctx, where, O_RDONLY);
    keepers.set(remapId, keeper);
    ctx.restorerFds.push(keeper);
    return fd;
  } finally {
    await closeInRestorer(ctx, [w]);
    const u = new Batch();
    u.call('unlinkat', [AT_FDCWD, u.str(where), 0], `delete ${where} again`);
    await runLocal(ctx.restorer!, u, 'ghost file');
  }
}

/** A device node removed before the dump (zdtm deleted_dev): made again with its device, opened, removed again. */
async function openGhostDevice(ctx: RestoreContext, where: string, flags: number, g: Msg): Promise<number> {
  const rdev = Number(g.rdev ?? 0); // st_rdev as stat gave it (CRIU's odev), what mknod takes
  const mk = new Batch();
  mk.call('mknodat', [AT_FDCWD, mk.str(where), Number(g.mode), rdev], `make the removed device node ${where} (${(rdev >> 8) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}) again`);
  await runLocal(ctx.restorer!, mk, 'removed device node');
  try {
    const fd = await openInRestorer(ctx, where, flags);
    await setGhostAttrs(ctx, fd, where, g);
    return fd;
  } finally {
    const u = new Batch();
    u.call('unlinkat', [AT_FDCWD, u.str(where), 0], `remove ${where} again`);
    await runLocal(ctx.restorer!, u, 'removed device node');
  }
}

/** An open directory removed before the dump: made again (empty), opened as it was, removed again. */
async function openGhostDir(ctx: RestoreContext, where: string, flags: number, reg: Msg, g: Msg): Promise<number> {
  const mk = new Batch();
  mk.call('mkdirat', [AT_FDCWD, mk.str(where), Number(g.mode ?? 0o700) & 0o7777], `make the removed directory ${where} again`);
  await runLocal(ctx.restorer!, mk, 'removed directory');
  try {
    const fd = await openInRestorer(ctx, where, flags, (reg.pos as bigint | undefined) ?? 0n);
    await setGhostAttrs(ctx, fd, where, g);
    return fd;
  } finally {
    const u = new Batch();
    u.call('unlinkat', [AT_FDCWD, u.str(where), AT_REMOVEDIR], `remove ${where} again`);
    await runLocal(ctx.restorer!, u, 'removed directory');
  }
}

const HOLE_BLOCK = 4096; // the block size of the filesystems ghosts land on: a zero block stays a hole
const WRITE_PIECE = 1 << 20; // bytes per restorer request

/**
 * The ghost's content into fd `w`: only its non-zero blocks are written, then the file is cut to its size, so the
 * holes of a sparse file (zdtm ghost_holes*) are holes again, not zeros taking disk space and SEEK_HOLE lying.
 */
async function writeSparse(ctx: RestoreContext, w: number, content: Buffer, what: string): Promise<void> {
  const zero = Buffer.alloc(HOLE_BLOCK);
  const isZero = (at: number) => content.subarray(at, at + HOLE_BLOCK).equals(zero.subarray(0, Math.min(HOLE_BLOCK, content.length - at)));
  for (let at = 0; at < content.length; ) {
    if (isZero(at)) {
      at += HOLE_BLOCK;
      continue;
    }
    let end = at + HOLE_BLOCK;
    while (end < content.length && end - at < WRITE_PIECE && !isZero(end)) end += HOLE_BLOCK;
    end = Math.min(end, content.length);
    const seek = new Batch();
    seek.call('lseek', [w, at, 0 /* SEEK_SET */], `seek in ${what}`);
    await runLocal(ctx.restorer!, seek, what);
    const b = Buffer.alloc(4 + end - at);
    b.writeInt32LE(w, 0);
    content.copy(b, 4, at, end);
    await ctx.restorer!.request(Op.WRITE_FD, b, `write the content of ${what}`);
    at = end;
  }
  const cut = new Batch();
  cut.call('ftruncate', [w, content.length], `give ${what} its size`);
  await runLocal(ctx.restorer!, cut, what);
}

/**
 * The deleted file's owner, mode and times as they were (zdtm unlink_fstat00 checks them through fstat): the
 * restorer created it as root with its umask; chown before chmod (chown clears set-id bits), times last (the
 * content write moved mtime).
 */
async function setGhostAttrs(ctx: RestoreContext, fd: number, name: string, g: Msg): Promise<void> {
  const b = new Batch();
  if (g.uid !== undefined && g.gid !== undefined) b.call('fchown', [fd, Number(g.uid), Number(g.gid)], `give deleted file ${name} its owner ${g.uid}:${g.gid}`);
  if (g.mode !== undefined) b.call('fchmod', [fd, Number(g.mode) & 0o7777], `give deleted file ${name} its mode`);
  const at = g.atim as Msg | undefined;
  const mt = g.mtim as Msg | undefined;
  if (at && mt) {
    const ts = Buffer.alloc(32);
    ts.writeBigInt64LE(BigInt(at.tv_sec as bigint), 0);
    ts.writeBigInt64LE(BigInt(at.tv_usec as bigint) * 1000n, 8);
    ts.writeBigInt64LE(BigInt(mt.tv_sec as bigint), 16);
    ts.writeBigInt64LE(BigInt(mt.tv_usec as bigint) * 1000n, 24);
    // utimensat(fd, NULL, times, 0) is futimens(fd, times)
    b.call('utimensat', [fd, 0, b.data(ts), 0], `give deleted file ${name} its times`);
  }
  if (b.length) await runLocal(ctx.restorer!, b, 'ghost file attributes');
}

async function createAnonObject(ctx: RestoreContext, id: number, type: string, f: Msg): Promise<number | null> {
  switch (type) {
    case 'EVENTFD':
      return createEventfd(ctx, id, f.efd as Msg);
    case 'SIGNALFD':
      return createSignalfd(ctx, id, f.sgfd as Msg);
    case 'TIMERFD':
      return createTimerfd(ctx, id, f.tfd as Msg);
    case 'INOTIFY':
      return createInotify(ctx, id, f.ify as Msg);
    case 'EVENTPOLL':
      return createEpoll(ctx, id);
    case 'MEMFD':
      return createMemfdFile(ctx, id, f.memfd as Msg);
    case 'NS':
      return openNsFile(ctx, id, f.nsf as Msg);
    case 'TTY':
      return createTtyFile(ctx, id, f.tty as Msg);
    case 'PIDFD':
      return createPidfd(ctx, id, f.pidfd as Msg);
    default:
      return null;
  }
}

/** Pulls the task's fds from the restorer and puts each at its number with its close-on-exec flag. */
export async function installFds(ctx: RestoreContext, t: TaskImage): Promise<void> {
  const kept = ctx.restorerPidfd;
  if (t.fds.length === 0) {
    if (kept !== undefined) {
      const b = new Batch();
      b.call('close', [kept], 'close the pidfd of the restorer');
      await runBatch(ctx.restorer!, t.pid, b);
    }
    return;
  }
  const fds = [...t.fds].sort((a, c) => Number(a.fd) - Number(c.fd));
  const base = Number(fds[fds.length - 1].fd) + 1;
  const b = new Batch();
  // In a container's pid namespace the restorer is invisible: its stubs kept a pidfd of it instead.
  const pidfd = kept !== undefined ? kept : b.call('pidfd_open', [ctx.restorerPid, 0], 'open a pidfd of the restorer');
  // Every temporary fd lives above the highest target so that dup3 never meets its own number.
  const hi = b.call('fcntl', [pidfd, F_DUPFD_CLOEXEC, base], 'move the pidfd above the restored fds');
  b.call('close', [pidfd], 'close the low pidfd');
  const temps: { fd: number; flags: number; ref: ReturnType<Batch['call']> }[] = [];
  for (const fdi of fds) {
    const obj = ctx.objects.get(Number(fdi.id));
    if (obj === undefined) throw new GodwitError(`task ${t.pid}: fd ${fdi.fd}: no object was created for file id ${fdi.id}`);
    const low = b.call('pidfd_getfd', [hi, obj, 0], `fetch fd ${fdi.fd} from the restorer`);
    const up = b.call('fcntl', [low, F_DUPFD_CLOEXEC, base], `park fd ${fdi.fd}`);
    b.call('close', [low], `close temporary fd for ${fdi.fd}`);
    temps.push({ fd: Number(fdi.fd), flags: Number(fdi.flags ?? 0), ref: up });
  }
  for (const x of temps) {
    b.call('dup3', [x.ref, x.fd, x.flags & FD_CLOEXEC ? O_CLOEXEC : 0], `install fd ${x.fd}`);
    b.call('close', [x.ref], `close parked fd ${x.fd}`);
  }
  addFownCalls(ctx, t, b);
  b.call('close', [hi], 'close the pidfd');
  await runBatch(ctx.restorer!, t.pid, b);
}

const F_SETOWN_EX = 15;
const F_SETSIG = 10;
const F_SETFL = 4;
const O_ASYNC = 0o20000;
// What F_SETFL can change (O_NOATIME left out: EPERM unless the caller owns the file).
const SETFL_MASK = 0o2000 /* O_APPEND */ | 0o4000 /* O_NONBLOCK */ | O_ASYNC | 0o40000 /* O_DIRECT */;

/**
 * SIGIO/SIGURG: O_ASYNC and the owner (fown). O_ASYNC is set again with F_SETFL (the object makers create most
 * kinds without it, and open() never arms it); the owner is set from inside the task so the pid means what it
 * meant in its pid namespace. F_SETOWN records the caller's uid/euid, which decide later whether the signal may
 * be sent: the task takes them for the call and goes back to root (its own credentials are restored at the end).
 */
function addFownCalls(ctx: RestoreContext, t: TaskImage, b: Batch): void {
  const done = new Set<number>();
  for (const fdi of t.fds) {
    if (done.has(Number(fdi.id))) continue;
    done.add(Number(fdi.id));
    const entry = ctx.set!.files.get(Number(fdi.id));
    let sub: Msg | undefined;
    for (const v of Object.values(entry ?? {})) if (v && typeof v === 'object' && 'fown' in (v as Msg)) sub = v as Msg;
    if (!sub) continue;
    const fown = sub.fown as Msg;
    const fd = Number(fdi.fd);
    const flags = Number(sub.flags ?? 0);
    if (flags & O_ASYNC) b.call('fcntl', [fd, F_SETFL, flags & SETFL_MASK], `set O_ASYNC on fd ${fd}`);
    const signum = Number(fown.signum ?? 0), pid = Number(fown.pid ?? 0);
    if (signum) b.call('fcntl', [fd, F_SETSIG, signum], `set the SIGIO signal of fd ${fd}`);
    if (!pid) continue;
    const uid = Number(fown.uid ?? 0), euid = Number(fown.euid ?? 0);
    if (uid || euid) b.call('setresuid', [uid, euid, -1], `take uid ${uid}/euid ${euid} to set the owner of fd ${fd}`);
    const ex = Buffer.alloc(8);
    ex.writeInt32LE(Number(fown.pid_type ?? 0), 0);
    ex.writeInt32LE(pid, 4);
    b.call('fcntl', [fd, F_SETOWN_EX, b.data(ex)], `make pid ${pid} the owner of fd ${fd}`);
    if (uid || euid) b.call('setresuid', [0, 0, -1], `back to root after setting the owner of fd ${fd}`);
  }
}

/** Working directory and umask; the root comes later (addRootCall). */
export async function restoreFs(ctx: RestoreContext, t: TaskImage): Promise<void> {
  const set = ctx.set!;
  const b = new Batch();
  // The path is as the dumper saw it (from its root, not the task's): entered while the task still has the
  // restorer's root. chroot leaves the working directory alone, so a cwd inside the new root and one outside it
  // (zdtm chroot: chroot without chdir) both end as they were.
  const cwd = fsName(ctx, t, t.fs.cwd_id, 'cwd');
  if (set.remaps.has(Number(t.fs.cwd_id))) addDeletedCwd(ctx, b, t, cwd, Number(set.remaps.get(Number(t.fs.cwd_id))!.remap_id));
  else b.call('chdir', [b.str(cwd)], `chdir to ${cwd}`);
  b.call('umask', [Number(t.fs.umask ?? 0o22)], 'set umask');
  await runBatch(ctx.restorer!, t.pid, b);
}

/**
 * The task's root (chroot), added to its last batch of paths: everything injected before it opens host paths
 * (/proc/self/oom_score_adj, /proc/self/loginuid), which a chrooted task no longer sees. It still comes before
 * the seccomp filter and the credentials, either of which could forbid it.
 */
export function addRootCall(ctx: RestoreContext, t: TaskImage, b: Batch): void {
  const root = fsName(ctx, t, t.fs.root_id, 'root');
  if (root !== '/') b.call('chroot', [b.str(root)], `chroot to ${root}`);
}

function fsName(ctx: RestoreContext, t: TaskImage, id: unknown, what: string): string {
  const reg = ctx.set!.files.get(Number(id))?.reg as Msg | undefined;
  if (!reg) throw new GodwitError(`task ${t.pid}: ${what} refers to file id ${id}, missing from files.img`);
  return reg.name as string;
}

const AT_REMOVEDIR = 0x200;

/**
 * A working directory removed before the dump (a ghost directory in the image): made again at its path (a
 * temporary name beside it if that path exists now), entered, and removed, so the task's cwd reads
 * "PATH (deleted)" as before.
 */
function addDeletedCwd(ctx: RestoreContext, b: Batch, t: TaskImage, cwd: string, ghostId: number): void {
  // The task also holds the removed directory open (zdtm cwd02): enter that one, not a second copy.
  const held = t.fds.find((f) => Number(ctx.set!.remaps.get(Number(f.id))?.remap_id) === ghostId);
  if (held) {
    b.call('fchdir', [Number(held.fd)], `enter the removed working directory ${cwd} through fd ${held.fd}`);
    return;
  }
  const dir = fs.existsSync(treePath(ctx, cwd)) ? `${cwd}.godwit-cwd-${process.pid}-${t.pid}` : cwd;
  const g = (readEntries(ctx.set!.dir, fileNameFor('GHOST_FILE', ghostId)) ?? [])[0];
  b.call('mkdirat', [AT_FDCWD, b.str(dir), Number(g?.mode ?? 0o700) & 0o7777], `make the removed working directory ${dir} again (ghost ${ghostId})`);
  b.call('chdir', [b.str(dir)], `chdir to ${dir}`);
  b.call('unlinkat', [AT_FDCWD, b.str(dir), AT_REMOVEDIR], `remove ${dir} again`);
}

/** Closes the restorer's copies once every task holds its own. */
export async function closeObjects(ctx: RestoreContext): Promise<void> {
  const fds = ctx.restorerFds.splice(0);
  await closeInRestorer(ctx, fds);
}

/** A file restore takes from this host: where, as dumped (size, mode), who needs it, and whether it is mapped. */
export interface NeededFile {
  path: string;
  size?: bigint;
  mode?: number;
  why: string;
  /** Mapped or a task's executable (not only held by fds, cwd or root): its bytes are the tree's memory. */
  mapped: boolean;
}

/** Paths the restore needs, with what dump recorded about them, for preflight. */
export function neededFiles(ctx: RestoreContext): NeededFile[] {
  const set = ctx.set!;
  const out = new Map<string, NeededFile>();
  const add = (id: number, why: string, mapped = false) => {
    const reg = set.files.get(id)?.reg as Msg | undefined;
    if (!reg) return;
    const link = linkRemapName(ctx, id);
    let entry: NeededFile;
    if (link !== undefined) {
      const lreg = set.files.get(Number(set.remaps.get(id)!.remap_id))!.reg as Msg;
      entry = { path: link, size: lreg.size as bigint | undefined, mode: lreg.mode as number | undefined, why: `${why}: the link remap of the removed ${reg.name}`, mapped };
    } else {
      if (set.remaps.has(id)) return; // a deleted file comes from its ghost image
      const p = reg.name as string;
      if (treeProcPath(ctx, p)) return; // made with the tree (openPlain)
      entry = { path: p, size: reg.size as bigint | undefined, mode: reg.mode as number | undefined, why, mapped };
    }
    const had = out.get(entry.path);
    if (had) had.mapped ||= mapped;
    else out.set(entry.path, entry);
  };
  for (const t of set.tasks) {
    if (t.zombie !== undefined) continue;
    for (const v of (t.mm.vmas as Msg[] | undefined) ?? [])
      if (Number(v.status) & (64 | 128)) add(Number(v.shmid), `mapped by task ${t.pid}`, true);
    if (t.mm.exe_file_id) add(Number(t.mm.exe_file_id), `executable of task ${t.pid}`, true);
    for (const fdi of t.fds) add(Number(fdi.id), `fd ${fdi.fd} of task ${t.pid}`);
    add(Number(t.fs.cwd_id), `cwd of task ${t.pid}`);
    add(Number(t.fs.root_id), `root of task ${t.pid}`);
  }
  return [...out.values()];
}

export function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}
