/**
 * Namespaces prepared before a tree is restored: a holder process keeps fresh namespaces alive (a user namespace
 * first, owning the others, its id maps written from here); the restored tree joins them. Their content is written
 * from inside by godwit-nsutil: uts names, SysV IPC objects with their ids, keys, permissions and contents (shm
 * bytes, semaphore values, queued messages in order). `destroy()` (and any failure while preparing) ends the
 * holder, and with it the namespaces.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import { IdExtent, IPC_SYSCTLS, IpcContent, UtsContent, runNsutil } from '../checkpoint/ns-content';
import { GodwitError } from '../util/errors';

export type FreshNsKind = 'user' | 'ipc' | 'uts' | 'net' | 'mnt' | 'cgroup';

const UNSHARE_FLAG: Record<FreshNsKind, string> = { user: '--user', ipc: '--ipc', uts: '--uts', net: '--net', mnt: '--mount', cgroup: '--cgroup' };

export interface IdMaps {
  uid_map: IdExtent[];
  gid_map: IdExtent[];
}

export interface FreshNamespaces {
  /** The holder: its /proc/PID/ns/* are the fresh namespaces. */
  pid: number;
  kinds: FreshNsKind[];
  nsPath(kind: FreshNsKind): string;
  destroy(): Promise<void>;
}

/**
 * Starts a holder in new namespaces of the given kinds; it dies with godwit (parent-death signal). With 'user',
 * one unshare(2) makes the user namespace first and the others owned by it; its id maps (`userns`) are written
 * from here (godwit is root in the parent namespace) once the holder is in it.
 */
export async function createFreshNamespaces(kinds: FreshNsKind[], o: { userns?: IdMaps } = {}): Promise<FreshNamespaces> {
  if (kinds.includes('user') !== !!o.userns) throw new GodwitError('a fresh user namespace needs its id maps, and id maps need a user namespace');
  // unshare(1) without --fork unshares and then execs sleep: the holder is the spawned pid itself.
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'unshare', ...kinds.map((k) => UNSHARE_FLAG[k]), 'sleep', 'infinity'], { stdio: 'ignore' });
  const pid = child.pid;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let exitedYet = false;
  void exited.then(() => (exitedYet = true));
  if (pid === undefined) throw new GodwitError('cannot start a namespace holder (setpriv/unshare from util-linux missing?)');
  const destroy = async (): Promise<void> => {
    if (!exitedYet) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await exited;
    }
  };
  try {
    const own = fs.readlinkSync('/proc/self/ns/uts');
    const ownUser = fs.readlinkSync('/proc/self/ns/user');
    const deadline = Date.now() + 5000;
    // Ready when the holder runs sleep (after unshare), seen as its own namespaces differing from ours.
    for (;;) {
      if (exitedYet) throw new GodwitError(`namespace holder ${pid} exited before it was ready (unshare ${kinds.join(',')} refused?)`);
      let ready = false;
      try {
        ready =
          fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep' &&
          (!kinds.includes('uts') || fs.readlinkSync(`/proc/${pid}/ns/uts`) !== own) &&
          (!kinds.includes('user') || fs.readlinkSync(`/proc/${pid}/ns/user`) !== ownUser);
      } catch {
        /* between execs */
      }
      if (ready) break;
      if (Date.now() > deadline) throw new GodwitError(`namespace holder ${pid} not ready after 5 s`);
      await new Promise((r) => setTimeout(r, 2));
    }
    if (o.userns) {
      const text = (m: IdExtent[]): string => m.map((e) => `${e.first} ${e.lower_first} ${e.count}\n`).join('');
      for (const [file, m] of [['uid_map', o.userns.uid_map], ['gid_map', o.userns.gid_map]] as const) {
        try {
          fs.writeFileSync(`/proc/${pid}/${file}`, text(m));
        } catch (e) {
          throw new GodwitError(`cannot write the restored user namespace's ${file} (${text(m).trim().replace(/\n/g, ', ')}): ${(e as Error).message}`, { cause: e });
        }
      }
    }
  } catch (e) {
    await destroy();
    throw e;
  }
  return { pid, kinds, nsPath: (k) => `/proc/${pid}/ns/${k}`, destroy };
}

export async function restoreUts(nsPid: number, uts: UtsContent): Promise<void> {
  await runNsutil(['uts-set', String(nsPid), uts.nodename, uts.domainname]);
}

/** The stream godwit-nsutil ipc-restore reads (the same one ipc-dump writes). */
export function ipcStream(c: IpcContent): Buffer {
  const parts: Buffer[] = [];
  const head = (kind: string, d: IpcContent['shm'][number]['desc']): string =>
    `${kind} ${d.key | 0} ${d.id} ${(d.mode & 0o777).toString(8)} ${d.uid} ${d.gid} ${d.cuid} ${d.cgid}`;
  for (const s of c.shm) {
    if (s.data.length !== s.size) throw new GodwitError(`shm id ${s.desc.id}: ${s.data.length} bytes of content for a ${s.size}-byte segment`);
    parts.push(Buffer.from(`${head('shm', s.desc)} ${s.size}\n`), s.data);
  }
  for (const s of c.sem) parts.push(Buffer.from(`${head('sem', s.desc)} ${s.values.length} ${s.values.join(' ')}\n`));
  for (const q of c.msg ?? []) {
    parts.push(Buffer.from(`${head('msg', q.desc)} ${q.qbytes} ${q.messages.length}\n`));
    for (const [k, m] of q.messages.entries()) {
      // msgsnd refuses a type below 1: an image that says otherwise is refused here, naming the message.
      if (m.mtype < 1n || m.mtype > 0x7fffffffffffffffn) throw new GodwitError(`msg queue id ${q.desc.id}, message ${k}: type ${m.mtype} is not a positive long`);
      parts.push(Buffer.from(`${m.mtype} ${m.data.length}\n`), m.data);
    }
  }
  parts.push(Buffer.from('end\n'));
  return Buffer.concat(parts);
}

/** The sysctl lines godwit-nsutil ipc-vars-set takes, from an ipc_var_entry (absent optional fields are left alone). */
export function ipcVarLines(e: Record<string, unknown>): string {
  const pairs: Array<[string, unknown]> = IPC_SYSCTLS.map(([field, sysctl]) => [sysctl, e[field]]);
  const sem = (e.sem_ctls as number[] | undefined) ?? [];
  if (sem.length && sem.length !== 4) throw new GodwitError(`ipc_var_entry: sem_ctls has ${sem.length} values, not 4 (semmsl semmns semopm semmni)`);
  if (sem.length) pairs.unshift(['kernel/sem', sem.join(' ')]);
  return pairs.filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${String(v)}\n`).join('');
}

/** Sets nsPid's ipc namespace sysctls (before its objects: a queue's byte limit may need a raised msgmnb). */
export async function restoreIpcVars(nsPid: number, e: Record<string, unknown>): Promise<void> {
  await runNsutil(['ipc-vars-set', String(nsPid)], Buffer.from(ipcVarLines(e)));
}

/** Recreates the IPC objects inside nsPid's ipc namespace, with their original ids. */
export async function restoreIpc(nsPid: number, c: IpcContent): Promise<void> {
  await runNsutil(['ipc-restore', String(nsPid)], ipcStream(c));
}

type DecodedEntry = { msg: Record<string, unknown>; extra?: unknown };

/** IpcContent from decoded ipcns-shm / ipcns-sem / ipcns-msg image entries. */
export function ipcContentFromImages(shm: DecodedEntry[], sem: DecodedEntry[], msg: DecodedEntry[] = []): IpcContent {
  const desc = (m: Record<string, unknown>): IpcContent['shm'][number]['desc'] => {
    const d = m.desc as Record<string, number>;
    return { key: d.key, uid: d.uid, gid: d.gid, cuid: d.cuid, cgid: d.cgid, mode: d.mode, id: d.id };
  };
  return {
    shm: shm.map((e) => ({ desc: desc(e.msg), size: Number(e.msg.size), data: (e.extra as Buffer) ?? Buffer.alloc(0) })),
    sem: sem.map((e) => ({ desc: desc(e.msg), values: (e.extra as number[]) ?? [] })),
    msg: msg.map((e) => ({
      desc: desc(e.msg),
      qbytes: Number(e.msg.qbytes),
      messages: ((e.extra as Array<{ msg: Record<string, unknown>; data: Buffer }>) ?? []).map((m) => ({ mtype: BigInt(m.msg.mtype as bigint), data: m.data })),
    })),
  };
}

/**
 * Fresh namespaces with their content, ready for a tree to join: uts names and IPC objects set. On any failure
 * the holder is ended (the namespaces go with it) before the error is thrown.
 */
export async function prepareNamespaces(kinds: FreshNsKind[], content: { uts?: UtsContent; ipc?: IpcContent }): Promise<FreshNamespaces> {
  const ns = await createFreshNamespaces(kinds);
  try {
    if (content.uts) await restoreUts(ns.pid, content.uts);
    if (content.ipc) await restoreIpc(ns.pid, content.ipc);
    return ns;
  } catch (e) {
    await ns.destroy();
    throw e;
  }
}
