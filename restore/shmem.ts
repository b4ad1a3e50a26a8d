/**
 * Shared memory objects (checkpoint/shmem.ts): each is made once in the restorer, so that every task that
 * shared it at dump time maps the same object again:
 *   - shared anonymous memory: an anonymous MAP_SHARED area of the restorer, reopened through
 *     /proc/self/map_files (the fd is the same "/dev/zero (deleted)" shmem file the kernel would have made),
 *     then unmapped from the restorer; /proc is the host's, reached from the root the restorer started in (in a
 *     container's mount namespace /proc has no entry for the restorer);
 *   - memfds: memfd_create with the dumped name, size, owner and mode; seals are added once every mapping exists
 *     (F_SEAL_WRITE/FUTURE_WRITE would refuse the writable ones).
 * Content comes from pagemap-shmem-<shmid>.img + pages-<id> (offsets into the object), written with pwrite.
 * Tasks map the object through a pidfd_getfd copy (in a container, through the pidfd of the restorer its stubs
 * kept); MEMFD fds are new open file descriptions of it, also opened through the host's /proc, except the first
 * read-write one, which is memfd_create's own: a reopen for writing counts as a writer of the inode (memfd_create's
 * file does not), and the kernel refuses to exec a file with writers (ETXTBSY), which an exec of the memfd
 * (execveat(fd, "", AT_EMPTY_PATH)) did not meet before the dump.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openPages, PageDataReader } from '../images/container-reader';
import { PageChain, pagemapOf } from '../images/pagechain';
import { fileNameFor } from '../images';
import { GodwitError } from '../util/errors';
import type { RestoreContext } from './context';
import { Msg, readEntries } from './image-files';
import { liveTasks, TaskImage } from './load';
import { openInRestorer, Vma } from './memory';
import { Batch, RestorerFetcher, runLocal } from './syscalls';

const VMA_ANON_SHARED = 256;
const VMA_SYSVIPC = 1024;
const VMA_MEMFD = 16384;
const PROT_RW = 3;
const MAP_SHARED = 1;
const MAP_ANONYMOUS = 0x20;
const O_RDWR = 2;
const O_ACCMODE = 3;
const SEEK_SET = 0;
const F_SETFL = 4;
const O_CLOEXEC = 0o2000000;
const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const F_SEAL_SEAL = 1;
const F_ADD_SEALS = 1033;
const PAGE = 4096n;
/** Bytes per pwrite request into an object: a few round trips per MiB, well under the restorer's request cap. */
const WRITE_CHUNK = 1 << 20;
/** Largest shared object restore creates: a corrupted size must not make the restorer reserve terabytes. */
const MAX_OBJECT_BYTES = 1n << 40n;

interface RestoredObject {
  shmid: bigint;
  kind: 'anon' | 'memfd';
  size: bigint;
  /** Restorer fd of the object (read-write). */
  fd: number;
  /** A memfd's fd was given to a MEMFD file entry (createMemfdFile). */
  given?: boolean;
  seals: number;
  name: string;
}

interface ShmemState {
  /** By shmid (inode at dump time). */
  objects: Map<bigint, RestoredObject>;
  /** memfd.img entries by inode_id. */
  inodes: Map<number, Msg>;
}

const states = new WeakMap<RestoreContext, ShmemState>();

export function isShmemVma(v: Vma): boolean {
  return !(v.status & VMA_SYSVIPC) && (v.status & (VMA_ANON_SHARED | VMA_MEMFD)) !== 0;
}

function memfdInodes(ctx: RestoreContext): Map<number, Msg> {
  const m = new Map<number, Msg>();
  for (const e of readEntries(ctx.set!.dir, 'memfd.img') ?? []) m.set(Number(e.inode_id), e);
  return m;
}

function memfdInodeOfFile(ctx: RestoreContext, inodes: Map<number, Msg>, fileId: number, what: string): Msg {
  const f = ctx.set!.files.get(fileId);
  const mf = f?.memfd as Msg | undefined;
  if (!mf) throw new GodwitError(`${what} refers to file id ${fileId}, which files.img does not hold as a memfd`);
  const ino = inodes.get(Number(mf.inode_id));
  if (!ino) throw new GodwitError(`${what}: memfd inode ${mf.inode_id} is missing from memfd.img`);
  return ino;
}

/** What the tree needs: anonymous objects (size from the VMAs that map them) and memfd inodes. */
function neededObjects(ctx: RestoreContext, inodes: Map<number, Msg>): Map<bigint, { kind: 'anon' | 'memfd'; size: bigint; inode?: Msg }> {
  const out = new Map<bigint, { kind: 'anon' | 'memfd'; size: bigint; inode?: Msg }>();
  const memfd = (ino: Msg) => {
    const shmid = BigInt(Number(ino.shmid));
    if (!out.has(shmid)) out.set(shmid, { kind: 'memfd', size: BigInt((ino.size as bigint | undefined) ?? 0n), inode: ino });
  };
  for (const t of liveTasks(ctx.set!)) {
    for (const v of (t.mm.vmas as Msg[] | undefined) ?? []) {
      const status = Number(v.status ?? 0);
      if (status & VMA_SYSVIPC) continue;
      const what = `task ${t.pid} mapping 0x${(v.start as bigint).toString(16)}`;
      if (status & VMA_MEMFD) memfd(memfdInodeOfFile(ctx, inodes, Number(v.shmid), what));
      else if (status & VMA_ANON_SHARED) {
        const shmid = BigInt((v.shmid as bigint | undefined) ?? 0n);
        const end = BigInt((v.pgoff as bigint | undefined) ?? 0n) + (v.end as bigint) - (v.start as bigint);
        const have = out.get(shmid);
        if (!have) out.set(shmid, { kind: 'anon', size: end });
        else if (have.size < end) have.size = end;
      }
    }
    for (const fdi of t.fds) {
      const f = ctx.set!.files.get(Number(fdi.id));
      if (f && Number(f.type) === 18) memfd(memfdInodeOfFile(ctx, inodes, Number(fdi.id), `task ${t.pid} fd ${fdi.fd}`));
    }
  }
  return out;
}

/** Problems preflight reports before anything is created (missing images, absurd sizes). */
export function shmemProblems(ctx: RestoreContext): string[] {
  const problems: string[] = [];
  try {
    const objs = neededObjects(ctx, memfdInodes(ctx));
    for (const [shmid, o] of objs) {
      if (o.size > MAX_OBJECT_BYTES) problems.push(`shared memory object ${shmid} claims ${o.size} bytes: the image is damaged`);
      if (o.inode && o.inode.hugetlb_flag) problems.push(`memfd ${o.inode.name} is on hugetlbfs, which restore does not support yet`);
    }
  } catch (err) {
    problems.push((err as Error).message);
  }
  return problems;
}

/** Creates every shared object in the restorer with its content. Run before files and memory. */
export async function createShmemObjects(ctx: RestoreContext): Promise<void> {
  const inodes = memfdInodes(ctx);
  const st: ShmemState = { objects: new Map(), inodes };
  states.set(ctx, st);
  for (const [shmid, o] of neededObjects(ctx, inodes)) {
    let fd: number;
    let seals = 0;
    let name = '';
    if (o.kind === 'anon') {
      // The object may reach beyond every mapping left (its ends unmapped): keep all of it, as dumped.
      const extent = pagemapExtent(ctx, shmid);
      if (extent > o.size) o.size = extent;
      if (o.size > MAX_OBJECT_BYTES) throw new GodwitError(`shared memory object ${shmid} claims ${o.size} bytes: the image is damaged`);
      fd = await createAnon(ctx, shmid, o.size);
    } else {
      const ino = o.inode!;
      name = String(ino.name ?? '');
      seals = Number(ino.seals ?? 0);
      const b = new Batch();
      const f = b.call('memfd_create', [b.str(name), MFD_CLOEXEC | (seals === F_SEAL_SEAL ? 0 : MFD_ALLOW_SEALING)], `create memfd:${name}`);
      b.call('ftruncate', [f, o.size], `size memfd:${name}`);
      b.call('fchown', [f, Number(ino.uid ?? 0), Number(ino.gid ?? 0)], `owner of memfd:${name}`);
      // After fchown, which would clear set-id bits. Older images have no mode: memfd_create's default stays.
      if (ino.mode !== undefined) b.call('fchmod', [f, Number(ino.mode) & 0o7777], `mode of memfd:${name}`);
      const { results } = await runLocal(ctx.restorer!, b, `memfd:${name}`);
      fd = Number(results[0]);
      ctx.restorerFds.push(fd);
      // Without MFD_ALLOW_SEALING the kernel sets F_SEAL_SEAL itself: nothing is left to add.
      if (seals === F_SEAL_SEAL) seals = 0;
    }
    st.objects.set(shmid, { shmid, kind: o.kind, size: o.size, fd, seals, name });
    await fillObject(ctx, shmid, fd, o.size);
  }
}

/** End of the last page pagemap-shmem-<shmid>.img holds (0 when there is none). */
function pagemapExtent(ctx: RestoreContext, shmid: bigint): bigint {
  let end = 0n;
  for (const e of (readEntries(ctx.set!.dir, fileNameFor('SHMEM_PAGEMAP', shmid)) ?? []).slice(1)) {
    const n = BigInt((e.nr_pages as bigint | undefined) ?? BigInt(Number(e.compat_nr_pages ?? 0))) * PAGE;
    const stop = BigInt(e.vaddr as bigint) + n;
    if (stop > end) end = stop;
  }
  return end;
}

async function createAnon(ctx: RestoreContext, shmid: bigint, size: bigint): Promise<number> {
  const len = ((size + PAGE - 1n) / PAGE) * PAGE;
  const m = new Batch();
  m.call('mmap', [0n, len, PROT_RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0], `shared anonymous object ${shmid}`);
  const addr = BigInt.asUintN(64, (await runLocal(ctx.restorer!, m, `shared memory ${shmid}`)).results[0]);
  // Through the host's /proc (opened from the root the restorer started in): in a container's mount namespace
  // /proc belongs to the tree's pid namespace, where the restorer has no pid and /proc/self does not exist.
  const name = `/proc/self/map_files/${addr.toString(16)}-${(addr + len).toString(16)}`;
  const unmap = async (): Promise<void> => {
    const u = new Batch();
    u.call('munmap', [addr, len], `unmap shared object ${shmid} from the restorer`);
    await runLocal(ctx.restorer!, u, `shared memory ${shmid}`);
  };
  let fd: number;
  try {
    fd = await openInRestorer(ctx, name, O_RDWR, undefined, 0, true);
  } catch (err) {
    await unmap().catch(() => undefined); // the failed open is the error to report
    throw new GodwitError(`shared memory ${shmid}: cannot open the object in the restorer`, { cause: err });
  }
  ctx.restorerFds.push(fd);
  await unmap();
  return fd;
}

/** Writes the object's pages from pagemap-shmem-<shmid>.img, through the pre-dump chain (none: it stays zero-filled). */
async function fillObject(ctx: RestoreContext, shmid: bigint, fd: number, size: bigint): Promise<void> {
  const dir = ctx.set!.dir;
  const file = fileNameFor('SHMEM_PAGEMAP', shmid);
  const entries = readEntries(dir, file);
  if (!entries || entries.length === 0) return;
  const { pieces, levels } = new PageChain(dir).resolve(pagemapOf(entries, file), file);
  const readers = new Map<number, PageDataReader>();
  const readerOf = async (level: number): Promise<PageDataReader> => {
    let r = readers.get(level);
    if (r) return r;
    const l = levels[level]!;
    r = await openPages(l.dir, l.pagesId).catch((err) => {
      throw new GodwitError(`shared memory ${shmid}: the pages of ${file} (pages id ${l.pagesId}) cannot be read from ${l.dir}`, { cause: err });
    });
    readers.set(level, r);
    return r;
  };
  const limit = ((size + PAGE - 1n) / PAGE) * PAGE;
  try {
    for (const p of pieces) {
      if (p.addr + p.len > limit)
        throw new GodwitError(`${file}: pages at offset 0x${p.addr.toString(16)} (+${p.len}) lie beyond the object's ${size} bytes`);
      const reader = await readerOf(p.level);
      let pos = p.addr;
      let pending: Buffer[] = [];
      let pendingLen = 0;
      const flush = async () => {
        if (!pendingLen) return;
        const data = Buffer.concat(pending, pendingLen);
        const b = new Batch();
        b.call('pwrite64', [fd, b.data(data), data.length, pos], `write ${data.length} bytes of shared object ${shmid}`);
        const r = await runLocal(ctx.restorer!, b, `shared memory ${shmid}`);
        if (Number(r.results[0]) !== data.length) throw new GodwitError(`shared memory ${shmid}: short write at 0x${pos.toString(16)}`);
        pos += BigInt(data.length);
        pending = [];
        pendingLen = 0;
      };
      for await (const piece of reader.stream(Number(p.off), Number(p.off + p.len))) {
        pending.push(piece);
        pendingLen += piece.length;
        if (pendingLen >= WRITE_CHUNK) await flush();
      }
      await flush();
    }
  } finally {
    for (const r of readers.values()) await r.close();
  }
}

/** Adds to `b` what maps shared VMA `v` in task `t`: the object's fd is fetched from the restorer, then mmap. */
export function shmemMapper(ctx: RestoreContext, t: TaskImage, b: Batch, fetch: RestorerFetcher) {
  const st = states.get(ctx);
  return {
    map(v: Vma, prot: number, flags: number, what: string): void {
      if (!st) throw new GodwitError(`task ${t.pid}: shared memory objects were not created before the mappings`);
      let shmid = BigInt(v.shmid);
      if (v.status & VMA_MEMFD) shmid = BigInt(Number(memfdInodeOfFile(ctx, st.inodes, v.shmid, `task ${t.pid} ${what}`).shmid));
      const o = st.objects.get(shmid);
      if (!o) throw new GodwitError(`task ${t.pid}: ${what}: shared memory object ${shmid} was not created`);
      const fd = fetch.get(o.fd, `shared object ${shmid}`);
      b.call('mmap', [v.start, v.end - v.start, prot, flags & ~MAP_ANONYMOUS, fd, v.pgoff], what);
    },
  };
}

/** A MEMFD file entry: a new open file description of its memfd, at its flags and position. */
export async function createMemfdFile(ctx: RestoreContext, id: number, mf: Msg): Promise<number> {
  const st = states.get(ctx);
  if (!st) throw new GodwitError(`memfd file ${id}: shared memory objects were not created first`);
  const ino = memfdInodeOfFile(ctx, st.inodes, id, `file id ${id}`);
  const o = st.objects.get(BigInt(Number(ino.shmid)))!;
  const flags = Number(mf.flags ?? O_RDWR) & ~O_CLOEXEC;
  const pos = BigInt((mf.pos as bigint | undefined) ?? 0n);
  if ((flags & O_ACCMODE) === O_RDWR && !o.given) {
    // memfd_create's own file (see the header): its position and status flags are this entry's.
    o.given = true;
    const b = new Batch();
    b.call('lseek', [o.fd, pos, SEEK_SET], `position of memfd:${o.name}`);
    b.call('fcntl', [o.fd, F_SETFL, flags], `flags of memfd:${o.name}`);
    await runLocal(ctx.restorer!, b, `memfd file ${id}`);
    return o.fd;
  }
  // The host's /proc, as in createAnon: a container's /proc has no entry for the restorer.
  const out = await openInRestorer(ctx, `/proc/self/fd/${o.fd}`, flags, pos, 0, true).catch((err) => {
    throw new GodwitError(`memfd file ${id}: cannot reopen memfd:${o.name} in the restorer`, { cause: err });
  });
  ctx.restorerFds.push(out);
  return out;
}

/** Seals last: once every mapping (writable ones included) exists. */
export async function applyMemfdSeals(ctx: RestoreContext): Promise<void> {
  const st = states.get(ctx);
  if (!st) return;
  for (const o of st.objects.values()) {
    if (o.kind !== 'memfd' || !o.seals) continue;
    const b = new Batch();
    b.call('fcntl', [o.fd, F_ADD_SEALS, o.seals], `seal memfd:${o.name} (0x${o.seals.toString(16)})`);
    await runLocal(ctx.restorer!, b, `memfd:${o.name}`);
  }
}

export function hasShmemImages(dir: string): boolean {
  return fs.readdirSync(dir).some((f) => f.startsWith('pagemap-shmem-') || f === 'memfd.img');
}
