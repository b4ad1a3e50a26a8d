/**
 * `restore`: bring a dumped process tree back to life. One flat list of named listr2 steps (exported so
 * `migrate` can nest them), mirroring checkpoint/ resource by resource. Policy lives here; the mechanism
 * (forking with set_tid, ptrace, injected syscalls, page writes) is godwit-restorer's.
 *
 * A failure at any step before resume kills everything the restore created: the restorer is told to kill
 * and reap the tree, and if it cannot answer it is killed itself (its tracees die with it: EXITKILL,
 * PDEATHSIG; in a new PID namespace the init's death takes the namespace down).
 */
import * as fs from 'node:fs';
import { Listr, ListrTask } from 'listr2';
import { GodwitError } from '../util/errors';
import { interruptedError } from '../util/interrupt';
import { mainCore, newContext, RestoreContext, RestoreOptions } from './context';
import { addAffinityCall, addSchedCalls, addCredCalls, checkAffinity, restoreRlimits, Warning } from './creds';
import { checkImageFiles, ImageIntegrityError } from './checksums';
import { addRootCall, closeObjects, installFds, openRegularFiles, removeLinkRemaps, restoreFs } from './files';
import { liveTasks, loadImageSet, TASK_STOPPED } from './load';
import { PageChain } from '../images/pagechain';
import { createTrampoline, finishMemory, mapVmas, pageRanges, vmasOf, Vma, writePages } from './memory';
import { createFifos, createPipes } from './pipes';
import { createUnixSockets } from './sockets';
import { createInetSockets } from './inet';
import { fillEpolls } from './epoll';
import { preflight, waitDyingPids } from './preflight';
import { Op, Restorer } from './restorer';
import { addSignalCalls } from './signals';
import { Batch, runBatch } from './syscalls';
import { addPosixTimerCalls, addTimerCalls } from './timers';
import { dropTrampoline, restoreThreadState, setRegisters } from './threads';
import { createTree, findHostPids, joinProcessGroups } from './tree';
import { applyMemfdSeals, createShmemObjects } from './shmem';
import { endStandIns } from './pidfd';
import { addSeccompCalls } from './seccomp';
import { createPtyPairs, openCttys, restoreControllingTerminals } from './tty';
import { restoreAioRings } from './aio';
import { restoreFileLocks } from './filelocks';
import { addPrctlCalls, checkPrctlResults } from './prctl';
import { externalJoinArgs } from './ns-shared';
import { containerHostPids, prepareContainer, readContainerRecord, releaseContainer, teardownContainer, writeRuncState } from './container';

export type { RestoreOptions, RestoreContext } from './context';

export interface RestoreResult {
  /** Root task PID in this host's PID namespace. */
  rootPid: number;
  /** Image PID -> host PID of every restored task. */
  pids: Map<number, number>;
  /** Exit status of the root task when not detached (exit code, or 128 + signal). */
  exitCode?: number;
  /** Milliseconds per step. */
  timings: Record<string, number>;
  /** Bytes of page contents written. */
  pageBytes: number;
  /** Bytes of the pages files read with O_DIRECT: those that were not in the page cache (a migration's images). */
  pagesReadDirect: number;
  warnings: Warning[];
  /** When detached: the restorer, still running as the tree's reaper (PID 1 of the new namespace with --new-pidns). */
  restorer?: Restorer;
  /** A container: whether runc's `list` shows it again, or why not. */
  runc?: { listed: boolean; why?: string };
  /** A container restored over a rootfs diff: the overlay's upper/work directory (remove it once the container ended). */
  rootfsLayer?: string;
}

interface StepState extends RestoreContext {
  runc?: RestoreResult['runc'];
  vmas: Map<number, Vma[]>;
  timings: Record<string, number>;
  pageBytes: number;
  pagesReadDirect: number;
}

function timed(title: string, fn: (s: StepState) => Promise<void> | void): ListrTask<StepState> {
  return {
    title,
    task: async (s) => {
      const t0 = process.hrtime.bigint();
      await fn(s);
      s.timings[title] = Number(process.hrtime.bigint() - t0) / 1e6;
    },
  };
}

/** The steps, in order. Each takes the shared state built by newRestoreState(). */
export function restoreSteps(): ListrTask<StepState>[] {
  return [
    timed('read images', async (s) => {
      // Integrity first: a damaged file should be reported as such, not as whatever decoding it gives.
      const problems = fs.existsSync(s.opts.dir) ? await checkImageFiles(s.opts.dir) : [];
      if (problems.length) throw new ImageIntegrityError(s.opts.dir, problems);
      s.set = loadImageSet(s.opts.dir);
    }),
    timed('container: cgroups, namespaces, rootfs, mounts', async (s) => {
      const rec = readContainerRecord(s.opts.dir);
      if (!rec) {
        externalJoinArgs(s.opts.dir, undefined, s.opts.joinNs); // refuses a --join-ns with nothing to join
        return;
      }
      // The tree's own pid namespace nests in the restorer's: its root is pid 1 there, as it was.
      if (rec.ns.includes('pid')) s.opts = { ...s.opts, newPidns: true };
      s.container = await prepareContainer(s.opts.dir, rec, { rootfsBase: s.opts.rootfsBase, rootfsPath: s.opts.rootfsPath,
        ...(s.opts.veth ? { veth: s.opts.veth } : {}), ...(s.opts.cgroupRoot ? { cgroupRoot: s.opts.cgroupRoot } : {}),
        ...(s.opts.joinNs ? { joinNs: s.opts.joinNs } : {}) });
      s.fileRoot = s.container.fileRoot;
      for (const [k, v] of Object.entries(s.container.timings)) s.timings[`container: ${k}`] = v;
    }),
    timed('preflight', async (s) => {
      await waitDyingPids(s);
      preflight(s);
    }),
    timed('start restorer', async (s) => {
      s.restorer = Restorer.start({ newPidns: s.opts.newPidns, detached: s.opts.detach, extraArgs: s.container?.restorerArgs });
      s.restorerPid = (await s.restorer.hello()).self;
      if (s.container) {
        const keep = (await s.restorer.request(Op.CONTAINER, s.container.containerRequest, 'set up the container root')).readInt32LE(0);
        if (keep >= 0) s.restorerPidfd = keep;
      }
    }),
    timed('create process tree', async (s) => {
      // Pty pairs first: a session leader takes its controlling terminal before it forks (restore/tty.ts).
      await createTree(s, await createPtyPairs(s));
    }),
    timed('create pipes and open files', async (s) => {
      await createShmemObjects(s);
      await createPipes(s);
      await createFifos(s);
      await createUnixSockets(s);
      await createInetSockets(s);
      await openRegularFiles(s);
    }),
    timed('rebuild memory', async (s) => {
      await s.opts.memoryReady;
      const chain = new PageChain(s.set!.dir);
      for (const t of liveTasks(s.set!)) {
        const vmas = vmasOf(t);
        const ranges = pageRanges(t, vmas, chain);
        s.vmas.set(t.pid, vmas);
        await createTrampoline(s, t, vmas);
        await mapVmas(s, t, vmas);
        await restoreAioRings(s, t);
        const st = await writePages(s, t, ranges, vmas);
        s.pageBytes += st.bytes;
        s.pagesReadDirect += st.readDirect;
        await finishMemory(s, t, vmas);
      }
      await applyMemfdSeals(s);
    }),
    timed('restore fds, cwd, root, umask', async (s) => {
      const filled = new Set<number>();
      await openCttys(s);
      for (const t of liveTasks(s.set!)) {
        await installFds(s, t);
        await fillEpolls(s, t, filled);
        await restoreFs(s, t);
      }
      await restoreFileLocks(s);
    }),
    timed('process groups', (s) => joinProcessGroups(s)),
    timed('controlling terminals', (s) => restoreControllingTerminals(s)),
    timed('resource limits', async (s) => {
      for (const t of liveTasks(s.set!)) await restoreRlimits(s, t, s.warnings);
    }),
    timed('signals, timers, per-thread state, credentials', async (s) => {
      for (const t of liveTasks(s.set!)) {
        const b = new Batch();
        const tc = mainCore(t).tc as { personality?: number } | undefined;
        b.call('personality', [Number(tc?.personality ?? 0)], 'set the personality');
        addSignalCalls(s, t, b);
        addTimerCalls(s, t, b);
        addPosixTimerCalls(s, t, b);
        const prctls = addPrctlCalls(t, b);
        addRootCall(s, t, b); // after the last host path opened inside the task
        checkPrctlResults(s, t, prctls, await runBatch(s.restorer!, t.pid, b));
        // Other threads first: the main thread's creds change last.
        for (const tid of [...t.threads.filter((x) => x !== t.pid), t.pid])
          await restoreThreadState(s, t, tid, (bb) => {
            addSchedCalls(t, tid, bb); // before the creds change: RT policies and negative nice need CAP_SYS_NICE
            const aff = addAffinityCall(s, t, tid, bb);
            addSeccompCalls(s, t, tid, bb); // before the creds change: see restore/seccomp.ts
            addCredCalls(t, tid, bb, { always: !!s.container?.record.ns.includes('user') });
            return (results) => checkAffinity(s, t, aff, results);
          });
      }
    }),
    timed('registers', async (s) => {
      for (const t of liveTasks(s.set!)) {
        for (const tid of t.threads) if (tid !== t.pid) await setRegisters(s, t, tid);
        await dropTrampoline(s, t, s.vmas.get(t.pid)!);
        await setRegisters(s, t, t.pid);
      }
    }),
    timed('resume', async (s) => {
      await endStandIns(s); // before closeObjects: the restorer's pidfds keep the stand-ins' exit status
      await closeObjects(s);
      if (s.container?.record.ns.includes('pid')) {
        const m = containerHostPids(s.restorer!.pid);
        s.hostPids = new Map(s.set!.tasks.map((t) => [t.pid, m.get(t.pid) ?? 0]));
      } else s.hostPids = s.opts.newPidns ? await findHostPids(s) : new Map(s.set!.tasks.map((t) => [t.pid, t.pid]));
      if (!s.opts.hold) await resumeHeld(s);
    }),
  ];
}

/** Lets a tree restored with `hold` run (detaching every thread at once). */
export async function resumeHeld(s: RestoreContext): Promise<void> {
  if (s.resumed) return;
  // Tasks dumped in a job-control stop (zdtm stopped*): SIGSTOP queued while every thread is still held, so
  // each one takes it on its way out of the ptrace stop, before running a single instruction of its own; the
  // stop is then reported to its parent as the original was.
  for (const t of liveTasks(s.set!)) {
    const tc = (t.cores.get(t.pid)!.tc as { task_state?: number } | undefined) ?? {};
    if (Number(tc.task_state ?? 0) !== TASK_STOPPED) continue;
    const host = s.hostPids.get(t.pid);
    if (!host) throw new GodwitError(`task ${t.pid} was dumped stopped, but its pid on this host is unknown: cannot stop it again`);
    process.kill(host, 'SIGSTOP');
  }
  await removeLinkRemaps(s); // every task holds its fds: the files get back the links they had
  await s.restorer!.request(Op.RESUME, Buffer.alloc(0), 'resume the tree');
  s.resumed = true;
  if (s.container) {
    // The tree holds its namespaces now: the holder and staging directory go; runc learns of the container.
    await releaseContainer(s.container);
    const why = writeRuncState(s.container.record, s.hostPids.get(s.set!.tasks[0].pid) ?? 0, undefined, s.opts.cgroupRoot);
    (s as StepState).runc = { listed: why === undefined, ...(why ? { why } : {}) };
  }
  if (s.opts.pidfile) fs.writeFileSync(s.opts.pidfile, `${s.hostPids.get(s.set!.tasks[0].pid) ?? ''}\n`);
}

export function newRestoreState(opts: RestoreOptions): StepState {
  return { ...newContext(opts), vmas: new Map(), timings: {}, pageBytes: 0, pagesReadDirect: 0 };
}

/** Resolves to p's value, or rejects after ms (the timer never outlives the race). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error('timeout')), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Seconds a healthy restorer needs at most to kill and reap a half-made tree. */
const ABORT_TIMEOUT_MS = 5000;

/** Tears down whatever a failed restore created. Safe to call at any point. */
export async function abortRestore(s: RestoreContext): Promise<void> {
  try {
    await endStandIns(s);
    await killRestorer(s);
  } finally {
    if (s.container && !s.resumed) await teardownContainer(s.container);
  }
}

async function killRestorer(s: RestoreContext): Promise<void> {
  const r = s.restorer;
  if (!r || s.resumed) return;
  try {
    await withTimeout(r.request(Op.KILL, Buffer.alloc(0), 'kill the half-restored tree'), ABORT_TIMEOUT_MS);
    await withTimeout(r.close(), ABORT_TIMEOUT_MS);
  } catch {
    /* fall through to the hard way */
  }
  r.kill();
  await r.exited;
}

/** Waits for the root task to exit (the restorer reaps it) and returns its exit code (or 128 + signal). */
export async function waitRoot(s: RestoreContext): Promise<number> {
  const out = await s.restorer!.request(Op.WAIT, Buffer.alloc(0), 'wait for the root task');
  const st = out.readInt32LE(0);
  if (st < 0) throw new GodwitError('lost the root task while waiting for it');
  await s.restorer!.close();
  return (st & 0x7f) === 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f);
}

/**
 * Restores the image directory `opts.dir`. Detached: returns once the tree runs (result.restorer keeps the
 * namespace's init with --new-pidns). Otherwise: waits for the root task and returns its exit code.
 */
export async function restore(opts: RestoreOptions, render: { silent?: boolean } = {}): Promise<RestoreResult> {
  const s = newRestoreState(opts);
  // listr2 types the renderer per list; the steps do not depend on it, so one list type serves both.
  const renderer = (render.silent ? 'silent' : 'default') as 'default';
  // No listr2 SIGINT handler (it exits on the spot, leaving a half-restored tree): opts.signal stops the restore
  // where it is instead (abortRestore is safe at any point: the step in flight fails).
  const list = new Listr<StepState>(restoreSteps(), { ctx: s, renderer, exitOnError: true, registerSignalListeners: false });
  const signal = opts.signal;
  const onAbort = () => void abortRestore(s);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await list.run(s);
  } catch (e) {
    await abortRestore(s);
    if (signal?.aborted) {
      throw new GodwitError(`restore of ${opts.dir} stopped: nothing of the tree is left`, {
        cause: interruptedError(signal, 'while restoring', e), code: 'EABORTED' });
    }
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  opts.onRunning?.();
  const result: RestoreResult = {
    rootPid: s.hostPids.get(s.set!.tasks[0].pid) ?? 0,
    pids: s.hostPids,
    timings: s.timings,
    pageBytes: s.pageBytes,
    pagesReadDirect: s.pagesReadDirect,
    warnings: s.warnings,
    ...(s.runc ? { runc: s.runc } : {}),
    ...(s.container?.rootfs?.layerDir ? { rootfsLayer: s.container.rootfs.layerDir } : {}),
  };
  if (opts.detach) {
    // The restorer stays as the tree's reaper (the namespace's init with --new-pidns); node does not wait.
    s.restorer!.detach();
    result.restorer = s.restorer;
    return result;
  }
  result.exitCode = await waitRoot(s);
  return result;
}
