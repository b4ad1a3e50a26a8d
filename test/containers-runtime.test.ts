/**
 * The container scenario under real runc: the bundle runs and is cleaned up; lookup by id and by cgroup gives
 * the right pid and cgroups; the limits read back are config.json's; cgroup.img carries them; the freezer
 * stops and resumes it (and thaws on a failure in between). Real runc, real cgroups, real namespaces.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { CGROUP_PARENT, RunningContainer, cgroupRoots, runContainer } from '../scenarios/container/bundle';
import { cgroupImage, cgroupMembership, freezeCgroup, freezerState, readCgroupLimits, withFrozenCgroup } from '../checkpoint/cgroups';
import { resolveCgroup, resolveContainer } from '../checkpoint/container';
import { namespaceOwnership } from '../checkpoint/ns-content';
import { decodeImage, encodeImage } from '../images';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Whether the container's counter moves past its value now within MS: waits for the move (a loaded machine may not
 * schedule the container at once), so a short MS is the window in which a frozen one must not move.
 */
async function countAdvances(c: RunningContainer, ms = 10_000): Promise<boolean> {
  const a = c.count();
  const deadline = Date.now() + ms;
  while (c.count() <= a && Date.now() < deadline) await sleep(20);
  return c.count() > a;
}

describe('container scenario under runc', () => {
  let ctr: RunningContainer | undefined;
  afterEach(async () => {
    await ctr?.destroy();
    ctr = undefined;
  });

  it('runs the bundle with its own namespaces and leaves nothing behind', async () => {
    ctr = await runContainer({ hostname: 'gw-ctr-a' });
    const { id, pid, bundle } = ctr;
    expect(await countAdvances(ctr)).toBe(true);
    expect(ctr.failure()).toBeUndefined();
    const own = namespaceOwnership(pid);
    for (const k of ['pid', 'mnt', 'uts', 'ipc', 'net'] as const) expect(own[k].own).toBe(true);
    for (const k of ['user', 'time'] as const) expect(own[k].own).toBe(false);
    expect(execFileSync('runc', ['list', '-q']).toString().split('\n')).toContain(id);
    await ctr.destroy();
    ctr = undefined;
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    expect(fs.existsSync(`/run/runc/${id}`)).toBe(false);
    expect(fs.existsSync(bundle.dir)).toBe(false);
    for (const root of cgroupRoots()) expect(fs.existsSync(path.join(root, bundle.cgroupsPath))).toBe(false);
  });

  it('is found by id and by cgroup, with config.json limits', async () => {
    ctr = await runContainer({ memoryLimit: 48 << 20, pidsLimit: 17, cpuQuota: 30000, cpuPeriod: 100000, cpuShares: 300 });
    const t = resolveContainer(ctr.id);
    expect(t.runtime).toBe('runc');
    expect(t.pid).toBe(ctr.pid);
    expect(t.pids).toEqual([ctr.pid]);
    expect(t.bundle).toBe(ctr.bundle.dir);
    expect(t.rootfs).toBe(ctr.bundle.rootfs);
    for (const m of t.cgroups) expect(m.path).toBe(ctr.bundle.cgroupsPath);
    expect(t.cgroups.some((m) => m.version === 1 && m.controllers.includes('memory'))).toBe(true);
    const limits = readCgroupLimits(t.cgroups);
    expect(limits).toMatchObject({ memoryMax: BigInt(48 << 20), pidsMax: 17, cpuQuota: 30000, cpuPeriod: 100000, cpuShares: 300, cpus: '0' });

    const byPath = resolveCgroup(ctr.bundle.cgroupsPath);
    expect(byPath.pid).toBe(ctr.pid);
    const memDir = t.cgroups.find((m) => m.controllers.includes('memory'))!.dir;
    expect(resolveCgroup(memDir).pids).toEqual([ctr.pid]);

    // cgroup.img: one set naming the path everywhere; the leaf's limit files; encodes and decodes.
    const entry = cgroupImage(t.cgroups);
    const back = decodeImage(encodeImage('CGROUP', [entry]), 'cgroup.img').entries[0].msg as Record<string, any>;
    expect(back.sets[0].ctls.map((c: any) => c.path)).toEqual(t.cgroups.map(() => ctr!.bundle.cgroupsPath));
    const mem = back.controllers.find((c: any) => c.cnames.includes('memory'));
    const leaf = mem.dirs[0].children[0];
    expect(mem.dirs[0].dir_name).toBe(CGROUP_PARENT);
    expect(leaf.dir_name).toBe(ctr.id);
    expect(leaf.properties).toContainEqual({ name: 'memory.limit_in_bytes', value: String(48 << 20) });
  });

  it('refuses unknown ids, bad ids and empty or missing cgroups with clear errors', async () => {
    expect(() => resolveContainer('no-such-ctr-gw')).toThrow(/no container "no-such-ctr-gw": not found in \/run\/runc\/no-such-ctr-gw\/state.json/);
    expect(() => resolveContainer('../etc')).toThrow(/not a container id/);
    expect(() => resolveCgroup('/no/such/cgroup-gw')).toThrow(/no such cgroup/);
  });

  it.each([1, 2] as const)('freezes with the v%d freezer and thaws, also when a step in between fails', async (v) => {
    ctr = await runContainer();
    const members = cgroupMembership(ctr.pid);
    const f = await freezeCgroup(members, { prefer: v });
    try {
      expect(f.version).toBe(v);
      const st = freezerState(members);
      if (v === 1) expect(st.v1).toBe('FROZEN');
      else expect(st.v2).toBe(true);
      expect(await countAdvances(ctr, 150)).toBe(false);
    } finally {
      f.thaw();
    }
    expect(await countAdvances(ctr)).toBe(true);

    await expect(
      withFrozenCgroup(members, async () => {
        throw new Error('a dump step failed');
      }, { prefer: v }),
    ).rejects.toThrow('a dump step failed');
    const st = freezerState(members);
    if (v === 1) expect(st.v1).toBe('THAWED');
    else expect(st.v2).toBe(false);
    expect(await countAdvances(ctr)).toBe(true);
    expect(ctr.failure()).toBeUndefined();
    console.log(`v${v} freeze of the container scenario: ${f.ms.toFixed(2)} ms`);
  });

  it('cleans up a container whose start fails', async () => {
    // Its own temp root and id: containers of other suites running on this machine come and go meanwhile.
    const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-ctr-fail-'));
    const id = `gwctr-${process.pid}-fails`;
    try {
      await expect(runContainer({ id, tmpRoot, args: ['/bin/no-such-program'] })).rejects.toThrow(/runc run .* exited|not ready|failed/);
      expect(fs.readdirSync(tmpRoot).filter((d) => d.startsWith('godwit-bundle-'))).toEqual([]);
      expect(execFileSync('runc', ['list', '-q']).toString().split('\n')).not.toContain(id);
      for (const root of cgroupRoots()) expect(fs.existsSync(path.join(root, CGROUP_PARENT, id))).toBe(false);
    } finally {
      fs.rmSync(tmpRoot, { recursive: true, force: true });
    }
  });
});
