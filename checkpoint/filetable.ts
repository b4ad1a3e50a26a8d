/**
 * files.img: one file_entry per open file description (and per mapped file, cwd and root), shared by all the
 * processes of the dump. Ids are small integers in discovery order, as CRIU numbers them.
 *
 * Open file descriptions are recognised by what /proc shows: the same object (device + inode, or pipe/socket
 * inode) with the same open flags and position is taken to be one description (dup()ed or inherited), which
 * is what matters for restore (shared position and flags).
 */
import type * as fs from 'node:fs';
import { readBuildId } from './elf';
import type { CollectContext } from './context';

export type Entry = Record<string, unknown>;

// remap_type of CRIU's remap-file-path.proto: how a file entry whose name is gone is reached again.
export const REMAP_TYPE = { LINKED: 0, GHOST: 1 } as const;

// fd_types of CRIU's fdinfo.proto.
export const FD_TYPES = {
  REG: 1,
  PIPE: 2,
  FIFO: 3,
  INETSK: 4,
  UNIXSK: 5,
  EVENTFD: 6,
  EVENTPOLL: 7,
  INOTIFY: 8,
  SIGNALFD: 9,
  TTY: 11,
  NS: 14,
  TIMERFD: 17,
  MEMFD: 18,
  PIDFD: 20,
} as const;

export function fown(): Entry {
  return { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
}

/**
 * Sets the fown of file `id` (every kind keeps it in its sub-entry: reg, pipe, usk, ...): the SIGIO/SIGURG owner
 * an F_SETOWN gave the open file description.
 */
export function setFown(files: FileTable, id: number, f: Entry): void {
  const e = files.entries.find((x) => x.id === id);
  if (!e) return;
  for (const v of Object.values(e)) if (v && typeof v === 'object' && 'fown' in (v as Entry)) (v as Entry).fown = f;
}

/** Open flags as images store them: without O_CLOEXEC (that is an fd flag, in fdinfo). */
export const O_CLOEXEC = 0o2000000;
export const O_ACCMODE = 3;

export class FileTable {
  private nextId = 1;
  readonly entries: Entry[] = [];
  private byKey = new Map<string, number>();

  /** Reserves an id for an entry built later (e.g. an epoll whose targets are collected afterwards). */
  add(key: string | undefined, make: (id: number) => Entry): number {
    if (key !== undefined) {
      const have = this.byKey.get(key);
      if (have !== undefined) return have;
    }
    const id = this.nextId++;
    if (key !== undefined) this.byKey.set(key, id);
    this.entries.push(make(id));
    return id;
  }

  /**
   * A regular file, directory or memory char device. `openFlags` are the description's flags (0 for mapped
   * files, cwd and root, as CRIU writes them).
   */
  /**
   * withBuildId: read the ELF build-id (executables and mapped files only). Reading it opens the file by path,
   * which inotify and fanotify watchers see (the tree's own among them: an IN_OPEN event queued by the dump).
   */
  regular(path: string, st: fs.BigIntStats, openFlags: number, pos: bigint, key?: string, withBuildId = false): number {
    const k = key ?? `reg:${st.dev}:${st.ino}:${openFlags}:${pos}:${path}`;
    return this.add(k, (id) => {
      const reg: Entry = { id, flags: openFlags & ~O_CLOEXEC, pos, fown: fown(), name: path };
      const type = st.mode & 0o170000n;
      if (type === 0o100000n) reg.size = st.size;
      reg.mode = Number(st.mode);
      if (type === 0o100000n && withBuildId) {
        const bid = readBuildId(path);
        if (bid) reg.build_id = bid;
      }
      return { type: FD_TYPES.REG, id, reg };
    });
  }
}

/**
 * The key of fd `fd`'s open file description: `base` (object, flags, position: what /proc shows) when it is the
 * description of an fd seen with that key before (dup()ed or inherited; kcmp KCMP_FILE asks the kernel), else a
 * key of its own: two opens of one file at the same offset are two descriptions (zdtm file_shared), whose offsets
 * go separate ways after restore.
 */
export async function describe(ctx: CollectContext, pid: number, fd: number, base: string): Promise<string> {
  const seen = ctx.holders.get(base);
  if (!seen) {
    ctx.holders.set(base, [{ pid, fd, key: base }]);
    return base;
  }
  for (const h of seen) if (await ctx.helper.sameFile(pid, fd, h.pid, h.fd)) return h.key;
  const key = `${base}#${seen.length}`;
  seen.push({ pid, fd, key });
  return key;
}
