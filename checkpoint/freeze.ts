/**
 * Freezing: seize every thread (the helper interrupts all, then waits for all), rescan the tree, seize what
 * appeared meanwhile (new threads, new children), until a scan finds nothing new. freezeSettled: a freeze that
 * found no inotify events in flight and no vfork() in flight (thawed and made again while it finds some).
 */
import { GodwitError } from '../util/errors';
import type { Helper } from '../native/helper';
import { queuedInotify, queuedInotifyError } from './inotify';
import { allThreads, scanTree, Tree } from './tree';
import { inVfork, lastingVforks, VforkInFlightError } from './vfork';

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
    // A vfork child seized before its exec would hold its parent out of every stop (checkpoint/vfork.ts).
    const vforks = lastingVforks(tree);
    if (vforks.length) throw new VforkInFlightError(vforks.map((t) => t.tid));
    const res = await helper.seize(fresh, { vanished: 'report', ...(timeoutMs ? { timeoutMs } : {}) });
    const inVforkWait = res.filter((r) => r.status === 'timeout' && inVfork(r.tgid || r.tid, r.tid)).map((r) => r.tid);
    if (inVforkWait.length) throw new VforkInFlightError(inVforkWait);
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

/**
 * Waits between a freeze that found inotify events queued and the next one (ms; the tree runs meanwhile). A reader
 * woken by its events needs one scheduling slice to drain them, a few ms on a loaded machine; the waits grow so that
 * a busy one gets longer, and their sum (~0.5 s) bounds what a watcher that never reads costs before the refusal.
 */
const SETTLE_WAITS_MS = [2, 5, 10, 20, 40, 60, 80, 120, 160];

export interface SettledFreeze extends FrozenTree {
  /** When the freeze that held started (earlier ones were let go). */
  frozenAt: bigint;
  /** Freezes made in all (1: the first one held). */
  freezes: number;
  /** Why the earlier freezes were let go, when there were any. */
  reason?: string;
  /** Time frozen in the earlier freezes, and time the tree ran between them (ms). */
  earlierFrozenMs: number;
  waitedMs: number;
}

/**
 * A freeze the dump can keep: the tree is frozen (`freeze`: the cgroup freezer around freezeTree for a container)
 * and asked for inotify events not read yet, which no image can carry. Such events are nearly always just in
 * flight (the reader was frozen a moment before it would have read them): the tree is let go (`thaw`: every task
 * as it was), runs a short growing while, and is frozen again, up to SETTLE_WAITS_MS.length times; then the dump is
 * refused, naming the fds and how long it waited. On a throw the tree may be held: the caller lets it go
 * (abortDump), as after any failed freeze. An event read during a thaw is not lost: the tree has it.
 */
export async function freezeSettled(helper: Helper, freeze: () => Promise<FrozenTree>, thaw: () => Promise<void>): Promise<SettledFreeze> {
  let earlierFrozenMs = 0;
  let waitedMs = 0;
  const reasons = new Set<string>();
  /** Lets the tree run SETTLE_WAITS_MS[attempt] before the next freeze, counting the time frozen and let go. */
  const letGo = async (reason: string, frozenAt: bigint, attempt: number): Promise<void> => {
    reasons.add(reason);
    await thaw();
    const thawedAt = process.hrtime.bigint();
    earlierFrozenMs += Number(thawedAt - frozenAt) / 1e6;
    await new Promise((r) => setTimeout(r, SETTLE_WAITS_MS[attempt]));
    waitedMs += Number(process.hrtime.bigint() - thawedAt) / 1e6;
  };
  for (let attempt = 0; ; attempt++) {
    const frozenAt = process.hrtime.bigint();
    let f: FrozenTree;
    try {
      f = await freeze();
    } catch (err) {
      // A seize held up by a vfork() in flight: let go (the child first, so that its parent can stop) and again.
      if (!(err instanceof VforkInFlightError) || attempt === SETTLE_WAITS_MS.length) throw err;
      await letGo('a vfork() in flight', frozenAt, attempt);
      continue;
    }
    const queued = await queuedInotify(helper, f.tree);
    if (queued.length === 0) {
      const freezes = attempt + 1;
      return { ...f, frozenAt, freezes, earlierFrozenMs, waitedMs, ...(freezes > 1 ? { reason: [...reasons].join(', ') } : {}) };
    }
    if (attempt === SETTLE_WAITS_MS.length) throw queuedInotifyError(queued, waitedMs, attempt + 1);
    await letGo('inotify events in flight', frozenAt, attempt);
  }
}
