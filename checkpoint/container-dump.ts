/**
 * The container part of a dump (the steps dump.ts runs when the target has namespaces of its own):
 * resolve (runc/crun state, cgroup, or a --pid whose namespaces differ from godwit's), freeze through the
 * cgroup freezer around the ptrace seize, and, once the tree is collected, its namespaces' content (uts names,
 * SysV IPC), its mounts with tmpfs contents, its rootfs (shared or diff), its cgroups with their limits, and
 * container.json: godwit's summary of the container (beside CRIU's layout, which it does not change).
 */
import * as fs from 'node:fs';
import { GodwitError, UsageError } from '../util/errors';
import { cgroupImage, cgroupMembership, CgroupMember, freezeCgroup, FrozenCgroup } from './cgroups';
import { resolveCgroup, resolveContainer, Runtime } from './container';
import { containerMounts, tarTmpfs } from './mounts';
import { dumpIpc, dumpIpcVars, dumpTimens, dumpTimensClocks, dumpUserns, dumpUts, IdExtent, idInside, ipcImageEntries, ipcVarEntry, listPosixQueues, nsutilAvailable, timespecOf } from './ns-content';
import { EXTERNAL_NS, NamespaceIds, ownNamespaces } from './namespaces';
import type { ImageSet } from './imageset';
import type { NsKind } from './proc/misc';
import { refuseSharedNamespaces } from './ns-shared';
import type { Tree } from './tree';
import { collectNetns, netnsImageFiles } from './net';
import { diffRootfs, RootfsMode, RootfsRecord, ROOTFS_DIFF, sharedRootfs } from './rootfs';

export const CONTAINER_JSON = 'container.json';

export interface ContainerOptions {
  /** runc/crun container id. */
  container?: string;
  runtime?: Runtime;
  /** A cgroup directory (or path inside the hierarchies) holding the tree. */
  cgroup?: string;
  /** How the rootfs travels (default shared). */
  rootfsMode?: RootfsMode;
  /** diff mode: the pristine base to compare the rootfs with. */
  rootfsBase?: string;
  /**
   * Namespace kinds (net, ipc, uts) the tree is in but does not own: recorded by inode, not content; restore
   * joins an existing namespace instead (--join-ns). runc containers whose config names a namespace path get
   * that kind here by themselves.
   */
  externalNs?: NsKind[];
}

export interface ContainerDump {
  pid: number;
  runtime?: Runtime;
  id?: string;
  bundle?: string;
  statePath?: string;
  cgroups: CgroupMember[];
  frozen?: FrozenCgroup;
  /** Extra files for the image directory (tmpfs tars, rootfs diff, container.json). */
  files: { name: string; data: Buffer }[];
  /**
   * runc: namespaces the container's config names a path for (it joined them, they are not its own), kind -> path.
   * runc checkpoints those as external (criu --external net[INO]:extRootNetNS) and joins the path again on restore.
   */
  configNsPaths?: Partial<Record<NsKind, string>>;
  /** ms per part (freeze, namespaces, mounts, rootfs, cgroups) for the benchmark. */
  timings: Record<string, number>;
}

export interface ContainerRecord {
  godwit: 1;
  runtime?: Runtime;
  id?: string;
  bundle?: string;
  /** Namespace kinds the container owns (the rest were the host's, or external). */
  ns: string[];
  /** Namespaces the tree was in without owning them (--external-ns): kind -> inode at dump. Restore joins one. */
  external?: Partial<Record<NsKind, number>>;
  uts?: { nodename: string; domainname: string };
  timens?: { monotonic: [string, string]; boottime: [string, string] };
  /** A user namespace of its own: its id maps (also in userns-N.img). */
  userns?: { uid_map: IdExtent[]; gid_map: IdExtent[] };
  rootfs: RootfsRecord;
  /** Mount entries (mountpoints-N.img) and which tmpfs images hold contents. */
  mounts: number;
  cgroup: boolean;
  /** runc's state.json at dump time: restore writes it back for the restored init so `runc list` shows it. */
  runcState?: unknown;
  /** Mount points that are files (a file bound over a file): restore creates a file there, not a directory. */
  fileMounts?: string[];
}

type ImageEntryLike = { msg: Record<string, unknown>; extra?: unknown };

const since = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/**
 * Decides whether this dump is a container dump, and of what. Returns undefined for a plain process tree
 * (no --container/--cgroup and a --pid sharing all of godwit's namespaces).
 */
export function resolveContainerTarget(o: ContainerOptions & { pid?: number }): ContainerDump | undefined {
  if (o.container && o.cgroup) throw new UsageError('give one of --container and --cgroup, not both');
  if (o.container) {
    const t = resolveContainer(o.container, { runtime: o.runtime });
    return { pid: t.pid, runtime: t.runtime, id: t.id, bundle: t.bundle, statePath: t.statePath, cgroups: t.cgroups, files: [], timings: {},
      ...(t.runtime === 'runc' ? { configNsPaths: runcNamespacePaths(JSON.parse(fs.readFileSync(t.statePath, 'utf8'))) } : {}) };
  }
  if (o.cgroup) {
    const t = resolveCgroup(o.cgroup);
    return { pid: t.pid, cgroups: t.cgroups, files: [], timings: {} };
  }
  if (!o.pid) return undefined;
  let own: string[];
  try {
    own = ownNamespaces(o.pid);
  } catch {
    return undefined; // resolveTarget reports a missing pid
  }
  if (!own.length) return undefined;
  return { pid: o.pid, cgroups: cgroupMembership(o.pid), files: [], timings: {} };
}

const RUNC_NS: Record<string, NsKind> = { NEWNET: 'net', NEWIPC: 'ipc', NEWUTS: 'uts', NEWPID: 'pid', NEWNS: 'mnt', NEWUSER: 'user', NEWCGROUP: 'cgroup', NEWTIME: 'time' };

/** runc's state (state.json, parsed): the config.namespaces entries that give a path (joined at start), by kind. */
export function runcNamespacePaths(state: unknown): Partial<Record<NsKind, string>> {
  const out: Partial<Record<NsKind, string>> = {};
  const cfg = (state as { config?: { namespaces?: { type?: string; path?: string }[] } } | undefined)?.config;
  for (const n of cfg?.namespaces ?? []) if (n.path && n.type && RUNC_NS[n.type]) out[RUNC_NS[n.type]!] = n.path;
  return out;
}

/**
 * The kinds to treat as external: those asked for, and those of net/ipc/uts a runc config names a path for (as runc
 * does; a joined pid or mnt namespace stays the container's, and the shared-namespace check refuses it).
 */
export function externalKinds(c: ContainerDump | undefined, asked: NsKind[] = []): NsKind[] {
  const configured = (Object.keys(c?.configNsPaths ?? {}) as NsKind[]).filter((k) => EXTERNAL_NS.includes(k));
  return [...new Set([...asked, ...configured])];
}

/**
 * Before anything is frozen: what the container holds that godwit cannot carry. A namespace of its own that
 * processes outside the tree are in too (checkpoint/ns-shared.ts), and POSIX message queues (their contents are
 * not dumped: the mqueue filesystem would come back empty) are refused, named.
 */
export async function containerPreflight(c: ContainerDump, ns: NamespaceIds, tree: Tree): Promise<void> {
  refuseSharedNamespaces(tree, ns);
  userWithoutPidPreflight(c, ns, tree);
  if (!ns.own.includes('ipc')) return;
  if (!nsutilAvailable()) throw new GodwitError('godwit-nsutil is missing (make -C native builds it): it reads the container\'s ipc namespace');
  const mq = await listPosixQueues(c.pid);
  if (mq.length)
    throw new GodwitError(
      `cannot checkpoint container pid ${c.pid} (nothing was frozen): its ipc namespace holds POSIX message queue${mq.length > 1 ? 's' : ''} ${mq.map((q) => '/' + q).join(', ')}, whose contents godwit does not carry yet (SysV queues it does): remove them (mq_unlink) or use SysV message queues`,
      { code: 'EUNSUPPORTED' },
    );
}

/**
 * A user namespace of the container's own in the host's pid namespace (unshare -Ur without -p): restore gives
 * every task its pid in the host's pid namespace, then the task joins the user namespace itself, which the kernel
 * allows a single-threaded task only (threads need their tids before, and set_tid is refused after).
 */
function userWithoutPidPreflight(c: ContainerDump, ns: NamespaceIds, tree: Tree): void {
  if (!ns.own.includes('user') || ns.own.includes('pid')) return;
  const threaded = tree.processes.filter((p) => !p.zombie && p.threads.length > 1);
  if (threaded.length)
    throw new GodwitError(
      `cannot checkpoint container pid ${c.pid} (nothing was frozen): it has a user namespace of its own but shares the host's pid namespace, and ${threaded.map((p) => `pid ${p.pid} (${p.comm})`).join(', ')} ${threaded.length > 1 ? 'are' : 'is'} multi-threaded: restore can put only single-threaded tasks into the user namespace there. Start it with a pid namespace too (unshare -Urpf ...), which godwit restores with any threads`,
      { code: 'EUNSUPPORTED' },
    );
}

/** Before the ptrace seize: stop the whole cgroup, so nothing forks or runs while tasks are seized one by one. */
export async function freezeContainerCgroup(c: ContainerDump): Promise<void> {
  if (!c.cgroups.some((m) => m.path !== '/' && (m.version === 2 || m.controllers.includes('freezer')))) return;
  const t0 = process.hrtime.bigint();
  c.frozen = await freezeCgroup(c.cgroups);
  // cgroup v1 FROZEN tasks do not report the ptrace stop until thawed: there the freeze only fences the
  // listing, and the seize (which interrupts every thread) runs after the thaw.
  if (c.frozen.version === 1) thawContainerCgroup(c);
  c.timings.freeze = since(t0);
}

/** After the seize: the tasks stay in their ptrace stops; the freezer must never be left set. */
export function thawContainerCgroup(c: ContainerDump): void {
  const f = c.frozen;
  c.frozen = undefined;
  f?.thaw();
}

/** Everything of the container but its processes, into `images` and `c.files`, while the tree is held. */
export async function dumpContainerState(c: ContainerDump, images: ImageSet, ns: NamespaceIds, o: ContainerOptions): Promise<void> {
  const pid = c.pid;
  if (!nsutilAvailable()) throw new GodwitError('godwit-nsutil is missing (make -C native builds it): it reads uts and ipc namespaces');
  const record: ContainerRecord = { godwit: 1, ns: [...ns.own], rootfs: { mode: 'shared', path: '', digest: '' }, mounts: 0, cgroup: false };
  if (Object.keys(ns.external).length) record.external = { ...ns.external };
  if (c.runtime) record.runtime = c.runtime;
  if (c.id) record.id = c.id;
  if (c.bundle) record.bundle = c.bundle;
  if (c.statePath && c.runtime === 'runc') record.runcState = JSON.parse(fs.readFileSync(c.statePath, 'utf8'));

  // The parts are independent (each its own child processes or file reads): run them side by side, as the
  // tree is frozen meanwhile. Each part's own time is kept for the benchmark.
  const timed = async (name: string, fn: () => Promise<void>): Promise<void> => {
    const t0 = process.hrtime.bigint();
    await fn();
    c.timings[name] = since(t0);
  };
  const mounts = ns.own.includes('mnt') ? containerMounts(pid) : [];
  for (const m of mounts) images.add('MNTS', ns.root.mnt, m.entry);
  record.mounts = mounts.length;
  const rootMount = mounts.find((m) => m.kind === 'root');
  const rootPath = rootMount?.hostPath;
  const shm: ImageEntryLike[] = [];
  const sem: ImageEntryLike[] = [];
  const msgq: ImageEntryLike[] = [];
  let ipcVars: Record<string, unknown> | undefined;
  let clocks: { monotonic: bigint; boottime: bigint } | undefined;
  await Promise.all([
    timed('namespaces', async () => {
      if (ns.own.includes('uts')) record.uts = await dumpUts(pid);
      if (ns.own.includes('ipc')) {
        const ipc = ipcImageEntries(await dumpIpc(pid));
        shm.push(...ipc.shm);
        sem.push(...ipc.sem);
        msgq.push(...ipc.msg);
        ipcVars = ipcVarEntry(await dumpIpcVars(pid));
      }
      if (ns.own.includes('time')) {
        // The image holds the clocks as the container saw them (CRIU's meaning); container.json the offsets too.
        clocks = await dumpTimensClocks(pid);
        const t = dumpTimens(pid);
        record.timens = { monotonic: [String(BigInt.asIntN(64, t.monotonic.tv_sec)), String(t.monotonic.tv_nsec)], boottime: [String(BigInt.asIntN(64, t.boottime.tv_sec)), String(t.boottime.tv_nsec)] };
      }
    }),
    timed('net', async () => {
      if (ns.own.includes('net')) c.files.push(...netnsImageFiles(await collectNetns(pid), ns.root.net));
    }),
    timed('mounts', async () => {
      const tars = await Promise.all(mounts.map((m) => (m.tmpfsImage ? tarTmpfs(pid, m) : Promise.resolve(undefined))));
      mounts.forEach((m, k) => {
        if (m.tmpfsImage) c.files.push({ name: m.tmpfsImage, data: tars[k]! });
        try {
          if (m.kind !== 'root' && !fs.statSync(`/proc/${pid}/root${m.info.mountPoint}`).isDirectory()) (record.fileMounts ??= []).push(m.info.mountPoint);
        } catch {
          /* a mount point that cannot be stat'ed is taken as a directory */
        }
      });
    }),
    timed('rootfs', async () => {
      if (!rootPath) {
        record.rootfs = { mode: 'shared', path: '/', digest: '' };
      } else if (rootMount?.hostRoot) {
        // The host's own root (unshare -m): nothing of its own to record or check; restore uses the host's root.
        record.rootfs = { mode: 'host', path: '/', digest: '' };
      } else if ((o.rootfsMode ?? 'shared') === 'diff') {
        if (!o.rootfsBase) throw new UsageError('--rootfs diff needs --rootfs-base DIR: the pristine rootfs the container started from');
        const d = await diffRootfs(rootPath, o.rootfsBase);
        record.rootfs = d.record;
        c.files.push({ name: ROOTFS_DIFF, data: d.tar });
      } else record.rootfs = sharedRootfs(rootPath);
    }),
  ]);
  // CRIU's mark of an external net namespace (criu dump --external net[INO]:KEY): the key, no content.
  if (ns.external.net !== undefined) images.add('NETNS', ns.root.net, { ext_key: `net[${ns.external.net}]` });
  if (record.uts) images.add('UTSNS', ns.root.uts, { nodename: record.uts.nodename, domainname: record.uts.domainname });
  if (clocks) images.add('TIMENS', ns.root.time, { monotonic: timespecOf(clocks.monotonic), boottime: timespecOf(clocks.boottime) });
  if (ns.own.includes('ipc')) {
    for (const e of shm) images.add('IPCNS_SHM', ns.root.ipc, e.msg, e.extra as Buffer);
    for (const e of sem) images.add('IPCNS_SEM', ns.root.ipc, e.msg, e.extra as unknown as Buffer); // the encoder takes the u16 values
    for (const e of msgq) images.add('IPCNS_MSG', ns.root.ipc, e.msg, e.extra as unknown as Buffer); // the encoder takes the { msg, data } list
    if (ipcVars) images.add('IPC_VAR', ns.root.ipc, ipcVars);
    images.touch('IPCNS_SHM', ns.root.ipc);
    images.touch('IPCNS_SEM', ns.root.ipc);
    images.touch('IPCNS_MSG', ns.root.ipc);
  }

  if (ns.own.includes('user')) {
    record.userns = dumpUserns(pid);
    images.add('USERNS', ns.root.user, { uid_map: record.userns.uid_map, gid_map: record.userns.gid_map });
    idsAsInside(images, record.userns);
  }

  const t0 = process.hrtime.bigint();
  if (c.cgroups.some((m) => m.path !== '/')) {
    images.add('CGROUP', undefined, cgroupImage(c.cgroups));
    record.cgroup = true;
  }
  c.timings.cgroups = since(t0);
  c.files.push({ name: CONTAINER_JSON, data: Buffer.from(JSON.stringify(record, null, 2) + '\n') });
}

/**
 * CRIU writes credentials and IPC owners as the container sees them (inside its user namespace); godwit read
 * them from outside (/proc status, godwit-nsutil from the host's user namespace): map them through the
 * namespace's id maps, an id without a mapping becoming the overflow id as the kernel shows it.
 */
function idsAsInside(images: ImageSet, maps: { uid_map: IdExtent[]; gid_map: IdExtent[] }): void {
  const uid = (v: unknown): number => idInside(Number(v), maps.uid_map);
  const gid = (v: unknown): number => idInside(Number(v), maps.gid_map);
  for (const img of images.images) {
    // creds_entry: in each thread's core (thread_core.creds), or a creds-N.img of older layouts.
    const creds = (m: Record<string, unknown> | undefined): void => {
      if (!m) return;
      for (const f of ['uid', 'euid', 'suid', 'fsuid']) if (m[f] !== undefined) m[f] = uid(m[f]);
      for (const f of ['gid', 'egid', 'sgid', 'fsgid']) if (m[f] !== undefined) m[f] = gid(m[f]);
      if (Array.isArray(m.groups)) m.groups = (m.groups as number[]).map(gid);
    };
    if (img.kind === 'CREDS') for (const { msg: m } of img.entries) creds(m);
    if (img.kind === 'CORE') for (const { msg: m } of img.entries) creds((m.thread_core as Record<string, unknown> | undefined)?.creds as Record<string, unknown> | undefined);
    if (img.kind === 'IPCNS_SHM' || img.kind === 'IPCNS_SEM' || img.kind === 'IPCNS_MSG')
      for (const { msg: m } of img.entries) {
        const d = m.desc as Record<string, number>;
        d.uid = uid(d.uid);
        d.cuid = uid(d.cuid);
        d.gid = gid(d.gid);
        d.cgid = gid(d.cgid);
      }
  }
}
