/**
 * Freezing: seize every thread (the helper interrupts all, then waits for all), rescan the tree, seize what
 * appeared meanwhile (new threads, new children), until a scan finds nothing new.
 */
import { GodwitError } from '../util/errors';
import type { Helper } from '../native/helper';
import { allThreads, scanTree, Tree } from './tree';

/** Rounds before giving up on a tree that keeps forking or spawning threads faster than it can be seized. */
const MAX_FREEZE_ROUNDS = 16;

export interface FrozenTree {
  tree: Tree;
  /** Threads that were in a job-control stop (tid -> stop signal): they are restored stopped. */
  groupStopped: Map<number, number>;
  rounds: number;
}

export async function freezeTree(helper: Helper, root: number, timeoutMs?: number): Promise<FrozenTree> {
  const seized = new Set<number>();
  const groupStopped = new Map<number, number>();
  let tree = scanTree(root);
  for (let round = 1; round <= MAX_FREEZE_ROUNDS; round++) {
    const fresh = allThreads(tree).filter((t) => !seized.has(t));
    if (fresh.length === 0) return { tree, groupStopped, rounds: round };
    const res = await helper.seize(fresh, { vanished: 'report', ...(timeoutMs ? { timeoutMs } : {}) });
    for (const r of res) {
      switch (r.status) {
        case 'stopped':
        case 'already-seized':
          seized.add(r.tid);
          break;
        case 'group-stopped':
          seized.add(r.tid);
          groupStopped.set(r.tid, r.stopSignal ?? 19);
          break;
        case 'zombie':
        case 'vanished':
          break; // the rescan sees it as a zombie or not at all
        case 'timeout':
          throw new GodwitError(
            `thread ${r.tid} did not stop within the seize timeout (is it frozen by a cgroup v1 freezer, or in uninterruptible sleep?)`,
          );
      }
    }
    if (res.some((r) => r.tid === root && r.status === 'vanished'))
      throw new GodwitError(`pid ${root} exited while godwit was freezing it`);
    tree = scanTree(root);
  }
  throw new GodwitError(
    `the tree of pid ${root} kept changing (new threads or children) for ${MAX_FREEZE_ROUNDS} rounds of seizing: giving up`,
  );
}
