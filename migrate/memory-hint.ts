/**
 * The size of the tree's memory before the dump, for the target's reserve (`godwit receive --reserve-memory`,
 * migrate/reserve.ts): what the restore will write there, known before anything is frozen or sent.
 */
import * as fs from 'node:fs';
import { resolveContainerTarget } from '../checkpoint/container-dump';
import { scanTree } from '../checkpoint/tree';
import type { MigrateOptions } from './index';

/** Anonymous + swapped bytes of one process (smaps_rollup), 0 when it cannot be read. */
function processMemory(pid: number): number {
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
    let kb = 0;
    for (const m of t.matchAll(/^(?:Anonymous|Swap):\s+(\d+) kB/gm)) kb += Number(m[1]);
    return kb * 1024;
  } catch {
    return 0;
  }
}

/**
 * Anonymous and swapped memory of every process of the tree the migration will dump; undefined when the tree cannot
 * be looked at now (the dump then reports why). Only a hint: the tree may grow or shrink before the freeze.
 */
export function treeMemoryBytes(o: MigrateOptions): number | undefined {
  try {
    const c = resolveContainerTarget({ ...o.dump, pid: o.pid });
    const tree = scanTree(c ? c.pid : o.pid);
    return tree.processes.filter((p) => !p.zombie).reduce((n, p) => n + processMemory(p.pid), 0);
  } catch {
    return undefined;
  }
}
