/**
 * zdtm's "ns flavor" for every scenario workload: each one runs as the init of fresh pid, mnt, net, ipc and uts
 * namespaces with its own /proc (scenarios/container/nsflavor.ts), is dumped by `godwit dump --pid` (the
 * container path: namespaces, mounts, cgroup), killed, restored (its pid namespace again, nested in the
 * restorer's), and verifies its own state. The restorer works from the host while the tree's /proc and pids
 * are the container's: every object it opens "as the host sees it" is exercised here.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { restore, RestoreResult } from '../restore';
import { NsWorkload, startNsWorkload } from '../scenarios/container/nsflavor';
import { WorkloadName } from '../scenarios/workload';
import { WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-nsf-img-');
let live: NsWorkload[] = [];
let restored: RestoreResult[] = [];

afterEach(async () => {
  let first: unknown;
  for (const r of restored.splice(0)) {
    for (const pid of r.pids.values())
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    if (r.restorer) {
      try {
        process.kill(r.restorer.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await r.restorer.waitExit().catch((e) => (first ??= e));
    }
  }
  for (const n of live.splice(0)) await n.destroy().catch((e) => (first ??= e));
  await fx.cleanup().catch((e) => (first ??= e));
  if (first) throw first;
});

async function cycle(name: WorkloadName, args: string[] = []): Promise<{ n: NsWorkload; r: RestoreResult }> {
  const n = await startNsWorkload(name, { args });
  live.push(n);
  const w = n.workload;
  const dir = fx.imageDir();
  await dump({ pid: w.pid, dir, compress: 'zstd' });
  expect(w.alivePids()).toEqual([]);
  const r = await restore({ dir, detach: true }, { silent: true });
  restored.push(r);
  n.restored(r.pids);
  return { n, r };
}

/** PID's pid in its innermost pid namespace (NSpid's last field). */
function nsPidOf(pid: number): number {
  const m = /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number((m?.[1] ?? '').trim().split(/\s+/).pop());
}

const WORKLOADS: [WorkloadName, string[]][] = [
  ['mem-counter', ['--mib', '16']],
  ['threads', []],
  ['pipe-tree', []],
  ['signals', []],
  ['timers', []],
  ['files', []],
  ['unix-sockets', []],
  ['eventfd-epoll', []],
  ['shared-mem', []],
  ['inet-tcp', []],
  ['inet-udp', []],
  ['shmem-more', []],
  ['shmem-more', ['--sysv', '1']],
  ['seccomp', []],
  ['pty', []],
  ['file-locks', []],
  ['proc-state', []],
  ['maps', []],
];

describe('ns flavor: init of its own pid+mnt+net+ipc+uts namespaces, dumped, killed, restored, verifies itself', () => {
  test.each(WORKLOADS)('%s %j', async (name, args) => {
    const { n } = await cycle(name, args);
    // The restored root is again pid 1 of a pid namespace of its own, and the rest keep their pids there.
    const root = n.workload.pid;
    expect(fs.readlinkSync(`/proc/${root}/ns/pid`)).not.toBe(fs.readlinkSync('/proc/self/ns/pid'));
    expect(n.workload.pids.map(nsPidOf)).toEqual(n.nsPids);
    expect(n.nsPids[0]).toBe(1);
    expect(await n.workload.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test("an inotify watch on the container's tmpfs is refused before anything is frozen, the workload runs on", async () => {
    const n = await startNsWorkload('eventfd-epoll', { args: ['--watch-dev', '1'] });
    live.push(n);
    await expect(dump({ pid: n.workload.pid, dir: fx.imageDir() })).rejects.toThrow(/inotify watch 1 on inode \d+ of device 0:\d+, not the tree's root filesystem/);
    expect(n.workload.alivePids()).toEqual(n.workload.pids);
    expect(await n.workload.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});
