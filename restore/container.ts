/**
 * Restoring a container (an image directory with container.json): before the restorer starts, its cgroups
 * with their limits, its rootfs, fresh namespaces held by a holder process (uts names and SysV IPC written in,
 * the network brought up, the mount tree rebuilt and pivot_root'ed), then godwit-restorer joins those
 * namespaces and puts the tree into a pid namespace of its own (its root pid 1 there), the root task moving
 * itself into the cgroups and mounting proc first. Everything made here is undone by `teardown()` on failure.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { CONTAINER_JSON, ContainerRecord } from '../checkpoint/container-dump';
import { GodwitError } from '../util/errors';
import { settled } from '../util/settled';
import { restoreCgroups, RestoredCgroups } from './cgroups';
import { readEntries } from './image-files';
import { buildMounts, hostRootOf, MountPlan, planMounts, readonlyRecords, rootTaskRecords } from './mounts';
import { readMountInfo } from '../checkpoint/proc/misc';
import { IdExtent, IpcDesc, idOutside } from '../checkpoint/ns-content';
import { createFreshNamespaces, FreshNamespaces, FreshNsKind, IdMaps, ipcContentFromImages, restoreIpc, restoreIpcVars, restoreUts } from './ns-content';
import { prepareRootfs, PreparedRootfs } from './rootfs';
import { restoreNetns, RestoredNetns, VethHostConfig } from './net';
import { externalJoinArgs } from './ns-shared';
import type { NsKind } from '../checkpoint/proc/misc';

const run = promisify(execFile);
type Msg = Record<string, unknown>;

export interface ContainerRestoreOptions {
  /** diff mode: the base rootfs on this host (default: the path recorded at dump). */
  rootfsBase?: string;
  /** shared mode: the rootfs on this host (default: the path recorded at dump). */
  rootfsPath?: string;
  /** Host end of the container's veth (bridge or peer address; default: left unconfigured in this namespace). */
  veth?: VethHostConfig;
  /** Recreate the dumped cgroup path under this directory of each hierarchy (default: the path as dumped). */
  cgroupRoot?: string;
  /** The namespace files to join for the record's external namespaces (kind -> /proc/PID/ns/KIND or a bind mount). */
  joinNs?: Partial<Record<NsKind, string>>;
}

export interface RestoredContainer {
  record: ContainerRecord;
  holder?: FreshNamespaces;
  cgroups?: RestoredCgroups;
  rootfs?: PreparedRootfs;
  net?: RestoredNetns;
  staging?: string;
  /** godwit-restorer arguments: namespaces to join, cgroup.procs files for the root. */
  restorerArgs: string[];
  /** OP_CONTAINER payload (nest flag + the root task's mounts). */
  containerRequest: Buffer;
  /** Where the container's files are seen from here, for preflight (the holder's new root). */
  fileRoot?: string;
  timings: Record<string, number>;
}

export function readContainerRecord(dir: string): ContainerRecord | undefined {
  const p = path.join(dir, CONTAINER_JSON);
  if (!fs.existsSync(p)) return undefined;
  let rec: ContainerRecord;
  try {
    rec = JSON.parse(fs.readFileSync(p, 'utf8')) as ContainerRecord;
  } catch (e) {
    throw new GodwitError(`${p} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (rec.godwit !== 1 || !Array.isArray(rec.ns) || !rec.rootfs)
    throw new GodwitError(`${p}: not a godwit container record (version ${String(rec.godwit)})`);
  return rec;
}

const since = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/** The ns id of a kind in the image (inventory root_ids). */
function rootNsId(dir: string, kind: string): number {
  const inv = readEntries(dir, 'inventory.img')?.[0] as Msg | undefined;
  const ids = (inv?.root_ids ?? {}) as Msg;
  return Number(ids[`${kind}_ns_id`] ?? 0);
}

function descOutside(d: IpcDesc, m: IdMaps): IpcDesc {
  return { ...d, uid: idOutside(d.uid, m.uid_map), cuid: idOutside(d.cuid, m.uid_map), gid: idOutside(d.gid, m.gid_map), cgid: idOutside(d.cgid, m.gid_map) };
}

export async function prepareContainer(dir: string, rec: ContainerRecord, o: ContainerRestoreOptions = {}): Promise<RestoredContainer> {
  const c: RestoredContainer = { record: rec, restorerArgs: [], containerRequest: Buffer.alloc(8), timings: {} };
  // External namespaces are joined, first (before a user namespace of its own takes the host's capabilities away).
  const join = externalJoinArgs(dir, rec, o.joinNs);
  // A user namespace of its own: its id maps, read before anything is made (a missing image is refused here).
  let userns: IdMaps | undefined;
  if (rec.ns.includes('user')) {
    const file = `userns-${rootNsId(dir, 'user')}.img`;
    const e = readEntries(dir, file)?.[0] as Msg | undefined;
    if (!e) throw new GodwitError(`${dir}: the container had its own user namespace, but ${file} (its id maps) is missing`);
    userns = { uid_map: (e.uid_map as IdExtent[] | undefined) ?? [], gid_map: (e.gid_map as IdExtent[] | undefined) ?? [] };
    if (!userns.uid_map.length || !userns.gid_map.length) throw new GodwitError(`${dir}/${file}: the user namespace has no uid or gid map`);
  }
  try {
    let t0 = process.hrtime.bigint();
    if (rec.cgroup) {
      const entry = readEntries(dir, 'cgroup.img')?.[0] as Msg | undefined;
      if (!entry) throw new GodwitError(`${dir}: container.json says the container had cgroups, but cgroup.img is missing`);
      const root = cgroupRootOf(o.cgroupRoot);
      c.cgroups = restoreCgroups(entry, root ? { relocate: { from: '/', to: root + '/' } } : {});
      for (const leaf of c.cgroups.leaves.values()) c.restorerArgs.push('--cgroup', path.join(leaf, 'cgroup.procs'));
    }
    c.timings.cgroups = since(t0);

    const own = new Set(rec.ns);
    if (own.has('time')) {
      // The restorer makes the time namespace itself (offsets can be set only before a task enters it): the
      // clocks inside continue from the values dumped.
      const t = readEntries(dir, `timens-${rootNsId(dir, 'time')}.img`)?.[0] as Msg | undefined;
      if (!t) throw new GodwitError(`${dir}: the container had its own time namespace, but timens-${rootNsId(dir, 'time')}.img is missing`);
      const ns = (v: unknown): string => {
        const ts = v as { tv_sec: bigint; tv_nsec: bigint };
        return String(BigInt(ts.tv_sec) * 1000000000n + BigInt(ts.tv_nsec));
      };
      c.restorerArgs.push('--timens', ns(t.monotonic), ns(t.boottime));
    }
    // The user namespace first: one unshare makes it and the others owned by it, and the restorer joins it first
    // (it must own the pid and time namespaces the restorer makes next).
    const kinds = (['user', 'mnt', 'uts', 'ipc', 'net', 'cgroup'] as FreshNsKind[]).filter((k) => own.has(k));
    const timed = async (name: string, fn: () => Promise<void>): Promise<void> => {
      const t = process.hrtime.bigint();
      await fn();
      c.timings[name] = (c.timings[name] ?? 0) + since(t);
    };
    await timed('namespaces', async () => {
      if (kinds.length) c.holder = await createFreshNamespaces(kinds, userns ? { userns } : {});
    });
    const h = c.holder?.pid ?? 0;
    // Independent of each other: namespace content, network, rootfs check side by side. All settle before a
    // failure is thrown: the teardown below must not run while another branch is still making its veth/overlay.
    await settled([
      timed('namespaces', async () => {
        if (own.has('uts') && rec.uts) await restoreUts(h, rec.uts);
        if (own.has('ipc')) {
          const id = rootNsId(dir, 'ipc');
          const shm = readEntries(dir, `ipcns-shm-${id}.img`) ?? [];
          const sem = readEntries(dir, `ipcns-sem-${id}.img`) ?? [];
          const msg = readEntries(dir, `ipcns-msg-${id}.img`) ?? [];
          // The namespace's limits first: a queue's byte limit above the default msgmnb needs it raised.
          const vars = readEntries(dir, `ipcns-var-${id}.img`)?.[0];
          if (vars) await restoreIpcVars(h, vars);
          const asEntry = (m: Msg) => ({ msg: m, extra: m.extra });
          const ipc = ipcContentFromImages(shm.map(asEntry), sem.map(asEntry), msg.map(asEntry));
          // The images hold owners as seen inside the user namespace; godwit-nsutil sets them from outside.
          if (userns) for (const o of [...ipc.shm, ...ipc.sem, ...ipc.msg]) o.desc = descOutside(o.desc, userns);
          await restoreIpc(h, ipc);
        }
      }),
      timed('net', async () => {
        if (!own.has('net')) return;
        const nsId = rootNsId(dir, 'net');
        // Interfaces, addresses and routes as dumped (restore/net.ts); an image without them gets loopback up.
        if (fs.existsSync(path.join(dir, `netdev-${nsId}.img`))) c.net = await restoreNetns(h, dir, { nsId, ...(o.veth ? { veth: o.veth } : {}) });
        else await run('nsenter', [`--net=/proc/${h}/ns/net`, 'ip', 'link', 'set', 'lo', 'up']);
      }),
      timed('rootfs', async () => {
        if (own.has('mnt') && rec.rootfs.mode !== 'host') c.rootfs = await prepareRootfs(rec.rootfs, dir, { base: o.rootfsBase, path: o.rootfsPath });
      }),
    ]);

    t0 = process.hrtime.bigint();
    let rootTask: Buffer = Buffer.alloc(0);
    if (own.has('mnt')) {
      const entries = (readEntries(dir, `mountpoints-${rootNsId(dir, 'mnt')}.img`) ?? []) as Msg[];
      if (!entries.length) throw new GodwitError(`${dir}: the container had its own mount namespace but mountpoints-N.img is missing or empty`);
      const hostRoot = rec.rootfs.mode === 'host';
      if (hostRoot !== hostRootOf(entries)) throw new GodwitError(`${dir}: container.json's rootfs (${rec.rootfs.mode}) and the root entry of mountpoints-N.img disagree`);
      let plan: MountPlan;
      if (hostRoot) {
        // The host's root: the holder's mount namespace is a copy of this host's; only the container's own
        // mounts are made, in place (no staging, no pivot). A host proc is visible there: no placeholder.
        plan = planMounts(entries, '/', { host: readMountInfo(process.pid) }, new Set(rec.fileMounts ?? []));
        await buildMounts(c.holder!.pid, plan, dir, '/', readonlyRecords(entries, '/'), { pivot: false });
      } else {
        c.staging = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-root-'));
        plan = planMounts(entries, c.staging, c.rootfs!.mount, new Set(rec.fileMounts ?? []), { procPlaceholder: !!userns });
        await buildMounts(c.holder!.pid, plan, dir, c.staging, readonlyRecords(entries, c.staging));
      }
      rootTask = rootTaskRecords(plan.rootTask);
      c.fileRoot = `/proc/${c.holder!.pid}/root`;
    }
    c.timings.mounts = since(t0);
    c.restorerArgs.unshift(...join);
    for (const k of kinds) {
      // A user namespace without a pid namespace (unshare -Urn): the restorer must keep the host's capabilities
      // to give the tasks their pids in the host's pid namespace (clone3 set_tid); each task joins it itself.
      if (k === 'user' && !own.has('pid')) c.restorerArgs.push('--task-userns', `/proc/${c.holder!.pid}/ns/user`);
      else c.restorerArgs.push('--setns', `/proc/${c.holder!.pid}/ns/${k}`);
    }
    const head = Buffer.alloc(8);
    head.writeInt32LE(own.has('pid') ? 1 : 0, 0);
    head.writeUInt32LE(rootTask.length, 4);
    c.containerRequest = Buffer.concat([head, rootTask]);
    if (!own.has('pid') && rootTask.length) throw new GodwitError('a container with its own mount namespace but the host pid namespace is not supported yet');
    return c;
  } catch (e) {
    await teardownContainer(c);
    throw e;
  }
}

/** A cgroup root option as a clean absolute path without a trailing slash ('' for the hierarchy's root). */
export function cgroupRootOf(root: string | undefined): string {
  if (root === undefined) return '';
  const r = root.replace(/\/+$/, '');
  if (!r.startsWith('/') || r.split('/').some((c) => c === '..' || c === '.'))
    throw new GodwitError(`cgroup root ${JSON.stringify(root)}: give an absolute path inside the cgroup hierarchies, e.g. /godwit/tenant-a`);
  return r;
}

/** After a successful restore: the holder goes (the tree holds the namespaces now), the staging dir too. */
export async function releaseContainer(c: RestoredContainer): Promise<void> {
  await c.holder?.destroy();
  c.holder = undefined;
  if (c.staging) fs.rmSync(c.staging, { recursive: true, force: true });
  c.staging = undefined;
}

/** Undoes prepareContainer (after the restorer and its tasks are gone). Never throws. */
export async function teardownContainer(c: RestoredContainer): Promise<void> {
  await c.net?.cleanup().catch(() => undefined);
  c.net = undefined;
  await c.holder?.destroy().catch(() => undefined);
  c.holder = undefined;
  if (c.staging) {
    // The staging dir's mounts lived in the holder's namespace only: here it is an empty directory.
    try {
      fs.rmSync(c.staging, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
    c.staging = undefined;
  }
  try {
    c.rootfs?.remove();
  } catch {
    /* best effort */
  }
  for (let i = 0; i < 50 && c.cgroups; i++) {
    try {
      c.cgroups.remove();
      break;
    } catch {
      // Tasks killed a moment ago may still be leaving the cgroup.
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Host pids of the restored tasks: NSpid of every descendant of the restorer, keyed by its innermost pid. */
export function containerHostPids(restorerPid: number): Map<number, number> {
  const out = new Map<number, number>();
  const queue = [restorerPid];
  while (queue.length) {
    const p = queue.shift()!;
    let kids: number[] = [];
    try {
      for (const t of fs.readdirSync(`/proc/${p}/task`))
        kids = kids.concat(fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      continue;
    }
    for (const k of kids) {
      queue.push(k);
      try {
        const m = /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${k}/status`, 'utf8'));
        const levels = (m?.[1] ?? '').trim().split(/\s+/).map(Number);
        // Levels: host, the restorer's namespace, the container's. Only the container's tasks have three.
        if (levels.length >= 3) out.set(levels[levels.length - 1]!, k);
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

/** runc's state directory root (runc's --root default). */
export const RUNC_ROOT = '/run/runc';

/**
 * Makes `runc list` show the restored container: runc's state.json from the dump, with the restored init's
 * host pid, its start time and its namespace paths. Returns why it did not, or undefined when it did.
 */
export function writeRuncState(rec: ContainerRecord, initPid: number, root = RUNC_ROOT, cgroupRoot?: string): string | undefined {
  if (rec.runtime !== 'runc' || !rec.id || !rec.runcState) return rec.runtime === 'crun' ? 'crun containers: godwit does not write crun\'s state (crun cannot run on this host to check it)' : 'not a runc container';
  const dir = path.join(root, rec.id);
  const file = path.join(dir, 'state.json');
  if (fs.existsSync(file)) {
    try {
      const old = JSON.parse(fs.readFileSync(file, 'utf8')) as Msg;
      if (fs.existsSync(`/proc/${Number(old.init_process_pid)}`)) return `runc already has a live container ${rec.id} (pid ${old.init_process_pid}): its state was left alone`;
    } catch {
      /* unreadable: replaced below */
    }
  }
  const st = JSON.parse(JSON.stringify(rec.runcState)) as Msg;
  const stat = fs.readFileSync(`/proc/${initPid}/stat`, 'utf8');
  st.init_process_pid = initPid;
  st.init_process_start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  st.created = new Date().toISOString();
  const paths = (st.namespace_paths ?? {}) as Record<string, string>;
  const file2ns: Record<string, string> = { NEWNS: 'mnt', NEWUTS: 'uts', NEWIPC: 'ipc', NEWPID: 'pid', NEWNET: 'net', NEWCGROUP: 'cgroup', NEWUSER: 'user', NEWTIME: 'time' };
  for (const k of Object.keys(paths)) if (file2ns[k]) paths[k] = `/proc/${initPid}/ns/${file2ns[k]}`;
  st.namespace_paths = paths;
  // Restored under another cgroup root: runc must find the container's cgroups there (runc delete, runc ps).
  const cgRoot = cgroupRootOf(cgroupRoot);
  const cg = (st.config as Msg | undefined)?.cgroups as Msg | undefined;
  if (cgRoot && cg && typeof cg.path === 'string') {
    const old = cg.path;
    cg.path = cgRoot + old;
    const cgPaths = (st.cgroup_paths ?? {}) as Record<string, string>;
    for (const k of Object.keys(cgPaths)) if (cgPaths[k].endsWith(old)) cgPaths[k] = cgPaths[k].slice(0, -old.length) + cgRoot + old;
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o711 });
  fs.writeFileSync(file + '.tmp', JSON.stringify(st));
  fs.renameSync(file + '.tmp', file);
  return undefined;
}
