/**
 * Before anything is frozen: everything /proc shows that godwit cannot dump yet, named by pid, fd or mapping
 * and kind. The same checks run again while frozen (collect), since a running tree can change in between.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { classifyFd, isConsoleOrVt, kernelDev, SocketTables } from './fdkinds';
import { unsupportedInetState } from './inet';
import { estimatePageBytes, inspectMappings } from './memory';
import type { Mapping } from './vma';
import { NamespaceIds } from './namespaces';
import { isNoEntry, listProcNumbers } from './proc/read';
import { readStatus } from './proc/status';
import { readStat } from './proc/stat';
import type { Tree } from './tree';
import { readFdInfo } from './proc/fdinfo';
import { consoleOrVtPath, cttyIndex, devptsOf, isCtty, isHungUpSlave, ptyOf } from './tty';
import { nsFileProblem } from './nsfiles';
import { sessionProblems } from '../util/sessions';
import { sleepSync } from '../util/sleep';
import { lastingVforks, VFORK_REFUSAL } from './vfork';

export interface Problem {
  pid: number;
  /** "fd 5", "mapping 0x7f..-0x7f.. /dev/dri/card0", "process" */
  where: string;
  kind: string;
}

export interface PreflightResult {
  problems: Problem[];
  /** Private anonymous + swapped bytes of the tree (smaps): the expected size of the page dump. */
  estimatedPageBytes: number;
}

export function findProblems(tree: Tree, ns: NamespaceIds): Problem[] {
  return inspectTree(tree, ns).problems;
}

export function inspectTree(tree: Tree, ns: NamespaceIds): PreflightResult {
  const problems: Problem[] = [];
  for (const kind of sessionProblems(tree.processes)) problems.push({ pid: tree.root, where: 'tree', kind });
  for (const v of lastingVforks(tree)) problems.push({ pid: v.pid, where: v.tid === v.pid ? 'process' : `thread ${v.tid}`, kind: VFORK_REFUSAL });
  let estimatedPageBytes = 0;
  const sockets = new SocketTables();
  const masters = new Set<number>();
  const slaves: { pid: number; fd: number; index: number; link: string; dev?: bigint }[] = [];
  let rootDev: number | undefined;
  for (const p of tree.processes) {
    if (p.zombie) continue;
    const before = problems.length;
    try {
      const st = readStatus(p.pid);
      if (st.tracerPid !== 0)
        problems.push({ pid: p.pid, where: 'process', kind: `already traced by pid ${st.tracerPid} (a debugger or strace?)` });
      for (const t of p.threads) {
        if (t === p.pid) continue;
        const ts = readStatus(p.pid, t);
        if (ts.tracerPid !== 0) problems.push({ pid: p.pid, where: `thread ${t}`, kind: `already traced by pid ${ts.tracerPid}` });
      }
      try {
        ns.forTask(p.pid);
      } catch (err) {
        if (isNoEntry(err)) throw err; // exited meanwhile (a short-lived child): the catch below skips it
        problems.push({ pid: p.pid, where: 'process', kind: (err as Error).message.replace(/^pid \d+ /, '') });
      }
      for (const where of ['cwd', 'root']) {
        const dead = deadProcPath(p.pid, readLinkOrEmpty(`/proc/${p.pid}/${where}`));
        if (dead) problems.push({ pid: p.pid, where, kind: dead });
      }
      for (const fd of listProcNumbers(p.pid, 'fd')) {
        try {
          const c = classifyFd(p.pid, fd, sockets);
          const dead = deadProcPath(p.pid, c.link);
          if (dead) problems.push({ pid: p.pid, where: `fd ${fd}`, kind: dead });
          if (c.kind === 'reg' && isConsoleOrVt(c.proc.stat.rdev) && BigInt(readStat(p.pid).ttyNr) === c.proc.stat.rdev) {
            const bad = consoleCttyProblem(tree, p.pid, c.proc.stat.rdev);
            if (bad) problems.push({ pid: p.pid, where: `fd ${fd}`, kind: `${c.link}: ${bad}` });
          }
          if (c.kind === 'unsupported') problems.push({ pid: p.pid, where: `fd ${fd}`, kind: `${c.what} (${c.link})` });
          const nsBad = c.kind === 'nsfile' ? nsFileProblem(ns, c.link) : undefined;
          if (nsBad) problems.push({ pid: p.pid, where: `fd ${fd}`, kind: nsBad });
          if (c.kind === 'tty') {
            const ctty = isCtty(c) ? cttyIndex(p.pid) : undefined;
            const pty = ctty !== undefined ? (ctty === null ? null : { side: 'slave', index: ctty }) : ptyOf(c, readFdInfo(p.pid, fd));
            if (ctty === null) problems.push({ pid: p.pid, where: `fd ${fd}`, kind: `${c.link} of a process whose controlling terminal is not a Unix98 pty` });
            else if (!pty) problems.push({ pid: p.pid, where: `fd ${fd}`, kind: `terminal ${c.link} (not a Unix98 pty)` });
            else if (pty.side === 'master') masters.add(pty.index);
            // /dev/tty lives on /dev, not devpts: its terminal is the process's own, in the tree's view.
            else slaves.push({ pid: p.pid, fd, index: pty.index, link: c.link, dev: ctty !== undefined ? undefined : c.proc.stat.dev });
          }
          if (c.kind === 'inotify') {
            // Restore finds a watched inode by its file handle, opened on the root filesystem the tree sees:
            // one on another filesystem (a tmpfs, say) would only fail there, after the tree was killed.
            rootDev ??= kernelDev(fs.statSync(`/proc/${tree.root}/root`, { bigint: true }).dev);
            for (const w of readFdInfo(p.pid, fd).inotify)
              if (w.sdev !== rootDev)
                problems.push({
                  pid: p.pid,
                  where: `fd ${fd}`,
                  kind: `inotify watch ${w.wd} on inode ${w.ino} of device ${w.sdev >>> 20}:${w.sdev & 0xfffff}, not the tree's root filesystem (a tmpfs, another mount): restore finds watched inodes by file handle on the root filesystem only (not supported yet)`,
                });
          }
          if (c.kind === 'inet') {
            const bad = unsupportedInetState(c.what, sockets.inetState(p.pid, Number(c.proc.stat.ino)) ?? 7);
            if (bad) problems.push({ pid: p.pid, where: `fd ${fd}`, kind: `${bad} (${c.link})` });
          }
        } catch (err) {
          if (!isNoEntry(err)) throw err; // closed meanwhile
        }
      }
      const mappings = stableMappings(p.pid);
      estimatedPageBytes += estimatePageBytes(mappings);
      for (const m of mappings)
        if (m.unsupported)
          problems.push({
            pid: p.pid,
            where: `mapping 0x${m.proc.start.toString(16)}-0x${m.proc.end.toString(16)}${m.proc.path ? ' ' + m.proc.path : ''}`,
            kind: m.unsupported,
          });
    } catch (err) {
      if (!isNoEntry(err)) throw err;
    }
    // A short-lived child (a shell's `sleep`) that exits while it is looked at leaves unreadable links behind
    // (map_files, fds: ENOENT/ESRCH), which are no problem of the tree: the freeze step rescans it anyway.
    if (problems.length > before && exitedMeanwhile(p.pid)) problems.length = before;
  }
  // The devpts the tree's root sees at /dev/pts: a container's own instance (restored as a fresh devpts with its
  // mounts) or the host's.
  const devpts = devptsOf(tree.root);
  for (const s of slaves) {
    if (s.dev !== undefined && s.dev !== devpts)
      problems.push({ pid: s.pid, where: `fd ${s.fd}`, kind: `pty ${s.link} of another devpts instance (not supported yet)` });
    else if (isHungUpSlave(s.link)) {
      if (masters.has(s.index))
        problems.push({ pid: s.pid, where: `fd ${s.fd}`, kind: `terminal ${s.link} whose master was closed, while pty ${s.index} of the tree has that index again (not supported)` });
    } else if (!masters.has(s.index))
      problems.push({ pid: s.pid, where: `fd ${s.fd}`, kind: `terminal ${s.link} whose master is outside the tree (a shell job: start it with its own pty or redirect its stdio; not supported yet)` });
  }
  return { problems, estimatedPageBytes };
}

/**
 * A /proc/PID path of a process that has exited: restore could only open it again through a process made with
 * that pid for the purpose (CRIU's PROCFS remap), which godwit does not do; refused rather than failing at restore.
 */
function deadProcPath(pid: number, link: string): string | null {
  const m = /^\/proc\/(\d+)(?:\/|$| \(deleted\)$)/.exec(link);
  // Looked up through the holder's root too: the /proc it sees (a container's, with its own pids).
  if (!m || fs.existsSync(`/proc/${pid}/root/proc/${m[1]}`) || fs.existsSync(`/proc/${m[1]}`)) return null;
  return `${link}: a /proc file of process ${m[1]}, which has exited (re-creating a dead pid's /proc entries is not supported)`;
}

/**
 * A console or virtual terminal that is pid's controlling terminal comes back through its session leader, which
 * takes it while it is made (checkpoint/tty.ts dumpConsoleTerminal): the leader must be in the tree, and the
 * device's usual path must be the device.
 */
function consoleCttyProblem(tree: Tree, pid: number, rdev: bigint): string | null {
  const sid = readStat(pid).sid;
  if (!tree.processes.some((q) => q.pid === sid && !q.zombie))
    return `a console or virtual terminal that is the controlling terminal of session ${sid}, whose leader is not in the tree (not supported)`;
  const path = consoleOrVtPath(rdev);
  let st: fs.BigIntStats | undefined;
  try {
    st = fs.statSync(path, { bigint: true });
  } catch {
    /* missing */
  }
  if (!st?.isCharacterDevice() || st.rdev !== rdev)
    return `the controlling terminal of session ${sid}, which restore would open as ${path}: that is not the device here (not supported)`;
  return null;
}

function readLinkOrEmpty(path: string): string {
  try {
    return fs.readlinkSync(path);
  } catch {
    return '';
  }
}

/** Reads of a running process's mappings before its changing ones are left to the dump (ms apart, how many). */
const MAPPING_RETRY_MS = 2;
const MAPPING_READS = 5;

/**
 * The mappings of a running process, read again while some changed between smaps and map_files (a program
 * starting up: the dynamic loader maps and mprotects). What still changes is left out: the dump classifies every
 * mapping again with the tree frozen, where a mapping cannot change.
 */
function stableMappings(pid: number): Mapping[] {
  let mappings = inspectMappings(pid);
  for (let i = 1; i < MAPPING_READS && mappings.some((m) => m.changed); i++) {
    sleepSync(MAPPING_RETRY_MS);
    mappings = inspectMappings(pid);
  }
  return mappings.filter((m) => !m.changed);
}

/** PF_EXITING: set from the start of exit(), before its memory and files are let go (then it is a zombie). */
const PF_EXITING = 0x4;

/** The process is exiting, a zombie or gone now. */
function exitedMeanwhile(pid: number): boolean {
  try {
    const st = readStat(pid);
    return st.state === 'Z' || (st.flags & PF_EXITING) !== 0;
  } catch (err) {
    if (isNoEntry(err)) return true;
    throw err;
  }
}

export class UnsupportedError extends GodwitError {
  constructor(readonly problems: Problem[]) {
    super(
      `cannot checkpoint this tree yet (nothing was frozen):\n` +
        problems.map((p) => `  pid ${p.pid} ${p.where}: ${p.kind}`).join('\n'),
      { code: 'EUNSUPPORTED' },
    );
  }
}

/** Throws UnsupportedError listing every problem; returns the page estimate otherwise. */
export function preflight(tree: Tree, ns: NamespaceIds): PreflightResult {
  const r = inspectTree(tree, ns);
  if (r.problems.length) throw new UnsupportedError(r.problems);
  return r;
}
