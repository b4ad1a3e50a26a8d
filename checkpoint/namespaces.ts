/**
 * Which namespaces each task is in (ids-PID.img and the inventory's root_ids): namespace inodes numbered in
 * discovery order, godwit's own first. A plain dump takes processes that share the dumper's namespaces; a
 * container dump (`container` given) also takes the container root's own namespaces, whose content the container
 * steps dump (checkpoint/container-steps.ts), and then root_ids are the root's, as CRIU writes them. Any other
 * namespace (a nested one inside the container) is refused.
 */
import * as fs from 'node:fs';
import { GodwitError, UsageError } from '../util/errors';
import { NsKind, readNamespaces } from './proc/misc';
import type { ImageSet } from './imageset';

/** CRIU's numbering order for the root ids (pid, net, ipc, uts, time, mnt, user, cgroup). */
const ORDER: NsKind[] = ['pid', 'net', 'ipc', 'uts', 'time', 'mnt', 'user', 'cgroup'];

/** Namespace kinds a container may own (and godwit restores). */
export const CONTAINER_NS: NsKind[] = ['pid', 'net', 'ipc', 'uts', 'time', 'mnt', 'user', 'cgroup'];

/**
 * Kinds a tree may have as external (recorded by inode, joined at restore with --join-ns): those a task can
 * simply setns into. A pid namespace would need the tree's pids free in it, a mount namespace its root and
 * mounts as the tree saw them, a user namespace the ownership of the others: not supported.
 */
export const EXTERNAL_NS: NsKind[] = ['net', 'ipc', 'uts'];

export class NamespaceIds {
  private ids = new Map<string, number>();
  readonly root: Record<NsKind, number>;
  readonly rootIno: Record<NsKind, number>;
  /** godwit's own namespaces (the host's). */
  readonly hostIno: Record<NsKind, number>;
  /** Kinds the container root owns (empty for a plain dump). */
  readonly own: NsKind[] = [];
  /** Kinds the root is in but does not own (`external`): their inodes; restore joins an existing namespace. */
  readonly external: Partial<Record<NsKind, number>> = {};

  constructor(containerRoot?: number, o: { external?: NsKind[] } = {}) {
    this.hostIno = readNamespaces(process.pid);
    for (const k of ORDER) this.id(k, this.hostIno[k]);
    this.rootIno = this.hostIno;
    const external = o.external ?? [];
    for (const k of external)
      if (!EXTERNAL_NS.includes(k)) throw new UsageError(`--external-ns ${k}: only ${EXTERNAL_NS.join(', ')} namespaces can be external`);
    if (containerRoot === undefined && external.length)
      throw new UsageError(`--external-ns ${external.join(',')}: the tree shares all of godwit's namespaces, there is no namespace of its own to treat as external`);
    if (containerRoot !== undefined) {
      this.rootIno = readNamespaces(containerRoot);
      for (const k of external)
        if (this.rootIno[k] === this.hostIno[k])
          throw new UsageError(`--external-ns ${k}: pid ${containerRoot} is in godwit's own ${k} namespace (${k}:[${this.hostIno[k]}]): nothing to treat as external (leave ${k} out)`);
      for (const k of ORDER) {
        if (this.rootIno[k] === this.hostIno[k]) continue;
        if (external.includes(k)) {
          this.external[k] = this.rootIno[k];
          continue;
        }
        if (!CONTAINER_NS.includes(k))
          throw new GodwitError(
            `pid ${containerRoot} has its own ${k} namespace: godwit cannot checkpoint containers with a ${k} namespace yet (run it without one)`,
          );
        this.own.push(k);
      }
    }
    this.root = {} as Record<NsKind, number>;
    for (const k of ORDER) this.root[k] = this.id(k, this.rootIno[k]);
  }

  private id(kind: string, ino: number): number {
    const key = `${kind}:${ino}`;
    let id = this.ids.get(key);
    if (id === undefined) this.ids.set(key, (id = this.ids.size + 1));
    return id;
  }

  /**
   * The ns id of namespace `ino` of `kind` when it is the tree's (every task is in the root's namespaces:
   * forTask refuses any other), for a namespace file held open (checkpoint/nsfiles.ts).
   */
  nsFileId(kind: NsKind, ino: number): number | undefined {
    return ino === this.rootIno[kind] ? this.root[kind] : undefined;
  }

  /** The ns ids of a task; throws if it lives in namespaces other than godwit's or the container root's. */
  forTask(pid: number): Record<NsKind, number> {
    const ns = readNamespaces(pid);
    const out = {} as Record<NsKind, number>;
    for (const k of ORDER) {
      if (ns[k] !== this.rootIno[k]) {
        const why = this.own.length
          ? `the container's is ${this.rootIno[k]}: nested namespaces are not supported`
          : `godwit's is ${this.rootIno[k]}: dump it as a container (--container, --cgroup, or --pid of the namespace's first process)`;
        throw new GodwitError(`pid ${pid} is in its own ${k} namespace (${ns[k]}, ${why})`);
      }
      out[k] = this.id(k, ns[k]);
    }
    // unshare(CLONE_NEWPID / CLONE_NEWTIME) leaves a namespace only the task's future children enter: nothing in
    // the images could carry it, so a task holding one is refused.
    for (const k of ['pid', 'time'] as const) {
      let pending: string | undefined;
      try {
        pending = fs.readlinkSync(`/proc/${pid}/ns/${k}_for_children`);
      } catch {
        continue; // gone, or a kernel without the link
      }
      if (pending !== `${k}:[${ns[k]}]`) {
        const child = childIn(pid, k, pending);
        const how = child
          ? `its child pid ${child} is that namespace's first process (as with unshare --fork): dump --pid ${child} instead`
          : 'let it fork into it first and dump that child, or do not unshare';
        throw new GodwitError(`pid ${pid} has unshared a new ${k} namespace its future children would enter (${k}_for_children ${pending}, its own ${k}:[${ns[k]}]): godwit cannot carry a pending namespace; ${how}`);
      }
    }
    return out;
  }
}

/** A child of `pid` living in namespace `link` (ns/KIND's text), for the pending-namespace refusal. */
function childIn(pid: number, kind: string, link: string): number | undefined {
  try {
    for (const t of fs.readdirSync(`/proc/${pid}/task`))
      for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number))
        if (fs.readlinkSync(`/proc/${c}/ns/${kind}`) === link) return c;
  } catch {
    /* gone meanwhile: the message goes without the pid */
  }
  return undefined;
}

/** task_kobj_ids_entry: per-process object ids (unique per process here) and its namespaces. */
export function idsEntry(objId: number, ns: Record<NsKind, number>): Record<string, unknown> {
  return {
    vm_id: objId,
    files_id: objId,
    fs_id: objId,
    sighand_id: objId,
    pid_ns_id: ns.pid,
    net_ns_id: ns.net,
    ipc_ns_id: ns.ipc,
    uts_ns_id: ns.uts,
    mnt_ns_id: ns.mnt,
    user_ns_id: ns.user,
    cgroup_ns_id: ns.cgroup,
    time_ns_id: ns.time,
  };
}

/** Does pid have namespaces of its own (other than godwit's)? Those a container may own, by kind. */
export function ownNamespaces(pid: number): NsKind[] {
  const mine = readNamespaces(process.pid);
  const its = readNamespaces(pid);
  return ORDER.filter((k) => its[k] !== mine[k]);
}

/**
 * pid -> pid inside the container's pid namespace, for every thread of the tree (NSpid's last field). The
 * image carries these: restore recreates them in a fresh pid namespace, where the root is pid 1 again.
 */
export function namespacePids(tids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of tids) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${tid}/status`, 'latin1');
    } catch (e) {
      throw new GodwitError(`cannot read /proc/${tid}/status for its pid inside the container`, { cause: e });
    }
    const m = /^NSpid:\s*(.*)$/m.exec(text);
    const levels = (m?.[1] ?? String(tid)).trim().split(/\s+/).map(Number);
    out.set(tid, levels[levels.length - 1]!);
  }
  return out;
}

/** Image kinds whose file name is a pid or tid (core-TID, mm-PID, ...). */
const PID_KEYED = new Set(['CORE', 'IDS', 'CREDS', 'MM', 'VMAS', 'PAGEMAP', 'SIGACT', 'ITIMERS', 'POSIX_TIMERS', 'FS', 'RLIMIT', 'SIGNAL', 'PSIGNAL']);

/**
 * Rewrites a collected image set from host pids to the container's own (file names, pstree). Every pid of the
 * tree must be in the map: a task the map lacks is a bug, refused here rather than written wrong.
 */
export function virtualizePids(images: ImageSet, map: Map<number, number>): void {
  const v = (pid: unknown, what: string): number => {
    const n = Number(pid);
    const out = map.get(n);
    if (out === undefined) throw new GodwitError(`${what}: pid ${n} has no pid inside the container's pid namespace`);
    return out;
  };
  for (const img of images.images) {
    if (PID_KEYED.has(img.kind) && img.arg !== undefined) img.arg = v(img.arg, `${img.kind} image`);
    if (img.kind === 'PSTREE')
      for (const e of img.entries) {
        const m = e.msg;
        m.pid = v(m.pid, 'pstree');
        // The root's parent is outside the tree (0); process groups and sessions led from outside keep 0 too.
        m.ppid = Number(m.ppid) === 0 ? 0 : map.get(Number(m.ppid)) ?? 0;
        m.pgid = map.get(Number(m.pgid)) ?? 0;
        m.sid = map.get(Number(m.sid)) ?? 0;
        m.threads = (m.threads as number[]).map((t) => v(t, 'pstree thread'));
      }
    // Pids inside entries: the lock owner, a timer's SIGEV_THREAD_ID target, a terminal's session and group.
    if (img.kind === 'FILE_LOCKS') for (const e of img.entries) e.msg.pid = v(e.msg.pid, 'file lock owner');
    if (img.kind === 'CORE')
      for (const e of img.entries) {
        const posix = ((e.msg.tc as Record<string, Record<string, unknown>> | undefined)?.timers?.posix ?? []) as Record<string, unknown>[];
        for (const t of posix) if (t.notify_thread_id !== undefined) t.notify_thread_id = v(t.notify_thread_id, `posix timer ${String(t.it_id)} target thread`);
      }
    // An fd's SIGIO owner: a process or group outside the container cannot be named inside it (0: no owner).
    if (img.kind === 'FILES')
      for (const e of img.entries)
        for (const sub of Object.values(e.msg)) {
          const f = (sub as Record<string, Record<string, unknown>> | undefined)?.fown;
          if (f && Number(f.pid)) f.pid = map.get(Number(f.pid)) ?? 0;
        }
    if (img.kind === 'TTY_INFO')
      for (const e of img.entries) {
        // A session or group outside the tree is 0, as the tree sees it.
        if (e.msg.sid !== undefined) e.msg.sid = map.get(Number(e.msg.sid)) ?? 0;
        if (e.msg.pgrp !== undefined) e.msg.pgrp = map.get(Number(e.msg.pgrp)) ?? 0;
      }
  }
}
