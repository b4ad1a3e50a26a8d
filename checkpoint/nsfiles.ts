/**
 * Namespace files (an fd on /proc/PID/ns/KIND, zdtm proc-self): the link reads "net:[4026531833]". CRIU's
 * ns_file_entry names the namespace by its ns id (ids-PID.img), so only a namespace the tree's tasks are in can
 * be carried: restore opens it again through a restored task. Any other namespace is refused by name.
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import type { FdClass } from './fdkinds';
import type { ProcFdInfo } from './proc/fdinfo';
import { describe, FD_TYPES, O_CLOEXEC } from './filetable';
import type { NamespaceIds } from './namespaces';
import { NS_KINDS, NsKind } from './proc/misc';

/** The clone flag of each kind, which ns_file_entry.ns_cflag carries. */
export const NS_CFLAG: Record<NsKind, number> = {
  pid: 0x20000000, net: 0x40000000, ipc: 0x08000000, uts: 0x04000000, mnt: 0x00020000, user: 0x10000000,
  cgroup: 0x02000000, time: 0x00000080,
};

/** "net:[4026531833]" -> the kind and inode; undefined for any other link. */
export function nsFileOf(link: string): { kind: NsKind; ino: number } | undefined {
  const m = /^([a-z]+):\[(\d+)\]$/.exec(link);
  if (!m || !(NS_KINDS as readonly string[]).includes(m[1])) return undefined;
  return { kind: m[1] as NsKind, ino: Number(m[2]) };
}

/** Why the namespace file `link` cannot be carried (it is no namespace of the tree), or undefined. */
export function nsFileProblem(ns: NamespaceIds, link: string): string | undefined {
  const f = nsFileOf(link);
  if (!f) return `namespace file ${link} of an unknown kind`;
  if (ns.nsFileId(f.kind, f.ino) === undefined)
    return `namespace file ${link}: not the ${f.kind} namespace of the dumped tree (${f.kind}:[${ns.rootIno[f.kind]}]), which restore could not open again (not supported)`;
  return undefined;
}

export async function dumpNsFile(ctx: CollectContext, pid: number, c: FdClass, info: ProcFdInfo): Promise<number> {
  const bad = ctx.ns ? nsFileProblem(ctx.ns, c.link) : 'no namespace ids';
  if (bad) throw new GodwitError(`pid ${pid} fd ${c.fd}: ${bad}`);
  const f = nsFileOf(c.link)!;
  const flags = info.flags & ~O_CLOEXEC;
  const key = await describe(ctx, pid, c.fd, `ns:${f.kind}:${f.ino}:${flags}`);
  return ctx.files.add(key, (id) => ({
    type: FD_TYPES.NS,
    id,
    nsf: { id, ns_id: ctx.ns!.nsFileId(f.kind, f.ino)!, ns_cflag: NS_CFLAG[f.kind], flags },
  }));
}
