/**
 * The image directory as restore sees it: the tree and, per task, its cores (one per thread), ids, mm,
 * pagemap, fs and fds; the files table and pipe data. Decoded entries keep their proto field names.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GodwitError, ImageError } from '../util/errors';
import { Msg, readEntries } from './image-files';

export interface PagemapImage {
  pagesId: number;
  entries: Msg[];
}

export interface TaskImage {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
  /** core entry per thread id; the main thread's carries `tc` (task-wide state). */
  cores: Map<number, Msg>;
  ids: Msg;
  mm: Msg;
  pagemap: PagemapImage;
  fs: Msg;
  fds: Msg[];
  /** A zombie at dump time: the wait status it left (it has no memory, files or fs of its own). */
  zombie?: number;
}

/** CRIU's task states (core tc.task_state). */
export const TASK_ALIVE = 1;
export const TASK_STOPPED = 3;
export const TASK_ZOMBIE = 6;

export interface ImageSet {
  dir: string;
  /** Parents before children: the order the tree is created in. */
  tasks: TaskImage[];
  files: Map<number, Msg>;
  pipeData: Map<number, Buffer>;
  /** Bytes in flight in FIFOs, by pipe_id (fifo-data.img). */
  fifoData: Map<number, Buffer>;
  /** Buffer size of each pipe and FIFO as dumped (pipes-data / fifo-data `size`), by pipe_id. */
  pipeSizes: Map<number, number>;
  /** files.img id -> its remap (a deleted file's content is a ghost file image). */
  remaps: Map<number, Msg>;
  /** Unix socket queues: sk-queues entries (with their bytes as `extra`), in image order. */
  skQueues: Msg[];
}

function need(dir: string, file: string, kind: string): Msg[] {
  const e = readEntries(dir, file);
  if (!e) throw new ImageError(path.join(dir, file), 0, `missing: the image directory is incomplete (needed for ${kind})`);
  return e;
}

function one(dir: string, file: string, kind: string): Msg {
  const e = need(dir, file, kind);
  if (e.length !== 1) throw new ImageError(path.join(dir, file), 0, `expected one ${kind} entry, found ${e.length}`);
  return e[0];
}

export function loadImageSet(dir: string): ImageSet {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
    throw new GodwitError(`image directory ${dir} does not exist (pass the --dir a dump wrote)`, { code: 'ENOENT' });
  const pstree = need(dir, 'pstree.img', 'pstree');
  if (pstree.length === 0) throw new ImageError(path.join(dir, 'pstree.img'), 0, 'no tasks in the tree');
  const tasks: TaskImage[] = [];
  for (const p of pstree) {
    const pid = Number(p.pid);
    const threads = ((p.threads as number[] | undefined) ?? [pid]).map(Number);
    if (threads.length === 0) threads.push(pid);
    const cores = new Map<number, Msg>();
    for (const tid of threads) cores.set(tid, one(dir, `core-${tid}.img`, 'core'));
    const tc = (cores.get(pid)?.tc as Msg | undefined) ?? {};
    if (Number(tc.task_state ?? TASK_ALIVE) === TASK_ZOMBIE) {
      tasks.push({
        pid, ppid: Number(p.ppid ?? 0), pgid: Number(p.pgid ?? pid), sid: Number(p.sid ?? pid), threads, cores,
        ids: {}, mm: {}, pagemap: { pagesId: 0, entries: [] }, fs: {}, fds: [], zombie: Number(tc.exit_code ?? 0),
      });
      continue;
    }
    const pm = need(dir, `pagemap-${pid}.img`, 'pagemap');
    tasks.push({
      pid,
      ppid: Number(p.ppid ?? 0),
      pgid: Number(p.pgid ?? pid),
      sid: Number(p.sid ?? pid),
      threads,
      cores,
      ids: one(dir, `ids-${pid}.img`, 'ids'),
      mm: one(dir, `mm-${pid}.img`, 'mm'),
      pagemap: { pagesId: Number(pm[0]?.pages_id ?? 0), entries: pm.slice(1) },
      fs: one(dir, `fs-${pid}.img`, 'fs'),
      fds: [],
    });
  }
  for (const t of tasks) {
    if (t.zombie !== undefined) continue;
    const filesId = Number(t.ids.files_id);
    t.fds = readEntries(dir, `fdinfo-${filesId}.img`) ?? [];
  }
  const files = new Map<number, Msg>();
  for (const f of need(dir, 'files.img', 'file')) files.set(Number(f.id), f);
  const pipeData = new Map<number, Buffer>();
  const pipeSizes = new Map<number, number>();
  for (const d of readEntries(dir, 'pipes-data.img') ?? []) {
    pipeData.set(Number(d.pipe_id), d.extra as Buffer);
    if (d.size) pipeSizes.set(Number(d.pipe_id), Number(d.size));
  }
  const fifoData = new Map<number, Buffer>();
  for (const d of readEntries(dir, 'fifo-data.img') ?? []) {
    fifoData.set(Number(d.pipe_id), d.extra as Buffer);
    if (d.size) pipeSizes.set(Number(d.pipe_id), Number(d.size));
  }
  const remaps = new Map<number, Msg>();
  for (const r of readEntries(dir, 'remap-fpath.img') ?? []) remaps.set(Number(r.orig_id), r);
  const skQueues = readEntries(dir, 'sk-queues.img') ?? [];
  return { dir, tasks: orderParentsFirst(tasks), files, pipeData, fifoData, pipeSizes, remaps, skQueues };
}

function orderParentsFirst(tasks: TaskImage[]): TaskImage[] {
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  const roots = tasks.filter((t) => !byPid.has(t.ppid));
  if (roots.length !== 1)
    throw new GodwitError(`the image tree has ${roots.length} roots (pids ${roots.map((t) => t.pid).join(', ')}); expected one`);
  const out: TaskImage[] = [];
  const visit = (t: TaskImage) => {
    out.push(t);
    for (const c of tasks) if (c.ppid === t.pid && c !== t) visit(c);
  };
  visit(roots[0]);
  return out;
}

/** Merged file-table view helpers. */
export function regFile(set: ImageSet, id: number): Msg | undefined {
  return set.files.get(id)?.reg as Msg | undefined;
}

/** The tasks that run (zombies are only created and left to be reaped). */
export function liveTasks(set: ImageSet): TaskImage[] {
  return set.tasks.filter((t) => t.zombie === undefined);
}
