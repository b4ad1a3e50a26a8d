/**
 * Checkpoint and restore of a whole container under real runc: dump --container (cgroup freezer + ptrace,
 * namespaces, mounts with tmpfs contents, SysV shm, rootfs digest, cgroup limits), restore here into fresh
 * namespaces with the tree in its own pid namespace (root pid 1 again), and the workload goes on counting and
 * checking its shm pattern. A restore that fails half-way leaves no cgroup, holder process, or staging dir.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { dump } from '../checkpoint/dump';
import { readCgroupLimits, cgroupMembership } from '../checkpoint/cgroups';
import { cgroupRoots, RunningContainer, runContainer } from '../scenarios/container/bundle';
import { restore, RestoreResult } from '../restore';
import { endRestoredRoot } from './helpers/restored';
import { runUnshareContainer, UnshareContainer } from '../scenarios/container/unshare';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function readOr(f: string): string | undefined {
  try {
    return fs.readFileSync(f, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function caps(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter((l) => /^Cap(Inh|Prm|Eff|Bnd|Amb):/.test(l));
}

function nsIno(pid: number, kind: string): string {
  return fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
}

function stagingDirs(): string[] {
  return fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('godwit-root-') || n.startsWith('godwit-rootfs-'));
}

function ourChildren(): number[] {
  return fs
    .readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8')
    .split(' ')
    .filter(Boolean)
    .map(Number)
    .filter((p) => readOr(`/proc/${p}/stat`)?.split(' ')[2] !== 'Z');
}

describe('container checkpoint/restore (runc)', () => {
  let ctr: RunningContainer | undefined;
  let uc: UnshareContainer | undefined;
  let restored: RestoreResult | undefined;
  let dir: string | undefined;
  let base: string | undefined;
  afterEach(async () => {
    await endRestoredRoot(restored);
    if (restored?.rootfsLayer) fs.rmSync(restored.rootfsLayer, { recursive: true, force: true });
    restored = undefined;
    if (base) fs.rmSync(base, { recursive: true, force: true });
    base = undefined;
    await ctr?.destroy(); // runc delete -f (also of the restored container runc lists), cgroups, bundle
    ctr = undefined;
    await uc?.destroy();
    uc = undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('dumps a runc container and restores it here with fresh namespaces, equal limits, and runc listing it', async () => {
    ctr = await runContainer({ hostname: 'gw-cr-a', memoryLimit: 40 << 20, pidsLimit: 21 });
    await sleep(100);
    const oldPid = ctr.pid;
    const oldNs = Object.fromEntries(['mnt', 'uts', 'ipc', 'net', 'pid'].map((k) => [k, nsIno(oldPid, k)]));
    const limits = readCgroupLimits(cgroupMembership(oldPid));
    const oldCaps = caps(oldPid);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    const sum = await dump({ pid: 0, container: ctr.id, dir });
    expect(sum.pids).toEqual([oldPid]);
    for (let i = 0; i < 250 && fs.existsSync(`/proc/${oldPid}`); i++) await sleep(20); // runc reaps its killed init
    expect(fs.existsSync(`/proc/${oldPid}`)).toBe(false);
    for (const f of ['container.json', 'cgroup.img', 'pstree.img', 'core-1.img']) expect(fs.existsSync(path.join(dir, f))).toBe(true);
    expect(fs.readdirSync(dir).some((f) => /^tmpfs-dev-\d+\.tar\.gz$/.test(f))).toBe(true);
    expect(fs.readdirSync(dir).some((f) => /^mountpoints-\d+\.img$/.test(f))).toBe(true);

    // runc notices its init is gone and cleans up its own state; restore brings it back.
    for (let i = 0; i < 250 && fs.existsSync(`/run/runc/${ctr.id}`); i++) await sleep(20);
    restored = await restore({ dir, detach: true }, { silent: true });
    const pid = restored.rootPid;
    expect(pid).toBeGreaterThan(0);
    const before = Number(readOr(`/proc/${pid}/root/tmp/count`));
    await sleep(300);
    expect(Number(readOr(`/proc/${pid}/root/tmp/count`))).toBeGreaterThan(before); // the tmpfs file came back, counting goes on
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined(); // the shm pattern it checks every 20 ms is intact
    // Its own pid namespace again, pid 1 in it; namespaces fresh (not the dead originals) and configured.
    const nspid = /^NSpid:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1].trim().split(/\s+/);
    expect(nspid[nspid.length - 1]).toBe('1');
    // (Not compared with the dead originals: the kernel recycles namespace inode numbers.)
    for (const k of Object.keys(oldNs)) expect(nsIno(pid, k)).not.toBe(fs.readlinkSync(`/proc/self/ns/${k}`));
    expect(execFileSync('nsenter', ['-t', String(pid), '-u', 'hostname']).toString().trim()).toBe('gw-cr-a');
    expect(caps(pid)).toEqual(oldCaps); // runc's dropped capabilities stay dropped
    const lo = execFileSync('nsenter', ['-t', String(pid), '-n', 'ip', '-o', 'link', 'show', 'lo']).toString();
    expect(lo).toMatch(/UP/);
    const mounts = fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
    for (const mp of [' / ', ' /proc ', ' /dev ', ' /tmp ', ' /proc/sys ', ' /proc/keys ']) expect(mounts).toContain(mp);
    expect(mounts).toMatch(/ \/proc\/sys ro,/);
    // Same cgroup path and limits.
    const members = cgroupMembership(pid);
    for (const m of members) if (m.path !== '/') expect(m.path).toBe(ctr.bundle.cgroupsPath);
    expect(readCgroupLimits(members)).toEqual(limits);
    expect(restored.runc).toEqual({ listed: true });
    const list = execFileSync('runc', ['list', '-f', 'json']).toString();
    const me = (JSON.parse(list) as { id: string; pid: number; status: string }[]).find((c) => c.id === ctr!.id);
    expect(me).toMatchObject({ pid, status: 'running' });
  });

  it('refuses a changed rootfs and leaves no cgroup, namespace holder or staging directory', async () => {
    ctr = await runContainer({ hostname: 'gw-cr-b' });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await dump({ pid: 0, container: ctr.id, dir });
    for (let i = 0; i < 250 && fs.existsSync(`/run/runc/${ctr.id}`); i++) await sleep(20);
    fs.writeFileSync(path.join(ctr.bundle.rootfs, 'etc/changed'), 'x');
    const staging = stagingDirs();
    const children = ourChildren();
    await expect(restore({ dir, detach: true }, { silent: true })).rejects.toThrow(/rootfs .* differs from the one dumped/);
    expect(stagingDirs()).toEqual(staging);
    expect(ourChildren().filter((p) => !children.includes(p))).toEqual([]); // no holder, no restorer left
    for (const root of cgroupRoots()) expect(fs.existsSync(path.join(root, ctr.bundle.cgroupsPath))).toBe(false);
  });

  it('dumps a container built directly with unshare (--pid) and restores it with its limits', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-cr-u', memoryLimit: 36 << 20, pidsLimit: 19, memMib: 8 });
    const limits = readCgroupLimits(cgroupMembership(uc.pid));
    expect(limits).toMatchObject({ memoryMax: BigInt(36 << 20), pidsMax: 19 });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await dump({ pid: uc.pid, dir });
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8')).ns).toEqual(['pid', 'net', 'ipc', 'uts', 'mnt']);
    restored = await restore({ dir, detach: true }, { silent: true });
    const pid = restored.rootPid;
    const before = Number(readOr(`/proc/${pid}/root/tmp/count`));
    await sleep(300);
    expect(Number(readOr(`/proc/${pid}/root/tmp/count`))).toBeGreaterThan(before);
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined(); // shm and 8 MiB of memory checked as it counts
    expect(execFileSync('nsenter', ['-t', String(pid), '-u', 'hostname']).toString().trim()).toBe('gw-cr-u');
    expect(readCgroupLimits(cgroupMembership(pid))).toEqual(limits);
    expect(restored.runc).toEqual({ listed: false, why: 'not a runc container' });
  });

  it('restores shared anonymous memory and a memfd in a container (the restorer opens them through the host /proc, tasks fetch them through the kept pidfd)', async () => {
    const args = ['/bin/ctr-workload', String(0x60d817), String(256 << 10), '7', '2', 'shared'];
    uc = await runUnshareContainer({ hostname: 'gw-cr-s', args });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await dump({ pid: uc.pid, dir });
    expect(fs.readdirSync(dir).some((f) => /^pagemap-shmem-\d+\.img$/.test(f))).toBe(true);
    restored = await restore({ dir, detach: true }, { silent: true });
    const pid = restored.rootPid;
    // The 2 MiB MAP_SHARED area is back as shared memory (a /dev/zero shmem mapping), not a private one; the
    // memfd is both mapped and open.
    const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n');
    expect(maps.filter((l) => /^\S+ rw-s .*\/dev\/zero/.test(l))).toHaveLength(1);
    expect(maps.filter((l) => /^\S+ rw-s .*\/memfd:ctr-shared/.test(l))).toHaveLength(1);
    expect(fs.readdirSync(`/proc/${pid}/fd`).map((f) => fs.readlinkSync(`/proc/${pid}/fd/${f}`))).toContain('/memfd:ctr-shared (deleted)');
    // 64 of the 512 pages are checked per tick: 9 ticks check every page; each tick also writes the count
    // through the memfd mapping and reads it back through its fd.
    const before = Number(readOr(`/proc/${pid}/root/tmp/count`));
    for (let i = 0; i < 300 && !(Number(readOr(`/proc/${pid}/root/tmp/count`)) >= before + 9); i++) await sleep(100);
    expect(Number(readOr(`/proc/${pid}/root/tmp/count`))).toBeGreaterThanOrEqual(before + 9);
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined(); // the shared memory checked as it counts
  });

  it('carries the rootfs changes against a pristine base (--rootfs diff) and refuses a different base', async () => {
    ctr = await runContainer({ hostname: 'gw-cr-d' });
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-base-'));
    execFileSync('cp', ['-a', ctr.bundle.rootfs + '/.', base]);
    // What the container changed in its rootfs: a new file, a changed one, a deleted one.
    fs.writeFileSync(path.join(ctr.bundle.rootfs, 'etc/motd'), 'restored with its changes\n');
    fs.appendFileSync(path.join(ctr.bundle.rootfs, 'etc/passwd'), 'gw:x:1000:1000::/:/bin/sh\n');
    fs.unlinkSync(path.join(ctr.bundle.rootfs, 'bin/yes'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await dump({ pid: 0, container: ctr.id, dir, rootfsMode: 'diff', rootfsBase: base });
    const rec = JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8'));
    expect(rec.rootfs).toMatchObject({ mode: 'diff', base, deleted: ['bin/yes'], changed: 2 });
    for (let i = 0; i < 250 && fs.existsSync(`/run/runc/${ctr.id}`); i++) await sleep(20);
    // A base that is not the dumped one is refused before anything is made.
    fs.writeFileSync(path.join(base, 'etc/extra'), 'x');
    await expect(restore({ dir, detach: true }, { silent: true })).rejects.toThrow(/rootfs base .* is not the one/);
    fs.unlinkSync(path.join(base, 'etc/extra'));
    restored = await restore({ dir, detach: true }, { silent: true });
    const pid = restored.rootPid;
    expect(restored.rootfsLayer).toBeDefined();
    expect(readOr(`/proc/${pid}/root/etc/motd`)).toBe('restored with its changes');
    expect(readOr(`/proc/${pid}/root/etc/passwd`)).toContain('gw:x:1000');
    expect(fs.existsSync(`/proc/${pid}/root/bin/yes`)).toBe(false);
    expect(fs.existsSync(`/proc/${pid}/root/bin/true`)).toBe(true);
    expect(fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8')).toMatch(/ \/ \S+ .* - overlay /);
    const before = Number(readOr(`/proc/${pid}/root/tmp/count`));
    await sleep(300);
    expect(Number(readOr(`/proc/${pid}/root/tmp/count`))).toBeGreaterThan(before);
    // The base itself is untouched: the changes live in the overlay's upper layer.
    expect(fs.existsSync(path.join(base, 'etc/motd'))).toBe(false);
    expect(fs.existsSync(path.join(base, 'bin/yes'))).toBe(true);
  });
});
