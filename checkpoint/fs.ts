/** fs-PID.img: the working directory and root (as regular-file entries of files.img) and the umask. */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { procPath } from './proc/read';
import { ghostFor, remapToGhost } from './ghosts';
import type { ProcStatus } from './proc/status';

function dirEntry(ctx: CollectContext, pid: number, which: 'cwd' | 'root'): number {
  const p = procPath(pid, which);
  try {
    let path = fs.readlinkSync(p, 'latin1');
    const st = fs.statSync(p, { bigint: true });
    if (path.endsWith(' (deleted)')) {
      if (which === 'root') throw new GodwitError(`pid ${pid}: its root ${path} was removed: cannot be checkpointed`);
      // A removed working directory (zdtm cwd01/cwd02): CRIU's ghost directory, made again and removed at restore.
      path = path.slice(0, -' (deleted)'.length);
      const id = ctx.files.regular(path, st, 0, 0n, `deleted-dir:${st.dev}:${st.ino}`);
      // The ghost is shared with an open fd of the same removed directory (ghostFor: one per inode), so
      // restore makes one directory for both (zdtm cwd02).
      const ghostId = ghostFor(ctx, st, () => Buffer.alloc(0));
      remapToGhost(ctx, id, ghostId); // once per file entry, however many tasks have it as cwd
      return id;
    }
    path = path || '/';
    return ctx.files.regular(path, st, 0, 0n);
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
