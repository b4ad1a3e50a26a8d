/** fs-PID.img: the working directory and root (as regular-file entries of files.img) and the umask. */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { procPath } from './proc/read';
import type { ProcStatus } from './proc/status';

function dirEntry(ctx: CollectContext, pid: number, which: 'cwd' | 'root'): number {
  const p = procPath(pid, which);
  try {
    let path = fs.readlinkSync(p, 'latin1');
    if (path.endsWith(' (deleted)'))
      throw new GodwitError(`pid ${pid}: its ${which} ${path} was removed: cannot be checkpointed`);
    path = path || '/';
    return ctx.files.regular(path, fs.statSync(p, { bigint: true }), 0, 0n);
  } catch (err) {
    if (err instanceof GodwitError) throw err;
    throw new GodwitError(`pid ${pid}: cannot read its ${which}`, { cause: err });
  }
}

export function dumpFs(ctx: CollectContext, pid: number, status: ProcStatus): void {
  const cwd = dirEntry(ctx, pid, 'cwd');
  const root = dirEntry(ctx, pid, 'root');
  ctx.images.add('FS', pid, { cwd_id: cwd, root_id: root, umask: status.umask ?? 0o022 });
}
