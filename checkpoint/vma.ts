/**
 * From /proc/PID/smaps to CRIU VmaEntry objects (mm-PID.img "vmas"), with the status bits CRIU gives them,
 * and the list of mappings godwit cannot dump yet (for preflight).
 */
import * as fs from 'node:fs';
import { mapFilesName, ProcVma } from './proc/maps';
import { procPath } from './proc/read';

// CRIU's VMA_AREA_* status bits (criu/include/image.h): part of the image ABI.
export const VMA_AREA_REGULAR = 1 << 0;
export const VMA_AREA_STACK = 1 << 1;
export const VMA_AREA_VSYSCALL = 1 << 2;
export const VMA_AREA_VDSO = 1 << 3;
export const VMA_AREA_HEAP = 1 << 5;
export const VMA_FILE_PRIVATE = 1 << 6;
export const VMA_FILE_SHARED = 1 << 7;
export const VMA_ANON_SHARED = 1 << 8;
export const VMA_ANON_PRIVATE = 1 << 9;
export const VMA_AREA_SYSVIPC = 1 << 10;
export const VMA_AREA_SOCKET = 1 << 11;
export const VMA_AREA_VVAR = 1 << 12;
export const VMA_AREA_AIORING = 1 << 13;
export const VMA_AREA_MEMFD = 1 << 14;
/**
 * Not a mapping: a guard region (madvise MADV_GUARD_INSTALL) inside one, kept as CRIU does, as an extra mm.img
 * VMA entry with only this status, after the mappings.
 */
export const VMA_AREA_GUARD = 1 << 16;

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
/**
 * A mapping type of its own (Linux 6.11, VmFlags dp): private anonymous memory the kernel may drop under memory
 * pressure (zeroes then), wiped on fork. Its pages are not dumped: a restore is one more such drop.
 */
export const MAP_DROPPABLE = 0x08;
export const MAP_ANONYMOUS = 0x20;
export const MAP_GROWSDOWN = 0x100;
export const MAP_LOCKED = 0x2000;
export const MAP_NORESERVE = 0x4000;
export const MAP_HUGETLB = 0x40000;
export const O_RDONLY = 0;
export const O_RDWR = 2;

const MADV_SEQUENTIAL = 2;
const MADV_RANDOM = 1;
const MADV_DONTFORK = 10;
const MADV_DONTDUMP = 16;
const MADV_MERGEABLE = 12;
const MADV_HUGEPAGE = 14;
const MADV_NOHUGEPAGE = 15;
const MADV_WIPEONFORK = 18;

/** VmaEntry of CRIU's vma.proto, as godwit's image layer encodes it. */
export interface VmaEntry {
  start: bigint;
  end: bigint;
  pgoff: bigint;
  shmid: bigint;
  prot: number;
  flags: number;
  status: number;
  fd: bigint;
  madv?: bigint;
  fdflags?: number;
}

/** A mapping as godwit sees it: the image entry plus what the dump needs to know about it. */
export interface Mapping {
  entry: VmaEntry;
  proc: ProcVma;
  /** The mapped file (file mappings): its path as map_files/ resolves it, and its stat. */
  file?: { path: string; stat: fs.BigIntStats; deleted: boolean };
  /** Why this mapping cannot be dumped, if it cannot. */
  unsupported?: string;
  /** Its map_files link was gone: the mapping changed since smaps was read (a running process's mmap/mprotect). */
  changed?: boolean;
}

export const PAGE = 4096n;

function madvBits(f: Set<string>): bigint {
  let m = 0n;
  const set = (flag: string, bit: number) => {
    if (f.has(flag)) m |= 1n << BigInt(bit);
  };
  set('sr', MADV_SEQUENTIAL);
  set('rr', MADV_RANDOM);
  set('dc', MADV_DONTFORK);
  set('dd', MADV_DONTDUMP);
  set('mg', MADV_MERGEABLE);
  set('hg', MADV_HUGEPAGE);
  set('nh', MADV_NOHUGEPAGE);
  set('wf', MADV_WIPEONFORK);
  return m;
}

/**
 * Classifies every mapping. `fileId` returns the files.img id of a mapped file (registering it, a deleted one
 * with its ghost, whose content it reads through `from`, the map_files link); it is called for regular file
 * mappings only.
 */
export function buildMappings(
  pid: number,
  vmas: ProcVma[],
  fileId?: (path: string, stat: fs.BigIntStats, deleted: boolean, openFlags: number, from: string) => number,
): Mapping[] {
  const out: Mapping[] = [];
  let prevEnd = 0n;
  for (const v of vmas) {
    const f = v.vmFlags;
    const e: VmaEntry = {
      start: v.start,
      end: v.end,
      pgoff: v.offset,
      shmid: 0n,
      prot: (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) | (v.exec ? PROT_EXEC : 0),
      flags: v.shared ? MAP_SHARED : MAP_PRIVATE,
      status: 0,
      fd: -1n,
    };
    if (f.has('dp')) e.flags = MAP_DROPPABLE;
    if (f.has('gd')) e.flags |= MAP_GROWSDOWN;
    if (f.has('lo')) e.flags |= MAP_LOCKED;
    if (f.has('nr')) e.flags |= MAP_NORESERVE;
    if (f.has('ht')) e.flags |= MAP_HUGETLB;
    const madv = madvBits(f);
    if (madv) e.madv = madv;
    const m: Mapping = { entry: e, proc: v };
    const name = v.path;

    if (name === '[vvar_vclock]' && out.length && out[out.length - 1]!.entry.status & VMA_AREA_VVAR) {
      // CRIU 4.x keeps [vvar] and [vvar_vclock] as one VVAR area: they are mapped and moved together.
      const prev = out[out.length - 1]!;
      if (prev.entry.end === v.start) {
        prev.entry.end = v.end;
        prevEnd = v.end;
        continue;
      }
    }

    if (name === '[vsyscall]' || name === '[vectors]') {
      e.status = VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE;
      e.flags |= MAP_ANONYMOUS;
    } else if (name === '[vdso]') {
      e.status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE | (e.prot === (PROT_READ | PROT_EXEC) ? VMA_AREA_VDSO : 0);
      e.flags |= MAP_ANONYMOUS;
    } else if (name === '[vvar]' || name === '[vvar_vclock]') {
      e.status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE | (e.prot === PROT_READ ? VMA_AREA_VVAR : 0);
      e.flags |= MAP_ANONYMOUS;
    } else if (v.inode === 0 && (v.devMajor | v.devMinor) === 0) {
      // Anonymous memory: [heap], [stack], [anon:...] names or none.
      e.status = VMA_AREA_REGULAR | (v.shared ? VMA_ANON_SHARED : VMA_ANON_PRIVATE);
      if (name === '[heap]') e.status |= VMA_AREA_HEAP;
      e.flags |= MAP_ANONYMOUS;
      if (v.shared) m.unsupported = 'shared anonymous memory';
    } else if (name === '/[aio] (deleted)') {
      // An AIO ring (io_setup): its pages are dumped like private memory (checkpoint/aio.ts records the ring).
      e.status = VMA_AREA_REGULAR | VMA_AREA_AIORING;
      e.flags |= MAP_ANONYMOUS;
    } else if (name === '/dev/zero (deleted)' || name.startsWith('/SYSV') || name.startsWith('/memfd:')) {
      // shmem-backed: MAP_SHARED|MAP_ANONYMOUS (shown as /dev/zero), SysV shm, memfd.
      e.status = VMA_AREA_REGULAR | VMA_ANON_SHARED;
      e.shmid = BigInt(v.inode);
      if (name.startsWith('/SYSV')) {
        e.status |= VMA_AREA_SYSVIPC;
        // The segment's bytes travel with its ipc namespace (a container dump): only then can it come back.
        if (!ownIpcNamespace(pid)) m.unsupported = 'SysV shared memory outside a container (its ipc namespace is the host\'s)';
      } else if (name.startsWith('/memfd:')) {
        // Dumped by shmem.ts (content once per memfd; vma.shmid becomes its MEMFD file id).
        e.status = VMA_AREA_REGULAR | VMA_AREA_MEMFD | (v.shared ? VMA_FILE_SHARED : VMA_FILE_PRIVATE);
        e.fdflags = v.shared && f.has('mw') ? O_RDWR : O_RDONLY;
      } else {
        // Shared anonymous memory: content dumped once per object by shmem.ts.
        e.flags |= MAP_ANONYMOUS;
      }
    } else {
      // A file mapping: map_files/ gives the file itself even when its path is gone.
      const link = procPath(pid, `map_files/${mapFilesName(v)}`);
      let stat: fs.BigIntStats | undefined;
      let path = name;
      try {
        stat = fs.statSync(link, { bigint: true });
        path = fs.readlinkSync(link, 'latin1');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') m.changed = true;
        if (code === 'ENXIO') m.unsupported = `mapping of ${name || 'a special file'} (socket or aio ring)`;
        else m.unsupported = `mapping of ${name || 'an unknown object'} (${code ?? 'map_files unreadable'})`;
      }
      const deleted = path.endsWith(' (deleted)');
      if (deleted) path = path.slice(0, -' (deleted)'.length);
      e.status = VMA_AREA_REGULAR | (v.shared ? VMA_FILE_SHARED : VMA_FILE_PRIVATE);
      e.fdflags = v.shared && f.has('mw') ? O_RDWR : O_RDONLY;
      if (stat) {
        const type = stat.mode & 0o170000n;
        if (type !== 0o100000n) {
          m.unsupported = `mapping of a non-regular file ${path}`;
        } else {
          m.file = { path, stat, deleted };
          // A deleted file comes back from a ghost copy; a removed name of a file still linked elsewhere would
          // need the same inode (a MAP_SHARED one is shared with those names), which a copy is not.
          if (deleted && stat.nlink !== 0n) m.unsupported = `mapping of the removed name ${path} of a file that still has other links`;
          else if (fileId) e.shmid = BigInt(fileId(path, stat, deleted, e.fdflags, link));
        }
      }
    }
    if ((f.has('io') || f.has('pf')) && !(e.status & VMA_AREA_VVAR))
      m.unsupported ??= `device memory (VM_IO/VM_PFNMAP) ${name}`;
    if (f.has('ht')) m.unsupported ??= 'hugetlb mapping';
    if (e.flags & MAP_GROWSDOWN && prevEnd < e.start) {
      // CRIU records the guard page below a grows-down stack as part of the area.
      e.start -= PAGE;
    }
    prevEnd = v.end;
    out.push(m);
  }
  return out;
}

function ownIpcNamespace(pid: number): boolean {
  try {
    return fs.readlinkSync(procPath(pid, 'ns/ipc')) !== fs.readlinkSync('/proc/self/ns/ipc');
  } catch {
    return false;
  }
}

/** Private mappings whose anonymous pages are dumped (all of them: RELRO in read-only file maps included). */
export function dumpsPrivatePages(e: VmaEntry): boolean {
  if (!(e.status & VMA_AREA_REGULAR)) return false; // vsyscall
  if (e.status & VMA_AREA_VVAR) return false; // kernel data, remapped at restore
  if (e.status & VMA_AREA_AIORING) return true; // shared with the kernel only: the ring's events, head and tail
  return (e.flags & MAP_PRIVATE) !== 0;
}

/** CRIU's rule for PE_LAZY: private anonymous memory that is not the vdso and not locked. */
export function canBeLazy(e: VmaEntry): boolean {
  return (
    (e.flags & MAP_ANONYMOUS) !== 0 &&
    (e.flags & MAP_PRIVATE) !== 0 &&
    (e.flags & MAP_LOCKED) === 0 &&
    (e.status & (VMA_AREA_VDSO | VMA_AREA_VSYSCALL)) === 0
  );
}
