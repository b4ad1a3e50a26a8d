/**
 * Recreating a dumped cgroup (cgroup.img, see checkpoint/cgroups.ts) on this host: the directory chain in each
 * hierarchy this host has, the limits written back in their saved order, the restored tasks moved in. Every
 * directory created here is removed again on failure or by `remove()`; existing ones are never touched
 * beyond the leaf's limits.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CgroupHierarchy, cgroupHierarchies } from '../checkpoint/cgroups';
import { GodwitError } from '../util/errors';

type Msg = Record<string, unknown>;

export interface RestoredCgroups {
  /** The leaf directory per hierarchy (key: controllers joined by ','). */
  leaves: Map<string, string>;
  /** Directories this restore created, parents first. */
  created: string[];
  /** Hierarchies in the image this host does not have (e.g. v1 memory on a pure v2 host). */
  skipped: string[];
  /** Moves a process into every leaf. */
  addProcess(pid: number): void;
  /** Removes the directories created here, deepest first (after the processes left them). */
  remove(): void;
}

export interface RestoreCgroupOptions {
  /** Put the tree elsewhere: a prefix of the dumped path replaced (e.g. a new leaf for a copy next to the original). */
  relocate?: { from: string; to: string };
  hierarchies?: CgroupHierarchy[];
}

function relocated(p: string, r?: RestoreCgroupOptions['relocate']): string {
  if (!r) return p;
  if (p === r.from || p.startsWith(r.from.endsWith('/') ? r.from : r.from + '/')) return r.to + p.slice(r.from.length);
  return p;
}

/** Recreates the cg set `setId` (default: the first) of a decoded cgroup_entry. */
export function restoreCgroups(entry: Msg, opts: RestoreCgroupOptions = {}, setId?: number): RestoredCgroups {
  const hs = opts.hierarchies ?? cgroupHierarchies();
  const sets = (entry.sets ?? []) as Msg[];
  const set = setId === undefined ? sets[0] : sets.find((s) => s.id === setId);
  if (!set) throw new GodwitError(`cgroup.img has no cg set ${setId ?? '(none at all)'}`);
  const controllers = (entry.controllers ?? []) as Msg[];
  const created: string[] = [];
  const leaves = new Map<string, string>();
  const skipped: string[] = [];
  const remove = (): void => {
    for (const d of [...created].reverse()) {
      try {
        fs.rmdirSync(d);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new GodwitError(`cannot remove cgroup ${d}: ${(e as Error).message}`, { cause: e });
      }
    }
    created.length = 0;
  };
  try {
    for (const m of (set.ctls ?? []) as Msg[]) {
      const name = String(m.name);
      const h = hs.find((x) => x.controllers.join(',') === name);
      if (!h) {
        skipped.push(name);
        continue;
      }
      const ctl = controllers.find((c) => ((c.cnames ?? []) as string[]).join(',') === name);
      const dumped = String(m.path);
      const target = relocated(dumped, opts.relocate);
      const parts = target.split('/').filter(Boolean);
      // The leaf's properties, found by walking the dumped chain (the image names one component per level).
      let props: Msg[] = [];
      let perms: Msg | undefined;
      let dirs = (ctl?.dirs ?? []) as Msg[];
      for (const comp of dumped.split('/').filter(Boolean)) {
        const d = dirs.find((x) => x.dir_name === comp);
        if (!d) break;
        props = (d.properties ?? []) as Msg[];
        perms = d.dir_perms as Msg | undefined;
        dirs = (d.children ?? []) as Msg[];
      }
      let dir = h.mount;
      for (const comp of parts) {
        const parent = dir;
        dir = path.join(dir, comp);
        if (fs.existsSync(dir)) continue;
        fs.mkdirSync(dir);
        created.push(dir);
        // v1 cpuset: a new cgroup starts with no cpus/mems and no task may join it: inherit the parent's.
        if (h.controllers.includes('cpuset'))
          for (const f of ['cpuset.cpus', 'cpuset.mems']) fs.writeFileSync(path.join(dir, f), fs.readFileSync(path.join(parent, f)));
      }
      if (perms && created.includes(dir)) {
        fs.chmodSync(dir, Number(perms.mode) & 0o7777);
        fs.chownSync(dir, Number(perms.uid), Number(perms.gid));
      }
      for (const p of props) {
        const file = path.join(dir, String(p.name));
        try {
          fs.writeFileSync(file, String(p.value));
        } catch (e) {
          throw new GodwitError(`cannot set ${p.name} = ${String(p.value)} in ${dir}: ${(e as Error).message}`, { cause: e });
        }
      }
      leaves.set(name, dir);
    }
  } catch (e) {
    remove();
    throw e;
  }
  return {
    leaves,
    created,
    skipped,
    remove,
    addProcess(pid: number) {
      for (const [name, dir] of leaves) {
        try {
          fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
        } catch (e) {
          throw new GodwitError(`cannot move pid ${pid} into cgroup ${name}:${dir}: ${(e as Error).message}`, { cause: e });
        }
      }
    },
  };
}
