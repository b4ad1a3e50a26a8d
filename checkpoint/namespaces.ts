/**
 * Which namespaces each task is in (ids-PID.img and the inventory's root_ids): namespace inodes numbered in
 * discovery order, godwit's own first (CRIU's root_ids are the dumper's namespaces). godwit dumps processes
 * that share the dumper's namespaces; a target in other namespaces is refused until namespace dumping exists.
 */
import { GodwitError } from '../util/errors';
import { NsKind, readNamespaces } from './proc/misc';

/** CRIU's numbering order for the root ids (pid, net, ipc, uts, time, mnt, user, cgroup). */
const ORDER: NsKind[] = ['pid', 'net', 'ipc', 'uts', 'time', 'mnt', 'user', 'cgroup'];

export class NamespaceIds {
  private ids = new Map<string, number>();
  readonly root: Record<NsKind, number>;
  readonly rootIno: Record<NsKind, number>;

  constructor() {
    this.rootIno = readNamespaces(process.pid);
    this.root = {} as Record<NsKind, number>;
    for (const k of ORDER) this.root[k] = this.id(k, this.rootIno[k]);
  }

  private id(kind: string, ino: number): number {
    const key = `${kind}:${ino}`;
    let id = this.ids.get(key);
    if (id === undefined) this.ids.set(key, (id = this.ids.size + 1));
    return id;
  }

  /** The ns ids of a task; throws if it lives in namespaces other than godwit's. */
  forTask(pid: number): Record<NsKind, number> {
    const ns = readNamespaces(pid);
    const out = {} as Record<NsKind, number>;
    for (const k of ORDER) {
      if (ns[k] !== this.rootIno[k])
        throw new GodwitError(
          `pid ${pid} is in its own ${k} namespace (${ns[k]}, godwit's is ${this.rootIno[k]}): dumping namespaces is not supported yet`,
        );
      out[k] = this.id(k, ns[k]);
    }
    return out;
  }
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
