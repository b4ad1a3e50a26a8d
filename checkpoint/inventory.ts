/** inventory.img and the small tree-wide images CRIU always writes (pstree, seccomp, timens). */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import type { ImageSet } from './imageset';
import type { Tree } from './tree';
import { idsEntry, NamespaceIds } from './namespaces';

const IMG_VERSION = 2;
const LSM_NO_LSM = 0;

export function writeInventory(images: ImageSet, ns: NamespaceIds): string {
  const runId = randomUUID();
  images.add('INVENTORY', undefined, {
    img_version: IMG_VERSION,
    fdinfo_per_id: true,
    root_ids: idsEntry(1, ns.root),
    ns_per_id: true,
    root_cg_set: 1,
    lsmtype: LSM_NO_LSM,
    network_lock_method: 0,
    plugins_entry: {},
    dump_criu_run_id: runId,
  });
  return runId;
}

export function writePstree(images: ImageSet, tree: Tree): void {
  for (const p of tree.processes)
    images.add('PSTREE', undefined, {
      pid: p.pid,
      ppid: p.pid === tree.root ? 0 : p.ppid,
      pgid: p.pgid,
      sid: p.sid,
      threads: p.threads,
    });
}

/** The time namespace offsets: CLOCK_MONOTONIC and CLOCK_BOOTTIME now (restore re-bases on them). */
export function writeTimens(images: ImageSet): void {
  const up = fs.readFileSync('/proc/uptime', 'latin1').split(' ')[0] ?? '0';
  const mono = process.hrtime.bigint();
  const ts = (ns: bigint) => ({ tv_sec: ns / 1000000000n, tv_nsec: ns % 1000000000n });
  const boot = BigInt(Math.round(Number(up) * 1e9));
  images.add('TIMENS', 0, { monotonic: ts(mono), boottime: ts(boot > mono ? boot : mono) });
  images.add('SECCOMP', undefined, {});
}
