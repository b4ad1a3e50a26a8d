/**
 * Trees in namespaces made by util-linux's unshare(1), as a user would start them, without a root filesystem of
 * their own: dumped with `dump --pid` (the container path: their namespaces differ from godwit's), killed or left
 * running, restored, and the workload checks itself.
 * - `unshare -m`, `unshare -Urmpf --mount-proc`: the mount namespace is a copy of the host's and its root is the
 *   host's root: container.json says so (rootfs mode host: nothing walked or hashed, so the dump is quick), the
 *   host's mounts stay the host's, a proc of its own comes back.
 * - `unshare -Urn` (a user namespace, but the host's pid namespace): the tasks get their pids first, then join the
 *   new user namespace; a multi-threaded tree there is refused before the freeze.
 * - The rootfs walk (shared/diff modes) hashes files in bounded chunks (a file over 2 GiB hashes, which one read
 *   could not) and names a file that changes under it.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { NamespaceIds } from '../checkpoint/namespaces';
import { preflight } from '../checkpoint/preflight';
import { walkTree } from '../checkpoint/rootfs';
import { scanTree } from '../checkpoint/tree';
import { restore, RestoreResult } from '../restore';
import { startWorkload, Workload, WorkloadName } from '../scenarios/workload';

const ns = (pid: number | 'self', kind: string): string => fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
const containerJson = (dir: string): { ns: string[]; rootfs: { mode: string; digest: string } } =>
  JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8'));

/** NSpid of a process: its pid in each pid namespace, outermost first. */
function nspid(pid: number): number[] {
  return /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!.trim().split(/\s+/).map(Number);
}

/** A process's mounts as mount point and filesystem type, in order. */
function mountList(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8').trim().split('\n').map((l) => {
    const f = l.split(' ');
    return `${f[4]} ${f[f.indexOf('-') + 1]}`;
  });
}

/** The host pid of the workload that `unshare --fork` started: the spawned unshare's child. */
function forkedChild(w: Workload): number {
  for (const p of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number)) {
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(w.dir) && nspid(p).at(-1) === 1) return p;
    } catch {
      /* gone */
    }
  }
  throw new Error(`no pid 1 of a pid namespace runs workload ${w.dir}`);
}

describe('trees in namespaces made by unshare(1), without a root filesystem of their own', () => {
  jest.setTimeout(120_000);
  const live: Workload[] = [];
  const restored: RestoreResult[] = [];
  const dirs: string[] = [];
  const imageDir = (): string => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-real-unshare-'));
    dirs.push(d);
    return path.join(d, 'img');
  };
  const start = async (name: WorkloadName, prefix: string[], args: string[] = []): Promise<Workload> => {
    const w = await startWorkload(name, { prefix, args });
    live.push(w);
    return w;
  };
  const restoreHere = async (dir: string): Promise<RestoreResult> => {
    const r = await restore({ dir, newPidns: false, detach: true }, { silent: true });
    restored.push(r);
    return r;
  };
  afterEach(async () => {
    for (const r of restored.splice(0)) {
      for (const p of r.pids.values()) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      if (r.restorer) {
        try {
          process.kill(r.restorer.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await r.restorer.waitExit();
      }
    }
    for (const w of live.splice(0)) await w.cleanup();
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  test.each([
    ['killed', false],
    ['left running', true],
  ])('unshare -m (its root is the host root): no rootfs walked; restored with the host root and mounts (%s)', async (_what, leaveRunning) => {
    const w = await start('mem-counter', ['unshare', '-m']);
    expect(ns(w.pid, 'mnt')).not.toBe(ns('self', 'mnt'));
    const mountsBefore = mountList(w.pid);
    const dir = imageDir();
    const t0 = Date.now();
    await dump({ pid: w.pid, dir, compress: 'none', ...(leaveRunning ? { leaveRunning } : {}) });
    // Walking and hashing the whole host filesystem took minutes (and failed on any file going away meanwhile).
    expect(Date.now() - t0).toBeLessThan(20_000);
    const rec = containerJson(dir);
    expect(rec.ns).toEqual(['mnt']);
    expect(rec.rootfs).toEqual({ mode: 'host', path: '/', digest: '' });
    if (leaveRunning) {
      expect(w.alivePids()).toEqual([w.pid]);
      await w.kill();
    } else expect(w.alivePids()).toEqual([]);
    const r = await restoreHere(dir);
    const pid = r.pids.get(w.pid)!;
    w.setPids([pid]);
    // Its own mount namespace again, rooted at the host's root, seeing the host's mounts.
    expect(ns(pid, 'mnt')).not.toBe(ns('self', 'mnt'));
    expect(fs.statSync(`/proc/${pid}/root/`).ino).toBe(fs.statSync('/').ino);
    // The host's mounts as they are now (another test may add one meanwhile), with every one the tree had.
    expect(mountList(pid)).toEqual(expect.arrayContaining(mountsBefore));
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('unshare -Urmpf --mount-proc: pid 1 of its own pid namespace with its own proc, root in its user namespace, the host root', async () => {
    // unshare's own stderr away from the workload's log: it reports its child's SIGKILL there, which would
    // change the log file the restore checks.
    const w = await start('mem-counter', ['sh', '-c', 'exec 2>/dev/null; exec "$@"', 'sh', 'unshare', '-Urmpf', '--mount-proc']);
    const mountsBefore = mountList(forkedChild(w));
    const pid = forkedChild(w);
    w.setPids([pid]);
    const dir = imageDir();
    await dump({ pid, dir, compress: 'none' });
    expect(containerJson(dir).rootfs.mode).toBe('host');
    expect(containerJson(dir).ns.sort()).toEqual(['mnt', 'pid', 'user']);
    const r = await restoreHere(dir);
    const host = r.pids.get(1)!;
    w.setPids([host]);
    expect(nspid(host).at(-1)).toBe(1);
    expect(ns(host, 'user')).not.toBe(ns('self', 'user'));
    // Its own proc: pid 1 there is the workload itself.
    expect(fs.readFileSync(`/proc/${host}/root/proc/1/cmdline`, 'utf8')).toContain(w.dir);
    expect(mountList(host)).toEqual(expect.arrayContaining(mountsBefore));
    expect(mountList(host).at(-1)).toBe('/proc proc'); // its own proc, on top
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('unshare -Urn (a user namespace in the host pid namespace): same pids, in a new user namespace owning its net namespace', async () => {
    const w = await start('mem-counter', ['unshare', '-Urn']);
    const dir = imageDir();
    await dump({ pid: w.pid, dir, compress: 'none' });
    expect(containerJson(dir).ns.sort()).toEqual(['net', 'user']);
    // Before: create the process tree: clone3 failed: EPERM (the restorer had joined the user namespace first).
    const r = await restoreHere(dir);
    const pid = r.pids.get(w.pid)!;
    expect(pid).toBe(w.pid);
    expect(ns(pid, 'user')).not.toBe(ns('self', 'user'));
    expect(ns(pid, 'net')).not.toBe(ns('self', 'net'));
    expect(fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/)).toEqual(['0', '0', '1']);
    expect(/^CapEff:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]).toMatch(/^0*1ff+$/);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('unshare -Urn with a multi-threaded tree: refused before the freeze, saying what works instead', async () => {
    const w = await start('threads', ['unshare', '-Urn']);
    const dir = imageDir();
    await expect(dump({ pid: w.pid, dir, compress: 'none' })).rejects.toThrow(/nothing was frozen.*multi-threaded.*unshare -Urpf/s);
    expect(fs.existsSync(dir)).toBe(false);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('unshare -m --fork: the child of a session leader outside the tree stays in the restorer\'s group and session', async () => {
    // setsid'ed unshare leads the session and the group its child is in; the child is what is dumped.
    const w = await start('mem-counter', ['sh', '-c', 'exec 2>/dev/null; exec "$@"', 'sh', 'unshare', '-m', '--fork']);
    const stat = fs.readFileSync(`/proc/${w.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    expect(Number(stat[2])).not.toBe(w.pid); // its group is led from outside the tree
    const dir = imageDir();
    await dump({ pid: w.pid, dir, compress: 'none' });
    // Before: join process group N: setpgid failed: EPERM.
    const r = await restoreHere(dir);
    expect(r.pids.get(w.pid)).toBe(w.pid);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('dumping `unshare -pf` itself (a pending pid namespace) is refused, naming the child to dump instead', async () => {
    const u = spawn('unshare', ['-pf', 'sleep', '1000'], { stdio: 'ignore', detached: true });
    try {
      let child = 0;
      for (let i = 0; i < 200 && !child; i++) {
        await new Promise((r) => setTimeout(r, 10));
        child = Number(fs.readFileSync(`/proc/${u.pid}/task/${u.pid}/children`, 'utf8').trim().split(' ')[0] || 0);
      }
      const dir = imageDir();
      await expect(dump({ pid: u.pid!, dir, compress: 'none' })).rejects.toThrow(new RegExp(`nothing was frozen[^]*its child pid ${child} is that namespace's first process.*dump --pid ${child} instead`));
      expect(fs.existsSync(dir)).toBe(false);
    } finally {
      process.kill(-u.pid!, 'SIGKILL');
      await new Promise((r) => (u.exitCode !== null || u.signalCode !== null ? r(undefined) : u.once('exit', r)));
    }
  });

  test('preflight: a task that exited after the scan (a shell\'s short-lived child) is not a problem of the tree', async () => {
    // In a pid namespace as with unshare -pf; the child's exit leaves a zombie (its parent does not reap), whose
    // namespaces and mappings are gone while its /proc entry is not.
    const sh = spawn('unshare', ['-pf', 'sh', '-c', 'sleep 1000 & exec sleep 2000'], { stdio: 'ignore', detached: true });
    try {
      const kids = async (pid: number): Promise<number[]> => {
        for (let i = 0; i < 200; i++) {
          const k = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
          if (k) return k.split(' ').map(Number);
          await new Promise((r) => setTimeout(r, 10));
        }
        throw new Error(`pid ${pid} has no child`);
      };
      const init = (await kids(sh.pid!))[0]!;
      const first = (await kids(init))[0]!;
      const tree = scanTree(init);
      expect(tree.processes.map((p) => p.pid)).toEqual([init, first]);
      process.kill(first, 'SIGKILL');
      while (!/^State:\s+Z/m.test(fs.readFileSync(`/proc/${first}/status`, 'utf8'))) await new Promise((r) => setTimeout(r, 10));
      // Before: "pid N process: readlink /proc/N/ns/net: readlink failed: ENOENT" refused the dump.
      expect(preflight(tree, new NamespaceIds(init)).problems).toEqual([]);
    } finally {
      process.kill(-sh.pid!, 'SIGKILL');
      await new Promise((r) => (sh.exitCode !== null || sh.signalCode !== null ? r(undefined) : sh.once('exit', r)));
    }
  });

  describe('rootfs walk', () => {
    let root: string;
    beforeEach(() => {
      root = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-real-unshare-walk-'));
    });
    afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

    test('a file over 2 GiB is hashed in chunks (one read of it cannot be made)', () => {
      const big = path.join(root, 'big');
      const fd = fs.openSync(big, 'w');
      fs.ftruncateSync(fd, 2 ** 31 + 4096); // sparse: no disk used; past the most one read may return (2 GiB)
      fs.closeSync(fd);
      const t = walkTree(root);
      expect(t.get('big')).toMatchObject({ type: 'f', size: 2 ** 31 + 4096 });
      expect(t.get('big')!.hash).toMatch(/^[0-9a-f]{64}$/);
    });

    test('a file changed by a process outside the container while it is read is named', async () => {
      const busy = path.join(root, 'sub', 'growing.log');
      fs.mkdirSync(path.dirname(busy));
      fs.writeFileSync(busy, Buffer.alloc(64 << 20, 1));
      // A real writer appending all the time (the container's rootfs is not frozen for it).
      const writer = spawn('sh', ['-c', `while :; do echo x >> ${busy}; done`], { stdio: 'ignore' });
      try {
        await new Promise((r) => setTimeout(r, 100));
        expect(() => walkTree(root)).toThrow(/sub\/growing\.log changed .*a process outside the container/);
      } finally {
        writer.kill('SIGKILL');
        await new Promise((r) => writer.once('exit', r));
      }
    });
  });
});
