/**
 * Collection while the tree is frozen: for each process (parents first) the registers of every thread, the
 * injected per-process state, memory layout and page ranges, files, fs, credentials; then tree-wide images.
 * Nothing here writes to disk: entries go to the ImageSet, page ranges to the plan for the page step.
 */
import { GodwitError } from '../util/errors';
import type { CollectContext } from './context';
import { dumpFiles, FdRecord } from './files';
import { dumpFs } from './fs';
import { collectMemory } from './memory';
import { idsEntry, NamespaceIds } from './namespaces';
import { readComm, readLimits, readNumberFile, readPersonality, readTimers } from './proc/misc';
import { readStatus } from './proc/status';
import { readStat } from './proc/stat';
import type { PageRange, PageStats } from './pageranges';
import { checkUnixPeers, UnixFd } from './sockets';
import { lockConnections } from './inet';
import { buildCore, buildThreadCore, buildZombieCore } from './threads';
import { writeInventory, writePstree, writeTimens } from './inventory';
import type { TreeProcess } from './tree';

export interface ProcessPlan {
  pid: number;
  threads: number[];
  pagesId: number;
  ranges: PageRange[];
  stats: PageStats;
  fds: FdRecord[];
  zombie: boolean;
}

export interface CollectResult {
  plans: ProcessPlan[];
  runId: string;
}

export async function collectAll(
  ctx: CollectContext,
  ns: NamespaceIds,
  groupStopped: Map<number, number>,
): Promise<CollectResult> {
  const plans: ProcessPlan[] = [];
  const unixFds: UnixFd[] = [];
  let objId = 2; // 1 is the dumper's own (the inventory's root_ids), as in CRIU
  let pagesId = 1;
  ctx.ns = ns;
  await lockConnections(ctx);
  for (const p of ctx.tree.processes) {
    try {
      if (p.zombie) {
        ctx.images.add('CORE', p.pid, buildZombieCore(p));
        plans.push({ pid: p.pid, threads: [], pagesId: 0, ranges: [], stats: zeroStats(), fds: [], zombie: true });
        continue;
      }
      const plan = await collectProcess(ctx, ns, p, objId++, pagesId++, groupStopped, unixFds);
      plans.push(plan);
    } catch (err) {
      throw new GodwitError(`collecting pid ${p.pid} (${p.comm}) failed`, { cause: err });
    }
  }
  await checkUnixPeers(ctx, unixFds);
  writePstree(ctx.images, ctx.tree);
  const runId = writeInventory(ctx.images, ns);
  writeTimens(ctx.images);
  if (ctx.seccomp.size) ctx.images.put('SECCOMP', undefined, [ctx.seccomp.entry()]);
  ctx.images.put('FILES', undefined, ctx.files.entries);
  return { plans, runId };
}

function zeroStats(): PageStats {
  return { pagesScanned: 0, pagesDumped: 0, pagesSkippedZero: 0, pagesSkippedFile: 0 };
}

const SHARED_WHAT = { vm: 'memory (CLONE_VM)', files: 'fd table (CLONE_FILES)', fs: 'cwd, root and umask (CLONE_FS)' } as const;

/**
 * A process clone()d with CLONE_VM, CLONE_FILES or CLONE_FS shares that with its parent: restore makes every
 * process its own, so each would come back with a private copy and stop seeing the other's changes (an fd
 * one closes stays open in the other). Refused, naming both, rather than restored wrong; /proc cannot tell,
 * kcmp can.
 */
async function refuseSharedWithParent(ctx: CollectContext, p: TreeProcess): Promise<void> {
  const parent = ctx.tree.processes.find((x) => x.pid === p.ppid && !x.zombie);
  if (!parent) return;
  for (const what of ['vm', 'files', 'fs'] as const)
    if (await ctx.helper.sharesWith(p.pid, parent.pid, what))
      throw new GodwitError(
        `pid ${p.pid} shares its ${SHARED_WHAT[what]} with its parent ${parent.pid}: godwit restores each process with its own (not supported yet)`,
      );
}

async function collectProcess(
  ctx: CollectContext,
  ns: NamespaceIds,
  p: TreeProcess,
  objId: number,
  pagesId: number,
  groupStopped: Map<number, number>,
  unixFds: UnixFd[],
): Promise<ProcessPlan> {
  const pid = p.pid;
  await refuseSharedWithParent(ctx, p);
  const stat = readStat(pid); // again: the values while frozen
  const posix = readTimers(pid);
  const regs = await ctx.helper.threadRegs(p.threads);
  const state = await ctx.helper.dumpProcess(
    pid,
    p.threads,
    posix.map((t) => t.id),
  );
  const mem = await collectMemory(ctx, pid, stat, state.dumpable);
  const fds = await dumpFiles(ctx, pid, objId, unixFds);
  const leaderStatus = readStatus(pid);
  mem.mm.thp_disabled = leaderStatus.thpEnabled === false;
  dumpFs(ctx, pid, leaderStatus);
  const rlimits = state.rlimits.length
    ? state.rlimits.sort((a, b) => a.resource - b.resource).map((r) => ({ cur: r.cur, max: r.max }))
    : readLimits(pid);
  const extras = {
    personality: readPersonality(pid),
    loginuid: readNumberFile(pid, 'loginuid') >>> 0,
    oomScoreAdj: readNumberFile(pid, 'oom_score_adj'),
    rlimits,
    posixTimers: posix,
    stopped: groupStopped.has(pid),
    ...(groupStopped.has(pid) ? { stopSignal: groupStopped.get(pid)! } : {}),
  };
  for (const tid of p.threads) {
    const r = regs.find((x) => x.tid === tid);
    if (!r) throw new GodwitError(`thread ${tid}: the helper returned no registers`);
    const tstat = tid === pid ? stat : readStat(pid, tid);
    const tstatus = tid === pid ? leaderStatus : readStatus(pid, tid);
    const threadCore = buildThreadCore(p, tid, r, state, tstatus, readComm(pid, tid), {
      nice: tstat.nice,
      policy: tstat.policy,
      rtPriority: tstat.rtPriority,
    });
    ctx.seccomp.assign(pid, tid, tstatus.seccomp, r, threadCore);
    ctx.images.add('CORE', tid, buildCore(p, tid, r, ctx.helper.info, state, extras, threadCore));
  }
  ctx.images.add('IDS', pid, idsEntry(objId, ns.forTask(pid)));
  ctx.images.add('MM', pid, mem.mm);
  return { pid, threads: p.threads, pagesId, ranges: mem.ranges, stats: mem.stats, fds, zombie: false };
}
