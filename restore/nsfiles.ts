/**
 * Namespace files (checkpoint/nsfiles.ts): the namespace is one the tree's tasks are in, named by its ns id;
 * it is opened again through a restored live task in it, /proc/<its host pid>/ns/<kind>, from the host's /proc
 * (the restorer's cwd is the host's root, also inside a container), once the tree exists.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { hostPidOf } from './tree';
import { openInRestorer } from './memory';
import { NS_CFLAG } from '../checkpoint/nsfiles';

/** ns_cflag -> the /proc/PID/ns name and the ids-PID.img field of that kind (the dump's table, turned round). */
const KIND_OF_CFLAG = new Map(Object.entries(NS_CFLAG).map(([kind, flag]) => [flag, kind]));

export async function openNsFile(ctx: RestoreContext, id: number, nsf: Msg): Promise<number> {
  const kind = KIND_OF_CFLAG.get(Number(nsf.ns_cflag));
  if (!kind) throw new GodwitError(`file id ${id}: a namespace file of unknown kind (clone flag 0x${Number(nsf.ns_cflag).toString(16)})`);
  const nsId = Number(nsf.ns_id);
  const t = ctx.set!.tasks.find((x) => x.zombie === undefined && Number(x.ids[`${kind}_ns_id`]) === nsId);
  if (!t) throw new GodwitError(`file id ${id}: no task of the tree is in ${kind} namespace ${nsId}: the namespace file cannot be opened again`);
  const host = await hostPidOf(ctx, t.pid);
  return openInRestorer(ctx, `/proc/${host}/ns/${kind}`, Number(nsf.flags ?? 0), undefined, 0, true);
}
