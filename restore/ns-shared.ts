/**
 * External namespaces (checkpoint/ns-shared.ts): a tree dumped with --external-ns KIND was in a KIND namespace it
 * did not own. Restore does not make one: the restorer joins the namespace the user names (--join-ns
 * KIND:PATH, a /proc/PID/ns/KIND file or a bind-mounted one), before anything of the container is made.
 */
import * as fs from 'node:fs';
import { ContainerRecord, runcNamespacePaths } from '../checkpoint/container-dump';
import type { NsKind } from '../checkpoint/proc/misc';
import { GodwitError, UsageError } from '../util/errors';

/** The kind and inode of a namespace file ("net:[4026532246]" as its open fd shows), or why it is not one. */
function nsFileKind(file: string): { kind: string; ino: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new GodwitError(`--join-ns: cannot open ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    // An nsfs file, magic link or bind mount alike, shows its kind and inode as its fd's link target.
    const m = /^(\w+):\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`));
    if (!m) throw new GodwitError(`--join-ns: ${file} is not a namespace file (give /proc/PID/ns/KIND or a bind-mounted namespace file)`);
    return { kind: m[1]!, ino: Number(m[2]) };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The restorer's `--setns FILE` arguments for the record's external namespaces, checked: each has a --join-ns
 * of its kind, every --join-ns names one of them, each file is a namespace of that kind. Throws before anything
 * is made.
 */
export function externalJoinArgs(dir: string, rec: ContainerRecord | undefined, join: Partial<Record<NsKind, string>> = {}): string[] {
  const external = rec?.external ?? {};
  for (const k of Object.keys(join) as NsKind[])
    if (external[k] === undefined)
      throw new UsageError(`--join-ns ${k}: the tree in ${dir} was not dumped with an external ${k} namespace (${rec ? 'it had one of its own or the host\'s' : 'not a container dump'}): leave --join-ns ${k} out`);
  // A runc container joined the namespaces its config names a path for: the same path by default, as runc does.
  const configured = runcNamespacePaths(rec?.runcState);
  const args: string[] = [];
  for (const [k, ino] of Object.entries(external) as [NsKind, number][]) {
    const file = join[k] ?? configured[k];
    if (file === undefined)
      throw new GodwitError(
        `cannot restore ${dir}: the tree was in an external ${k} namespace (${k}:[${ino}] at dump, shared with processes outside it), which restore joins rather than makes: give --join-ns ${k}:PATH (e.g. /proc/PID/ns/${k} of a process in the namespace to join)`,
        { code: 'EJOINNS' },
      );
    const got = nsFileKind(file);
    if (got.kind !== k) throw new UsageError(`--join-ns ${k}:${file}: that is a ${got.kind} namespace (${got.kind}:[${got.ino}]), not a ${k} one`);
    args.push('--setns', file);
  }
  return args;
}
