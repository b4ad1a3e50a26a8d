/**
 * Checks made before anything is created, each failing with what is wrong and how to fix it: PIDs taken,
 * files that mappings and fds need missing or changed, CPU features, vdso layout, resources restore does not
 * support yet.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { RestoreContext, treePath } from './context';
import { FD_TYPE, neededFiles, statOrNull, SUPPORTED_FD_TYPES, treeProcProblems } from './files';
import { Msg } from './image-files';
import { unsupportedVma, vmasOf, VMA } from './memory';
import { inetProblems } from './inet';
import { unixProblems } from './sockets';
import { restorerPath } from './restorer';
import { TASK_ALIVE, TASK_STOPPED } from './load';
import { HostXsave } from './threads';
import { shmemProblems } from './shmem';
import { seccompProblems } from './seccomp';
import { ttyProblems } from './tty';
import { fileLockProblems } from './filelocks';
import { groupHelpers } from './tree';
import { sessionProblems } from '../util/sessions';

export class PreflightError extends GodwitError {
  constructor(message: string) {
    super(message, { code: 'EPREFLIGHT' });
  }
}

let hostXsaveCache: HostXsave | undefined;

/** XCR0 and the xsave component layout of this CPU (asked once per process: it cannot change). */
export function hostXsave(): HostXsave {
  if (hostXsaveCache) return hostXsaveCache;
  const out = JSON.parse(execFileSync(restorerPath(), ['--xcr0'], { encoding: 'utf8' })) as {
    xcr0: number;
    components: Record<string, [number, number]>;
  };
  hostXsaveCache = {
    xcr0: BigInt(out.xcr0),
    components: new Map(Object.entries(out.components).map(([k, v]) => [Number(k), v])),
  };
  return hostXsaveCache;
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** [vdso] start minus [vvar] start on this kernel: ARCH_MAP_VDSO_64 keeps that distance. */
function hostVdsoOffset(): bigint | null {
  let vvar: bigint | null = null;
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const start = BigInt('0x' + line.split('-')[0] || '0');
    if (line.endsWith('[vvar]')) vvar = start;
    if (line.endsWith('[vdso]')) return vvar === null ? 0n : start - vvar;
  }
  return null;
}

/** How long a dying task (zombie, or exiting) may take to free its PID before it counts as taken. */
const DYING_WAIT_MS = 3000;

function pidState(pid: number): string | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return null;
  }
}

/** Waits while the only holders of the dumped PIDs are tasks on their way out (a dump that killed the tree). */
export async function waitDyingPids(ctx: RestoreContext): Promise<void> {
  if (ctx.opts.newPidns) return;
  const pids = ctx.set!.tasks.flatMap((t) => t.threads);
  const end = Date.now() + DYING_WAIT_MS;
  for (;;) {
    const held = pids.map(pidState).filter((s) => s !== null);
    if (!held.length || held.some((s) => s !== 'Z' && s !== 'X') || Date.now() > end) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A PID that no task holds any more can still be taken: a live process outside the dump may use it as its
 * process group or session id (a child that left the tree before the dump), and clone3 then fails with EEXIST.
 */
function groupHolders(pids: number[]): string[] {
  const want = new Set(pids);
  const out = new Map<number, string>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue; // gone meanwhile
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    for (const [i, what] of [[2, 'process group'], [3, 'session']] as const) {
      const id = Number(f[i]);
      if (want.has(id) && !out.has(id) && Number(name) !== id)
        out.set(id, `PID ${id} is still the ${what} id of process ${name} ("${comm(Number(name))}"), which is not part of the dump: restore with --new-pidns, or end that process`);
    }
  }
  return [...out.values()];
}

export function preflight(ctx: RestoreContext): void {
  const set = ctx.set!;
  const problems: string[] = [];
  // PIDs: in this host's namespace they must be free; a new namespace has them all.
  if (!ctx.opts.newPidns) {
    for (const t of set.tasks)
      for (const tid of t.threads)
        if (fs.existsSync(`/proc/${tid}`))
          problems.push(`PID ${tid} (${t.pid === tid ? 'task' : 'thread of task ' + t.pid}) is in use on this host by "${comm(tid)}": restore with --new-pidns, or end that process`);
  }
  // Process groups whose leader is gone are made again by a helper task with the group's pid (restore/tree.ts).
  const { helpers, stranded } = groupHelpers(set.tasks);
  const helperPids = [...new Set(helpers.values())];
  if (!ctx.opts.newPidns)
    for (const g of helperPids)
      if (fs.existsSync(`/proc/${g}`))
        problems.push(`PID ${g} (process group ${g}, whose leader is not in the dump: a helper task takes its pid) is in use on this host by "${comm(g)}": restore with --new-pidns, or end that process`);
  for (const z of stranded)
    problems.push(`zombie ${z.pid} is in process group ${z.pgid}, whose leader is gone, with another zombie: restoring it needs one helper task per zombie, not supported yet`);
  if (!ctx.opts.newPidns) problems.push(...groupHolders([...set.tasks.flatMap((t) => t.threads), ...helperPids]));
  problems.push(...sessionProblems(set.tasks));
  // Files that mappings, fds, cwd/root need: present and, where dump recorded it, same size and mode.
  for (const f of neededFiles(ctx)) {
    const st = statOrNull(treePath(ctx, f.path));
    if (!st) {
      problems.push(`${f.path} (${f.why}) does not exist on this host: restore needs the same file at the same path`);
      continue;
    }
    if (f.mode !== undefined && f.mode !== 0 && (st.mode & 0o170000) !== (f.mode & 0o170000))
      problems.push(`${f.path} (${f.why}) is a different kind of file than at dump time (mode 0${f.mode.toString(8)}, now 0${st.mode.toString(8)})`);
    else if (f.size !== undefined && st.isFile() && !f.mapped && BigInt(st.size) > BigInt(f.size))
      // Appended to since the dump (a log that a process outside the tree writes and the tree reads, `tail -F`):
      // what the tree read is still there. A file that shrank, or one the tree maps (its bytes are the tree's
      // memory: a binary that grew is another binary), is refused.
      ctx.warnings.push({ message: `${f.path} (${f.why}) grew since the dump (size ${f.size}, now ${st.size}): restored as it is now` });
    else if (f.size !== undefined && st.isFile() && BigInt(st.size) !== BigInt(f.size))
      problems.push(`${f.path} (${f.why}) changed since the dump (size ${f.size}, now ${st.size}): restore needs the file as it was`);
  }
  problems.push(...treeProcProblems(ctx));
  const host = hostXsave();
  ctx.hostXsave = host;
  const vdsoOff = hostVdsoOffset();
  for (const t of set.tasks) {
    for (const [tid, core] of t.cores) {
      if (Number(core.mtype ?? 1) !== 1) problems.push(`thread ${tid}: not an x86_64 task (mtype ${core.mtype})`);
      const xs = (((core.thread_info as Msg | undefined)?.fpregs as Msg | undefined)?.xsave as Msg | undefined) ?? {};
      const bv = BigInt((xs.xstate_bv as bigint | undefined) ?? 0n);
      if (bv & ~host.xcr0)
        problems.push(`thread ${tid}: its FPU state uses xsave features 0x${(bv & ~host.xcr0).toString(16)} this CPU/kernel does not enable (XCR0 0x${host.xcr0.toString(16)}): restore on a host with the same CPU features`);
    }
    const tc = (t.cores.get(t.pid)!.tc as Msg | undefined) ?? {};
    if (t.zombie !== undefined) continue;
    if (tc.task_state !== undefined && Number(tc.task_state) !== TASK_ALIVE && Number(tc.task_state) !== TASK_STOPPED)
      problems.push(`task ${t.pid} was dumped in state ${tc.task_state} (not alive, stopped or a zombie), which restore does not support`);
    const vmas = vmasOf(t);
    for (const v of vmas) {
      const why = unsupportedVma(v, !!ctx.container?.record.ns.includes('ipc'));
      if (why) problems.push(`task ${t.pid}: mapping 0x${v.start.toString(16)}-0x${v.end.toString(16)} is ${why}, which restore does not support yet`);
    }
    const vdso = vmas.find((v) => v.status & VMA.VDSO);
    const vvar = vmas.filter((v) => v.status & VMA.VVAR).sort((a, c) => (a.start < c.start ? -1 : 1))[0];
    if (vdso && vvar && vdsoOff !== null && vdso.start - vvar.start !== vdsoOff)
      problems.push(`task ${t.pid}: its [vdso] sits 0x${(vdso.start - vvar.start).toString(16)} after [vvar], on this kernel 0x${vdsoOff.toString(16)}: the image comes from an incompatible kernel`);
    for (const fdi of t.fds) {
      const f = set.files.get(Number(fdi.id));
      const type = f ? FD_TYPE[Number(f.type)] ?? `type ${f.type}` : 'missing';
      if (!SUPPORTED_FD_TYPES.has(type))
        problems.push(`task ${t.pid}: fd ${fdi.fd} is ${type === 'missing' ? 'missing from files.img' : 'a ' + type + ' file'}, which restore does not support yet`);
      else if (type === 'PIDFD' && Number((f!.pidfd as Msg | undefined)?.nspid ?? 0) === -1 && ctx.opts.newPidns)
        problems.push(`task ${t.pid}: fd ${fdi.fd} is a pidfd of a reaped process: restoring it into a new PID namespace is not supported yet (its stand-in lives in this one)`);
    }
  }
  problems.push(...unixProblems(ctx));
  problems.push(...inetProblems(ctx));
  problems.push(...shmemProblems(ctx));
  problems.push(...ttyProblems(ctx));
  problems.push(...fileLockProblems(ctx));
  problems.push(...seccompProblems(ctx, set.tasks.filter((t) => t.zombie === undefined)));
  if (problems.length)
    throw new PreflightError(`cannot restore ${set.dir}:\n  - ${problems.join('\n  - ')}`);
}
