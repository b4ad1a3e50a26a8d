/**
 * A namespace the tree is in but does not own: a process outside the tree is in it too (a pod's net namespace
 * held by its pause process, a server started beside the client with nsenter). Restore would give the tree a
 * fresh, empty namespace of that kind, away from those processes (a TCP connection to one of them is reset at
 * once), so dump refuses it before anything is frozen, unless the kind is external (--external-ns): then the
 * images record its inode and restore joins an existing namespace (--join-ns).
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { readComm, type NsKind } from './proc/misc';
import { EXTERNAL_NS, type NamespaceIds } from './namespaces';
import { ancestry, Tree } from './tree';

export interface NsSharer {
  pid: number;
  comm: string;
}

/** How many outside processes an error names (the scan itself reads every process). */
const NAMED = 5;

/** Its name, or '?' once it is gone. */
const commOf = (pid: number): string => {
  try {
    return readComm(pid);
  } catch {
    return '?';
  }
};

/**
 * Processes outside the tree in each of `kinds` namespaces of the root (by inode: one readlink per process and
 * kind). The root's ancestors are not counted: a launcher that made the namespaces and forked the tree into them
 * (`unshare --fork`, a shell started by it) only waits for it, and leaves with it.
 */
export function outsideSharers(tree: Tree, ns: NamespaceIds, kinds: NsKind[]): Map<NsKind, NsSharer[]> {
  const out = new Map<NsKind, NsSharer[]>();
  if (!kinds.length) return out;
  const inside = new Set<number>([...tree.byPid.keys(), ...ancestry(tree.root), process.pid]);
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || inside.has(Number(name))) continue;
    for (const k of kinds) {
      let link: string;
      try {
        link = fs.readlinkSync(`/proc/${name}/ns/${k}`);
      } catch {
        continue; // gone, or a zombie (its namespaces are released)
      }
      if (link !== `${k}:[${ns.rootIno[k]}]`) continue;
      const list = out.get(k) ?? [];
      list.push({ pid: Number(name), comm: commOf(Number(name)) });
      out.set(k, list);
    }
  }
  return out;
}

/**
 * The nearest process that is an ancestor of all of `pids`, one godwit could dump (undefined if only pid 1, godwit
 * or one of its own ancestors is).
 */
function commonAncestor(pids: number[]): number | undefined {
  const chains = pids.map((p) => ancestry(p));
  const mine = new Set(ancestry(process.pid));
  const first = chains[0] ?? [];
  return first.find((a) => a !== 1 && !mine.has(a) && chains.every((c) => c.includes(a)));
}

/**
 * Refuses (before the freeze) a container dump whose own namespaces hold processes outside the tree, naming the
 * namespace, a few of those processes and the ways out. External kinds are not checked: they are shared by intent.
 */
export function refuseSharedNamespaces(tree: Tree, ns: NamespaceIds): void {
  const shared = outsideSharers(tree, ns, ns.own);
  if (!shared.size) return;
  const lines: string[] = [];
  for (const [k, list] of shared) {
    const named = list.slice(0, NAMED).map((s) => `${s.pid} (${s.comm})`).join(', ');
    const more = list.length > NAMED ? ` and ${list.length - NAMED} more` : '';
    const top = commonAncestor([tree.root, ...list.map((s) => s.pid)]);
    const ancestor = top !== undefined ? `--pid ${top}, their common ancestor` : 'from a common ancestor: they have none godwit can dump';
    const how = EXTERNAL_NS.includes(k)
      ? `, or treat it as external: dump with --external-ns ${k} and restore with --join-ns ${k}:/proc/PID/ns/${k} (PID: one of those processes, or a bind-mounted ${k} namespace file)`
      : ` (a ${k} namespace cannot be external)`;
    lines.push(`its ${k} namespace (${k}:[${ns.rootIno[k]}]) is shared with process(es) outside the tree: ${named}${more}; restore would put the tree in a new, empty ${k} namespace without them. Dump those processes too (${ancestor})${how}`);
  }
  throw new GodwitError(`cannot checkpoint pid ${tree.root} as a container (nothing was frozen): ${lines.join('; ')}`, { code: 'ESHAREDNS' });
}
