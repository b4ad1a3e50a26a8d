/**
 * The address space: the stub's own memory goes (all but the trampoline), [vvar]/[vvar_vclock]/[vdso] come
 * back in one piece at the dumped address (ARCH_MAP_VDSO_64), every VMA is mapped at its address (writable
 * while its pages are written), pages are written by the restorer from the pages image, then protections,
 * madvise bits and the mm fields (PR_SET_MM_MAP, exe included) are set.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChunkInfo, containerName, plainPagesName } from '../images/container-format';
import { ContainerReader } from '../images/container-reader';
import { GodwitError, ImageError } from '../util/errors';
import { RestoreContext } from './context';
import { ImageSet, TaskImage } from './load';
import { Msg } from './image-files';
import { Op } from './restorer';
import { Batch, hostPath, restorerFetcher, ResultRef, runBatch } from './syscalls';
import { openMappedGhost } from './files';
import { isShmemVma, shmemMapper } from './shmem';
import { ChainLevel, PageChain, pagemapOf } from '../images/pagechain';

export const PAGE = 4096n;
/** One 4 KiB code page + scratch for batch arguments (auxv, sigactions, paths, iovecs). */
export const TRAMPOLINE_SIZE = 0x100000n;
const TASK_SIZE = 0x7ffffffff000n; // x86_64, 4-level page tables: the end of user space

export const VMA = {
  REGULAR: 1, STACK: 2, VSYSCALL: 4, VDSO: 8, HEAP: 32, FILE_PRIVATE: 64, FILE_SHARED: 128, ANON_SHARED: 256,
  ANON_PRIVATE: 512, SYSVIPC: 1024, SOCKET: 2048, VVAR: 4096, AIORING: 8192, MEMFD: 16384, GUARD: 65536,
} as const;
const MADV_GUARD_INSTALL = 102;
const PROT_WRITE = 2;
const SHM_RDONLY = 0o10000;
const MAP_SHARED = 1;
const MAP_PRIVATE = 2;
const MAP_DROPPABLE = 8; // checkpoint/vma.ts
const MAP_ANONYMOUS = 0x20;
const MAP_GROWSDOWN = 0x100;
const MAP_NORESERVE = 0x4000;
const MAP_FIXED_NOREPLACE = 0x100000;
const ARCH_MAP_VDSO_64 = 0x2003;
const PR_SET_MM = 35;
const PR_SET_MM_MAP = 14;
const O_RDONLY = 0;
const O_RDWR = 2;
const O_ACCMODE = 3;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const AT_FDCWD = -100;
const MAP_LOCKED = 0x2000;
/**
 * madvise advice that CRIU records as bit (1 << advice) in vma.madv (each one a VmFlags bit of smaps) and that
 * restore re-applies: every advice that leaves a mark on the VMA, not the one-shot ones (DONTNEED, WILLNEED...).
 */
const MADVICES = [
  1 /* RANDOM */, 2 /* SEQUENTIAL */, 10 /* DONTFORK */, 12 /* MERGEABLE */, 14 /* HUGEPAGE */, 15 /* NOHUGEPAGE */,
  16 /* DONTDUMP */, 18 /* WIPEONFORK */,
];
/** Advice a restore host may lack (THP, KSM not built in): a refusal leaves the hint out rather than the task. */
const OPTIONAL_MADVICES = new Set([12, 14, 15]);

export interface Vma {
  start: bigint;
  end: bigint;
  pgoff: bigint;
  shmid: number;
  prot: number;
  flags: number;
  status: number;
  madv: bigint;
  /** Access mode of the file the mapping was made through (vma.fdflags), when the image says. */
  fdflags?: number;
  /** pages to write into it */
  hasPages: boolean;
}

/** The mappings of mm.img: guard regions are extra entries (checkpoint/vma.ts VMA_AREA_GUARD), see guardsOf. */
export function vmasOf(t: TaskImage): Vma[] {
  return ((t.mm.vmas as Msg[] | undefined) ?? []).filter((v) => !(Number(v.status ?? 0) & VMA.GUARD)).map((v) => ({
    start: v.start as bigint,
    end: v.end as bigint,
    pgoff: (v.pgoff as bigint) ?? 0n,
    shmid: Number(v.shmid ?? 0n),
    prot: Number(v.prot ?? 0),
    flags: Number(v.flags ?? 0),
    status: Number(v.status ?? 0),
    madv: (v.madv as bigint | undefined) ?? 0n,
    fdflags: v.fdflags === undefined ? undefined : Number(v.fdflags),
    hasPages: false,
  }));
}

/** Guard regions (MADV_GUARD_INSTALL) of the task, [start, end). */
export function guardsOf(t: TaskImage): { start: bigint; end: bigint }[] {
  return ((t.mm.vmas as Msg[] | undefined) ?? [])
    .filter((v) => Number(v.status ?? 0) & VMA.GUARD)
    .map((v) => ({ start: v.start as bigint, end: v.end as bigint }));
}

const isSpecial = (v: Vma) => (v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL)) !== 0;

/** What restore cannot rebuild yet, named so the user knows which mapping of which task. */
export function unsupportedVma(v: Vma, sysvShm = false): string | null {
  if (!(v.status & VMA.REGULAR) && !(v.status & VMA.VSYSCALL)) return 'not a regular mapping';
  // SysV shm comes back with its ipc namespace (a container): the segment exists before the task attaches it.
  if (sysvShm && v.status & VMA.SYSVIPC) return null;
  for (const [bit, name] of [
    [VMA.SYSVIPC, 'SysV shared memory'], [VMA.SOCKET, 'a socket mapping'],
  ] as const)
    if (v.status & bit) return name;
  return null;
}

export interface PageRange {
  addr: bigint;
  len: bigint;
  off: bigint;
  /** Which image of the pre-dump chain holds the bytes (0: this one; images/pagechain.ts). */
  level: number;
}

/** The task's pages: ranges in address order, and the image (pages file) of each chain level they use. */
export interface TaskPages {
  ranges: PageRange[];
  levels: ChainLevel[];
}

/**
 * Page ranges of the task, each resolved to the image that holds its bytes (runs marked PE_PARENT through the
 * `parent` chain), skipping what the kernel recreates itself (vdso/vvar).
 */
export function pageRanges(t: TaskImage, vmas: Vma[], chain: PageChain): TaskPages {
  const file = `pagemap-${t.pid}.img`;
  const { pieces, levels } = chain.resolve(pagemapOf([{ pages_id: t.pagemap.pagesId }, ...t.pagemap.entries], file), file);
  const out: PageRange[] = [];
  for (const p of pieces) {
    let addr = p.addr;
    const end = addr + p.len;
    let o = p.off;
    // Split at VMA boundaries: mark VMAs that receive pages, drop special ones.
    while (addr < end) {
      const v = vmas.find((x) => x.start <= addr && addr < x.end);
      if (!v) throw new GodwitError(`task ${t.pid}: pagemap page 0x${addr.toString(16)} lies in no VMA of mm-${t.pid}.img`);
      const stop = v.end < end ? v.end : end;
      if (!isSpecial(v)) {
        v.hasPages = true;
        // Merge with the previous range only inside one VMA: the restorer fills some VMAs by userfaultfd and
        // the others by process_vm_writev, and a range must be one or the other.
        const last = out[out.length - 1];
        if (last && last.level === p.level && last.addr + last.len === addr && last.off + last.len === o && last.addr >= v.start) last.len += stop - addr;
        else out.push({ addr, len: stop - addr, off: o, level: p.level });
      }
      o += stop - addr;
      addr = stop;
    }
  }
  return { ranges: out, levels };
}

/** Gaps in the dumped layout where the trampoline can live without colliding with any restored VMA. */
export function trampolineHints(vmas: Vma[]): bigint[] {
  const hints: bigint[] = [];
  for (let a = 0x100000000n; a < 0x7f0000000000n && hints.length < 16; a += 0x1000000000n) {
    if (!vmas.some((v) => v.start < a + TRAMPOLINE_SIZE && a < v.end)) hints.push(a);
  }
  return hints;
}

export async function createTrampoline(ctx: RestoreContext, t: TaskImage, vmas: Vma[]): Promise<bigint> {
  const hints = trampolineHints(vmas);
  const b = Buffer.alloc(16 + 8 * hints.length);
  b.writeInt32LE(t.pid, 0);
  b.writeUInt32LE(hints.length, 4);
  b.writeBigUInt64LE(TRAMPOLINE_SIZE, 8);
  hints.forEach((h, i) => b.writeBigUInt64LE(h, 16 + 8 * i));
  const out = await ctx.restorer!.request(Op.TRAMPOLINE, b, `map the syscall trampoline in ${t.pid}`);
  const at = out.readBigUInt64LE(0);
  ctx.trampolines.set(t.pid, at);
  return at;
}

function filePath(set: ImageSet, id: number, t: TaskImage, what: string): string {
  const reg = set.files.get(id)?.reg as Msg | undefined;
  if (!reg || typeof reg.name !== 'string')
    throw new GodwitError(`task ${t.pid}: ${what} refers to file id ${id}, which files.img does not hold as a regular file`);
  return reg.name;
}

/** Unmap the stub, recreate vdso and every VMA (file mappings opened in the task and closed again). */
export async function mapVmas(ctx: RestoreContext, t: TaskImage, vmas: Vma[]): Promise<void> {
  const set = ctx.set!;
  const tramp = ctx.trampolines.get(t.pid)!;
  const b = new Batch();
  b.call('munmap', [0n, tramp], 'unmap the stub below the trampoline');
  b.call('munmap', [tramp + TRAMPOLINE_SIZE, TASK_SIZE - (tramp + TRAMPOLINE_SIZE)], 'unmap the stub above the trampoline');
  const vvar = vmas.filter((v) => v.status & VMA.VVAR).sort((a, c) => (a.start < c.start ? -1 : 1))[0];
  const vdso = vmas.find((v) => v.status & VMA.VDSO);
  if (vdso) b.call('arch_prctl', [ARCH_MAP_VDSO_64, (vvar ?? vdso).start], 'map [vvar]+[vdso] at the dumped address');
  const fds = new Map<string, ReturnType<Batch['call']>>();
  const fetch = restorerFetcher(b, ctx.restorerPid, ctx.restorerPidfd);
  const shared = shmemMapper(ctx, t, b, fetch);
  for (const v of vmas) {
    if (isSpecial(v)) continue;
    const why = unsupportedVma(v, !!ctx.container?.record.ns.includes('ipc'));
    if (why) throw new GodwitError(`task ${t.pid}: mapping 0x${v.start.toString(16)}-0x${v.end.toString(16)} is ${why}, which restore does not support yet`);
    if (v.status & VMA.AIORING) continue; // made by io_setup once the others are in place (restore/aio.ts)
    let prot = v.prot;
    if (v.hasPages && !(v.flags & MAP_SHARED)) prot |= PROT_WRITE;
    const flags = (v.flags & (MAP_SHARED | MAP_PRIVATE | MAP_DROPPABLE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_NORESERVE)) | MAP_FIXED_NOREPLACE;
    const what = `map 0x${v.start.toString(16)}-0x${v.end.toString(16)}`;
    if (v.status & VMA.SYSVIPC) {
      // shmid holds the segment id, recreated with that id in the container's ipc namespace.
      b.call('shmat', [Number(v.shmid), v.start, v.prot & PROT_WRITE ? 0 : SHM_RDONLY], `attach SysV shm ${v.shmid} at 0x${v.start.toString(16)}`);
      continue;
    }
    if (isShmemVma(v)) {
      shared.map(v, prot, flags, what); // shared anonymous memory and memfds: restore/shmem.ts
    } else if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      // A shared mapping's file is opened as its own file was (vma.fdflags): one now read-only may have been made
      // through a read-write fd, and the task may mprotect it writable again (VM_MAYWRITE). Images without
      // fdflags: read-write only when it is writable. A private mapping needs read access only, whatever the fd had.
      const sharedFile = (v.status & VMA.FILE_SHARED) !== 0;
      const mode = !sharedFile ? O_RDONLY : v.fdflags !== undefined ? v.fdflags & O_ACCMODE : v.prot & PROT_WRITE ? O_RDWR : O_RDONLY;
      const key = `${v.shmid}:${mode}`;
      let fd = fds.get(key);
      if (!fd && set.remaps.has(v.shmid)) {
        // A deleted file: the one inode made from its ghost, fetched from the restorer (restore/files.ts).
        fd = fetch.get(await openMappedGhost(ctx, v.shmid, mode, `task ${t.pid}: ${what}`), `the deleted file ${filePath(set, v.shmid, t, what)}`);
      } else if (!fd) {
        const p = filePath(set, v.shmid, t, what);
        fd = b.call('openat', [AT_FDCWD, b.str(p), mode | O_CLOEXEC, 0], `open ${p} for its mappings`);
        fds.set(key, fd);
      }
      b.call('mmap', [v.start, v.end - v.start, prot, flags & ~MAP_ANONYMOUS, fd, v.pgoff], what);
    } else {
      b.call('mmap', [v.start, v.end - v.start, prot, flags | MAP_ANONYMOUS, -1, 0], what);
    }
  }
  for (const fd of fds.values()) b.call('close', [fd], 'close a mapped file');
  fetch.closeAll();
  const res = await runBatch(ctx.restorer!, t.pid, b);
  // mmap with MAP_FIXED_NOREPLACE never moves a mapping, but check: a kernel without it ignores the flag.
  b.calls.forEach((c, i) => {
    if ((c.name === 'mmap' && res[i] !== c.args[0]) || (c.name === 'shmat' && res[i] !== c.args[1]))
      throw new GodwitError(`task ${t.pid}: ${c.what} landed at 0x${res[i].toString(16)}`);
  });
}

/**
 * Anonymous private VMAs at least this big get their pages by UFFDIO_COPY (no zero-fill, no fault per page);
 * below it the userfaultfd's own setup (an injected syscall, a pidfd round trip) costs more than it saves.
 */
const UFFD_MIN_BYTES = 1n << 20n;
const O_NONBLOCK = 0o4000;
/**
 * Only faults from user mode are reported. Without it, userfaultfd(2) needs CAP_SYS_PTRACE in the initial user
 * namespace (vm.unprivileged_userfaultfd is 0), which a task restored into a user namespace of its own lacks: EPERM.
 * Nothing here relies on kernel-mode faults: the ranges are filled by UFFDIO_COPY and unregistered before the task runs.
 */
const UFFD_USER_MODE_ONLY = 1;

async function withUffd<T>(ctx: RestoreContext, t: TaskImage, vmas: Vma[], fn: () => Promise<T>): Promise<T> {
  const regions = vmas.filter(
    (v) => v.hasPages && !isSpecial(v) && v.status & VMA.ANON_PRIVATE && !(v.status & VMA.FILE_PRIVATE) && v.end - v.start >= UFFD_MIN_BYTES,
  );
  if (!regions.length) return fn();
  const b = new Batch();
  b.call('userfaultfd', [O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY], 'create a userfaultfd to fill memory with');
  const [ufd] = await runBatch(ctx.restorer!, t.pid, b);
  const req = Buffer.alloc(12 + 16 * regions.length);
  req.writeInt32LE(t.pid, 0);
  req.writeInt32LE(Number(ufd), 4);
  req.writeUInt32LE(regions.length, 8);
  regions.forEach((v, i) => {
    req.writeBigUInt64LE(v.start, 12 + 16 * i);
    req.writeBigUInt64LE(v.end - v.start, 20 + 16 * i);
  });
  const done = Buffer.alloc(12);
  done.writeInt32LE(t.pid, 0);
  done.writeInt32LE(-1, 4);
  const release = async (): Promise<void> => {
    await ctx.restorer!.request(Op.UFFD, done, `unregister memory of ${t.pid} from userfaultfd`);
    const c = new Batch();
    c.call('close', [Number(ufd)], 'close the userfaultfd');
    await runBatch(ctx.restorer!, t.pid, c);
  };
  let result: T;
  try {
    await ctx.restorer!.request(Op.UFFD, req, `register memory of ${t.pid} with userfaultfd`);
    result = await fn();
  } catch (e) {
    // The tree is killed after this: the first failure is the one to report, not a release that failed after it.
    await release().catch(() => undefined);
    throw e;
  }
  await release(); // a failed unregister on the way to a running task is an error, with its errno and pid
  return result;
}

/** What the page path did for one task. */
export interface PageStats {
  /** Bytes of page data the task's ranges hold. */
  bytes: number;
  /** Bytes written into the task (the rest were all-zero pages left unpopulated). */
  written: number;
  zeroSkipped: number;
  /** Bytes of the pages files read with O_DIRECT (files not in the page cache, see native/src/restore/pagein.c). */
  readDirect: number;
}

/**
 * Writes the task's pages. The restorer reads the pages files itself (CRIU's plain pages-N.img, or godwit's
 * pages-N.gwz: each chunk checked and decompressed there, on worker threads), so no page byte passes through
 * Node; here only the container's index is read and checked, and handed over with the ranges. A pre-dump chain
 * takes one LOAD_PAGES pass per image it draws from (each page is in exactly one of them).
 */
export async function writePages(ctx: RestoreContext, t: TaskImage, pages: TaskPages, vmas: Vma[] = []): Promise<PageStats> {
  if (pages.ranges.length === 0) return { bytes: 0, written: 0, zeroSkipped: 0, readDirect: 0 };
  return withUffd(ctx, t, vmas, async () => {
    const stats: PageStats = { bytes: 0, written: 0, zeroSkipped: 0, readDirect: 0 };
    for (const [level, ranges] of byLevel(pages.ranges)) {
      const s = await loadPages(ctx, t, pages.levels[level]!, ranges);
      stats.bytes += s.bytes;
      stats.written += s.written;
      stats.zeroSkipped += s.zeroSkipped;
      stats.readDirect += s.readDirect;
    }
    return stats;
  });
}

/** Ranges grouped by chain level, each group in page-stream order (the restorer reads a file front to back). */
function byLevel(ranges: PageRange[]): Map<number, PageRange[]> {
  const out = new Map<number, PageRange[]>();
  for (const r of ranges) {
    let l = out.get(r.level);
    if (!l) out.set(r.level, (l = []));
    l.push(r);
  }
  for (const l of out.values()) l.sort((a, b) => (a.off < b.off ? -1 : a.off > b.off ? 1 : 0));
  return out;
}

/** Ranges per LOAD_PAGES request: 24 bytes each, so a request stays well inside the restorer's 64 MiB bound. */
const RANGES_PER_REQUEST = 1 << 20;

/** Where the page data of one chain level is, and in which form. */
async function pagesSource(t: TaskImage, level: ChainLevel): Promise<{ file: string; size: number; chunks: ChunkInfo[]; chunkSize: number }> {
  const plain = path.join(level.dir, plainPagesName(level.pagesId));
  const packed = path.join(level.dir, containerName(level.pagesId));
  if (fs.existsSync(plain)) return { file: plain, size: fs.statSync(plain).size, chunks: [], chunkSize: 0 };
  if (!fs.existsSync(packed))
    throw new GodwitError(`task ${t.pid}: neither ${plain} nor ${packed} exists (the pagemap of ${level.dir} refers to pages id ${level.pagesId})`, { code: 'EBADIMAGE' });
  // Header, trailer and index are checked here (their crc32s, a gapless chunk sequence); the chunks themselves
  // are checked by the restorer as it reads them.
  const r = await ContainerReader.open(packed);
  await r.close();
  return { file: packed, size: r.size, chunks: [...r.chunks], chunkSize: r.header.chunkSize };
}

function loadPagesRequest(pid: number, fd: number, src: { size: number; chunks: ChunkInfo[]; chunkSize: number }, part: PageRange[]): Buffer {
  const nc = src.chunks.length;
  const b = Buffer.alloc(32 + 24 * part.length + 32 * nc);
  b.writeInt32LE(pid, 0);
  b.writeInt32LE(fd, 4);
  b.writeUInt32LE(nc ? 1 : 0, 8);
  b.writeUInt32LE(part.length, 12);
  b.writeUInt32LE(nc, 16);
  b.writeUInt32LE(src.chunkSize, 20);
  b.writeBigUInt64LE(BigInt(src.size), 24);
  let at = 32;
  for (const x of part) {
    b.writeBigUInt64LE(x.addr, at);
    b.writeBigUInt64LE(x.len, at + 8);
    b.writeBigUInt64LE(x.off, at + 16);
    at += 24;
  }
  for (const c of src.chunks) {
    b.writeBigUInt64LE(BigInt(c.fileOffset), at);
    b.writeBigUInt64LE(BigInt(c.offset), at + 8);
    b.writeUInt32LE(c.length, at + 16);
    b.writeUInt32LE(c.compressedLength, at + 20);
    b.writeUInt32LE(c.crc >>> 0, at + 24);
    at += 32;
  }
  return b;
}

async function loadPages(ctx: RestoreContext, t: TaskImage, level: ChainLevel, ranges: PageRange[]): Promise<PageStats> {
  const src = await pagesSource(t, level);
  const name = level.dir === ctx.set!.dir ? path.basename(src.file) : src.file;
  const stats: PageStats = { bytes: 0, written: 0, zeroSkipped: 0, readDirect: 0 };
  for (const x of ranges) {
    if (x.off + x.len > BigInt(src.size))
      throw new ImageError(name, Number(x.off), `page data ends at ${src.size} but the pagemap of task ${t.pid} needs bytes up to ${x.off + x.len} (pagemap and pages file disagree)`);
    stats.bytes += Number(x.len);
  }
  const fd = await openInRestorer(ctx, src.file, O_RDONLY, undefined, 0, true);
  try {
    for (let i = 0; i < ranges.length; i += RANGES_PER_REQUEST) {
      const req = loadPagesRequest(t.pid, fd, src, ranges.slice(i, i + RANGES_PER_REQUEST));
      let out: Buffer;
      try {
        out = await ctx.restorer!.request(Op.LOAD_PAGES, req, `write pages of ${t.pid} from ${name}`);
      } catch (e) {
        // Damage the restorer found in the file comes with its offset and what is wrong: report it as such.
        const p = (e as { payload?: Buffer }).payload;
        if (p && p.length > 8) throw new ImageError(name, Number(p.readBigUInt64LE(0)), p.subarray(8).toString(), { cause: e });
        throw e;
      }
      stats.written += Number(out.readBigUInt64LE(0));
      stats.zeroSkipped += Number(out.readBigUInt64LE(8));
      stats.readDirect += Number(out.readBigUInt64LE(16));
    }
  } finally {
    await closeInRestorer(ctx, [fd]);
  }
  return stats;
}

/**
 * FILE as the restored tree sees it, or with `host` as this host sees it (the image directory, the restorer's
 * /proc/self): hostPath(), resolved from the root the restorer started in, also inside a container.
 */
export async function openInRestorer(ctx: RestoreContext, file: string, flags: number, pos?: bigint, mode = 0, host = false): Promise<number> {
  const p = Buffer.from((host ? hostPath(path.resolve(file)) : file) + '\0');
  const b = Buffer.alloc(20 + p.length);
  b.writeInt32LE(flags, 0);
  b.writeUInt32LE(mode, 4);
  b.writeUInt32LE(pos !== undefined ? 1 : 0, 8);
  b.writeBigUInt64LE(pos ?? 0n, 12);
  p.copy(b, 20);
  const out = await ctx.restorer!.request(Op.OPEN, b, `open ${file}`);
  return out.readInt32LE(0);
}

export async function closeInRestorer(ctx: RestoreContext, fds: number[]): Promise<void> {
  if (!fds.length) return;
  const b = Buffer.alloc(4 * fds.length);
  fds.forEach((fd, i) => b.writeInt32LE(fd, 4 * i));
  await ctx.restorer!.request(Op.CLOSE, b, 'close restorer fds');
}

/** Protections back to the dumped ones, guard regions, madvise bits, and the mm fields. */
export async function finishMemory(ctx: RestoreContext, t: TaskImage, vmas: Vma[]): Promise<void> {
  const set = ctx.set!;
  const mm = t.mm;
  const b = new Batch();
  // Guards first: the kernel refuses them in a locked (mlock) mapping, which the loop below may make.
  for (const g of guardsOf(t))
    b.call('madvise', [g.start, g.end - g.start, MADV_GUARD_INSTALL], `guard region 0x${g.start.toString(16)}-0x${g.end.toString(16)}`);
  for (const v of vmas) {
    if (isSpecial(v)) continue;
    if (v.hasPages && !(v.flags & MAP_SHARED) && !(v.prot & PROT_WRITE))
      b.call('mprotect', [v.start, v.end - v.start, v.prot], `protect 0x${v.start.toString(16)} as dumped`);
    for (const adv of MADVICES)
      if (v.madv & (1n << BigInt(adv)))
        b.call('madvise', [v.start, v.end - v.start, adv], `madvise(${adv}) 0x${v.start.toString(16)}`, { allowFail: OPTIONAL_MADVICES.has(adv) });
    // VM_LOCKED ("lo"): locked only now, after the pages are in, since MAP_LOCKED at mmap time would populate
    // the area with zero pages that UFFDIO_COPY then refuses (EEXIST).
    if (v.flags & MAP_LOCKED) b.call('mlock', [v.start, v.end - v.start], `mlock 0x${v.start.toString(16)} (MAP_LOCKED)`);
  }
  const exeId = Number(mm.exe_file_id ?? 0);
  const exe = exeId ? filePath(set, exeId, t, 'the executable (mm exe_file_id)') : null;
  let exeFd: ResultRef | null = null;
  if (exe && set.remaps.has(exeId)) {
    // Deleted: the inode made from its ghost (its mappings' one), fetched from the restorer and kept for the
    // PR_SET_MM_MAP below, in a batch of its own.
    const fetch = restorerFetcher(b, ctx.restorerPid, ctx.restorerPidfd);
    const got = fetch.get(await openMappedGhost(ctx, exeId, O_RDONLY, `task ${t.pid}: executable`), `the deleted executable ${exe}`);
    exeFd = b.call('fcntl', [got, F_DUPFD_CLOEXEC, 0], `keep the deleted executable ${exe}`);
    fetch.closeAll();
  } else if (exe) exeFd = b.call('openat', [AT_FDCWD, b.str(exe), O_RDONLY | O_CLOEXEC, 0], `open the executable ${exe}`);
  const res = await runBatch(ctx.restorer!, t.pid, b);
  const fd = exeFd ? Number(res[exeFd.result]) : -1;

  const auxv = (mm.mm_saved_auxv as bigint[] | undefined) ?? [];
  const m = new Batch();
  const auxBuf = Buffer.alloc(8 * auxv.length);
  auxv.forEach((v, i) => auxBuf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), 8 * i));
  const auxRef = m.data(auxBuf);
  const map = Buffer.alloc(104);
  const fields = ['mm_start_code', 'mm_end_code', 'mm_start_data', 'mm_end_data', 'mm_start_brk', 'mm_brk',
    'mm_start_stack', 'mm_arg_start', 'mm_arg_end', 'mm_env_start', 'mm_env_end'];
  fields.forEach((f, i) => map.writeBigUInt64LE(BigInt((mm[f] as bigint | undefined) ?? 0n), 8 * i));
  // The struct holds a pointer to auxv, so compute its scratch address: the scratch area starts one page
  // after the trampoline (see native/src/restore/inject.c).
  map.writeBigUInt64LE(ctx.trampolines.get(t.pid)! + PAGE + BigInt(auxRef.scratch), 88);
  map.writeUInt32LE(auxBuf.length, 96);
  map.writeInt32LE(fd, 100);
  const mapRef = m.data(map);
  m.call('prctl', [PR_SET_MM, PR_SET_MM_MAP, mapRef, 104, 0], 'set mm fields (PR_SET_MM_MAP)');
  if (fd >= 0) m.call('close', [fd], 'close the executable');
  await runBatch(ctx.restorer!, t.pid, m);
}
