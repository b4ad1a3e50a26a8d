/** State shared by the restore steps of one operation. */
import * as path from 'node:path';
import { ImageSet, TaskImage } from './load';
import { Restorer } from './restorer';
import type { HostXsave } from './threads';
import type { Warning } from './creds';
import type { RestoredContainer } from './container';
import type { VethHostConfig } from './net';
import type { NsKind } from '../checkpoint/proc/misc';

export interface RestoreOptions {
  dir: string;
  /** Return once the tree runs instead of waiting for the root task to exit. */
  detach?: boolean;
  /** Write the root task's PID (as seen from this host's PID namespace) here. */
  pidfile?: string;
  /** Restore into a fresh PID namespace (godwit-restorer becomes its PID 1). */
  newPidns?: boolean;
  /**
   * Stop before the last step: the restored tree is complete but held stopped by the restorer (every thread in a
   * ptrace stop) until resumeHeld() lets it run, or abortRestore() kills it (migrate waits for the source's commit).
   */
  hold?: boolean;
  /**
   * Awaited before the first page is written: memory being freed for the restore's pages (a migration target's
   * reserve, migrate/reserve.ts), freed while the steps before run.
   */
  memoryReady?: Promise<unknown>;
  /** Container images, diff rootfs: the base rootfs on this host (default: the path recorded at dump). */
  rootfsBase?: string;
  /** Container images, shared rootfs: where the rootfs is on this host (default: the path recorded at dump). */
  rootfsPath?: string;
  /**
   * Ctrl-C: once aborted before the tree runs, the restore stops where it is (the half-restored tree is killed, a
   * container's namespaces removed) and fails with code EABORTED. Not looked at once the tree runs.
   */
  signal?: AbortSignal;
  /** Called once the tree runs (before waiting for its root task): a CLI stops catching Ctrl-C there. */
  onRunning?: () => void;
  /** Container images: the host end of each veth, as this host's network wants it (bridge or peer address). */
  veth?: VethHostConfig;
  /** Container images: recreate the dumped cgroup path under this cgroup directory (e.g. one per tenant). */
  cgroupRoot?: string;
  /** Container images dumped with external namespaces: the namespace to join per kind (--join-ns KIND:PATH). */
  joinNs?: Partial<Record<NsKind, string>>;
}

export interface RestoreContext {
  opts: RestoreOptions;
  set?: ImageSet;
  restorer?: Restorer;
  /** The restorer's pid as restored tasks see it (1 in a new PID namespace): pidfd_open target. */
  restorerPid: number;
  /** Address of a `syscall; int3` pair inside the stubs before they get a trampoline. */
  trampolines: Map<number, bigint>;
  /** Restorer-side fds of the file objects (files.img id -> fd), pulled into tasks with pidfd_getfd. */
  objects: Map<number, number>;
  /** Restorer fds to close once every task has its copies. */
  restorerFds: number[];
  /** Deleted files made again from their ghost image: the dumped "s_dev:ino" -> the restorer's fd of it. */
  ghostFds: Map<string, number>;
  /** Link remaps files were opened through (restore/files.ts), removed before the tree resumes. */
  linkRemaps: Set<string>;
  /** Size of the xsave area of this host, read from a stub. */
  xstateSize: number;
  hostXsave?: HostXsave;
  warnings: Warning[];
  /** Host PIDs of the restored tasks (image pid -> pid in this host's PID namespace). */
  hostPids: Map<number, number>;
  resumed: boolean;
  /** A container restore: what was prepared for it (namespaces, mounts, cgroups, rootfs). */
  container?: RestoredContainer;
  /** A container's tasks cannot see the restorer: they pull fds through this pidfd of it, kept at this number. */
  restorerPidfd?: number;
  /** Where the tree's files are seen from here (a container's new root), for preflight. */
  fileRoot?: string;
}

/**
 * PATH as the restored tree sees it, for Node's own looks at it (exists, stat) before the restorer acts on it:
 * through a container's new root while one is restored (its tmpfs, /dev/pts and the like are not the host's).
 */
export function treePath(ctx: RestoreContext, p: string): string {
  return ctx.fileRoot ? path.join(ctx.fileRoot, p) : p;
}

export function newContext(opts: RestoreOptions): RestoreContext {
  return {
    opts,
    restorerPid: 0,
    trampolines: new Map(),
    objects: new Map(),
    restorerFds: [],
    ghostFds: new Map(),
    linkRemaps: new Set(),
    xstateSize: 0,
    warnings: [],
    hostPids: new Map(),
    resumed: false,
  };
}

export function mainCore(t: TaskImage) {
  return t.cores.get(t.pid)!;
}
