/**
 * Shared memory objects: MAP_SHARED|MAP_ANONYMOUS areas (shmem files the kernel names "/dev/zero (deleted)")
 * and memfds, mapped or open as fds. Each object is dumped once however many processes share it, as CRIU
 * does: its content in pagemap-shmem-<shmid>.img + pages-<id> (pagemap entries carry offsets into the
 * object), memfds also in memfd.img (name, size, seals, owner, mode) and files.img (MEMFD entries per open file
 * description). shmid is the object's inode number; a memfd mapping's vma.shmid is its MEMFD file id.
 *
 * Content is read through /proc/PID/map_files or /proc/PID/fd while the tree is frozen (read() of a shmem
 * file also returns swapped-out pages); all-zero pages are left out: restore starts from a zero-filled object.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { PageWriter } from '../images/container-writer';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import { FD_TYPES, fown, O_CLOEXEC } from './filetable';
import { mapFilesName } from './proc/maps';
import type { ProcFdInfo } from './proc/fdinfo';
import { procPath, toSysError } from './proc/read';
import { Mapping, VMA_ANON_SHARED, VMA_AREA_MEMFD, VMA_AREA_SYSVIPC } from './vma';

const PAGE = 4096;
/** Bytes read from a shmem object per read(): large enough to keep syscalls rare, small enough to bound memory. */
const READ_CHUNK = 4 << 20;
const F_GET_SEALS = 1034;
const PE_PRESENT = 4;
const MEMFD_PREFIX = '/memfd:';

export interface ShmemObject {
  shmid: bigint;
  kind: 'anon' | 'memfd';
  size: bigint;
  /** A path that opens the object while the tree is frozen. */
  source: string;
  pid: number;
  /** memfd only: memfd.img inode_id, name, owner. */
  inodeId?: number;
  name?: string;
  uid?: number;
  gid?: number;
  /** st_mode (fchmod'ed permissions too). */
  mode?: number;
}

/** The tree's shared memory objects, by inode number (all shmem files live on one internal mount). */
export class ShmemTable {
  readonly objects = new Map<bigint, ShmemObject>();
  private nextInodeId = 1;

  get size(): number {
    return this.objects.size;
  }

  private memfdObject(ino: bigint, pid: number, source: string, link: string, st: fs.BigIntStats): ShmemObject {
    let o = this.objects.get(ino);
    if (!o) {
      const name = link.replace(/ \(deleted\)$/, '').slice(MEMFD_PREFIX.length);
      o = { shmid: ino, kind: 'memfd', size: st.size, source, pid, inodeId: this.nextInodeId++, name, uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode) };
      this.objects.set(ino, o);
    }
    return o;
  }

  /** Registers the shmem mappings of `pid`; memfd mappings get their MEMFD file id as vma.shmid. */
  addMappings(ctx: CollectContext, pid: number, mappings: Mapping[]): void {
    for (const m of mappings) {
      const e = m.entry;
      if (e.status & VMA_AREA_SYSVIPC) continue;
      const isMemfd = (e.status & VMA_AREA_MEMFD) !== 0;
      if (!isMemfd && !(e.status & VMA_ANON_SHARED)) continue;
      const source = procPath(pid, `map_files/${mapFilesName(m.proc)}`);
      let st: fs.BigIntStats;
      try {
        st = fs.statSync(source, { bigint: true });
      } catch (err) {
        throw new GodwitError(`pid ${pid} mapping 0x${e.start.toString(16)}-0x${e.end.toString(16)} ${m.proc.path}: cannot open the shared memory object behind it`, { cause: err });
      }
      const ino = BigInt(m.proc.inode);
      if (isMemfd) {
        const o = this.memfdObject(ino, pid, source, m.proc.path, st);
        const flags = e.fdflags ?? 0;
        e.shmid = BigInt(memfdFileEntry(ctx, o, flags, 0n));
      } else if (!this.objects.has(ino)) {
        this.objects.set(ino, { shmid: ino, kind: 'anon', size: st.size, source, pid });
      }
    }
  }

  /** A memfd fd: its MEMFD file entry id (one per open file description). */
  addFd(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): number {
    const o = this.memfdObject(c.proc.stat.ino, pid, procPath(pid, `fd/${c.fd}`), c.link, c.proc.stat);
    return memfdFileEntry(ctx, o, info.flags & ~O_CLOEXEC, info.pos);
  }
}

function memfdFileEntry(ctx: CollectContext, o: ShmemObject, flags: number, pos: bigint): number {
  return ctx.files.add(`memfd:${o.shmid}:${flags}:${pos}`, (id) => ({
    type: FD_TYPES.MEMFD,
    id,
    memfd: { id, flags, pos, fown: fown(), inode_id: o.inodeId },
  }));
}

/** Where the shmem step writes page data: a new pages-<id> file per object (CRIU numbers them the same way). */
export type PageWriterFactory = (pagesId: number) => Promise<PageWriter>;

const ZERO_PAGE = Buffer.alloc(PAGE);

/**
 * Reads every object (the tree must be frozen), writes its non-zero pages to a new pages file, and adds
 * pagemap-shmem-<shmid>.img and memfd.img to the image set. Returns the bytes of page data written.
 */
export async function dumpShmem(
  ctx: CollectContext,
  table: ShmemTable,
  firstPagesId: number,
  newWriter: PageWriterFactory,
): Promise<{ bytes: number; writers: PageWriter[] }> {
  let pagesId = firstPagesId;
  let bytes = 0;
  const writers: PageWriter[] = [];
  for (const o of table.objects.values()) {
    const w = await newWriter(pagesId);
    writers.push(w);
    ctx.images.add('SHMEM_PAGEMAP', o.shmid, { pages_id: pagesId++ });
    bytes += await copyObject(ctx, o, w);
    if (o.kind === 'memfd') {
      let seals = 0;
      try {
        seals = (await ctx.helper.fdQuery({ pid: o.pid, path: o.source, kind: 'fcntl', cmd: F_GET_SEALS })).result;
      } catch (err) {
        throw new GodwitError(`pid ${o.pid} memfd:${o.name}: cannot read its seals`, { cause: err });
      }
      ctx.images.add('MEMFD_INODE', undefined, {
        name: o.name,
        uid: o.uid,
        gid: o.gid,
        mode: o.mode,
        size: o.size,
        shmid: Number(o.shmid),
        seals,
        inode_id: BigInt(o.inodeId!),
      });
    }
  }
  return { bytes, writers };
}

const objectName = (o: ShmemObject) => (o.kind === 'memfd' ? `memfd:${o.name}` : `${o.shmid}`);

async function copyObject(ctx: CollectContext, o: ShmemObject, w: PageWriter): Promise<number> {
  let fd: number;
  try {
    fd = fs.openSync(o.source, 'r');
  } catch (err) {
    throw new GodwitError(`pid ${o.pid}: cannot open shared memory object ${objectName(o)} (${o.source})`, { cause: err });
  }
  const size = Number(o.size);
  const buf = Buffer.alloc(Math.min(READ_CHUNK, Math.max(PAGE, size)));
  let written = 0;
  let run: { start: number; pages: number } | null = null;
  const flush = () => {
    if (!run) return;
    ctx.images.add('SHMEM_PAGEMAP', o.shmid, { vaddr: BigInt(run.start), compat_nr_pages: 0, flags: PE_PRESENT, nr_pages: BigInt(run.pages) });
    run = null;
  };
  try {
    for (let off = 0; off < size; ) {
      const want = Math.min(buf.length, size - off);
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, want, off);
      } catch (err) {
        throw toSysError(err, `read shared memory object ${objectName(o)} at offset ${off} (${o.source})`, o.pid);
      }
      if (n <= 0) break;
      // A short tail (a size not page-aligned) is padded with zeros: the object's pages are whole.
      const end = Math.ceil(n / PAGE) * PAGE;
      if (end > n) buf.fill(0, n, end);
      let pieceStart = -1;
      for (let p = 0; p < end; p += PAGE) {
        const zero = buf.subarray(p, p + PAGE).equals(ZERO_PAGE);
        if (!zero) {
          if (run && run.start + run.pages * PAGE === off + p) run.pages++;
          else {
            flush();
            run = { start: off + p, pages: 1 };
          }
          if (pieceStart < 0) pieceStart = p;
        }
        if ((zero || p + PAGE === end) && pieceStart >= 0) {
          const stop = zero ? p : p + PAGE;
          // A view, no copy: write() resolves only once the writer is done with the bytes (PageWriter.write),
          // and buf is refilled only after that.
          await w.write(buf.subarray(pieceStart, stop));
          written += stop - pieceStart;
          pieceStart = -1;
        }
      }
      off += n;
    }
    flush();
  } finally {
    fs.closeSync(fd);
  }
  return written;
}
