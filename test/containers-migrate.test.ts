/**
 * `godwit migrate` of a container between the two hosts of a test bed: the container built with unshare (with a
 * veth whose host end is on a bridge of host A) and a runc container move over SSH to host B, where they run in
 * fresh namespaces: the workload keeps counting into its tmpfs file and checking its SysV shm and memory, with the
 * same hostname, the same memory and pids limits (under host B's cgroup root), its veth's host end on host B's
 * bridge (pinged from B), runc's list on B showing the runc one. Nothing of the container stays on the source
 * (processes, cgroups, veth, runc state). A migration that fails (a corrupted chunk, the target's restorer killed)
 * leaves the source container running unharmed and nothing on host B.
 */
import { ChildProcess, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cgroupHierarchies, cgroupMembership, CgroupLimits, cgroupTreeDirs, freezerState, readCgroupLimits } from '../checkpoint/cgroups';
import { ipIn } from '../checkpoint/net-ip';
import { createHosts, Host, TestBed } from '../scenarios/hosts';
import { runContainer, RunningContainer } from '../scenarios/container/bundle';
import { removeCgroupTree, runUnshareContainer, UnshareContainer } from '../scenarios/container/unshare';
import { addContainerVeth, NetHost, pingFrom } from '../scenarios/netns';
import { killFirstRestorerOn, nsInode, processesIn, safeRead, threadStates } from './helpers/host-procs';
import { Run, runInHost } from './helpers/run-in-host';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
const RUN_FIXTURE = path.resolve(__dirname, 'fixtures', 'migrate-run.js');
const NODE = process.execPath;
/** Third octet of the container's subnet 198.19.S.0/24 (inside the bed's namespaces only). */
const SUBNET = 61;
const BRIDGE = 'gwcbr';

let bed: TestBed;
let work: string;
let cgroupRoot: string;
const children = new Set<ChildProcess>();
let uc: UnshareContainer | undefined;
let ctr: RunningContainer | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const nspid = (pid: number): number[] => (/^NSpid:\s+(.*)$/m.exec(safeRead(`/proc/${pid}/status`))?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);

/** The cgroup directories under host B's cgroup root, in every hierarchy (deepest first). */
const targetCgroupDirs = (): string[] => cgroupTreeDirs(cgroupRoot);

/** Links in a host's net namespace other than lo, the bed's own link and the bridge. */
async function extraLinks(host: Host): Promise<string[]> {
  const out = (await ipIn(host.nsPath('net'), ['-o', 'link', 'show'])).stdout.toString();
  return out.split('\n').filter(Boolean).map((l) => l.split(':')[1]!.trim().split('@')[0]!)
    .filter((n) => n !== 'lo' && n !== BRIDGE && n !== host.interfaceName);
}

/** What host B holds of a migration: processes, the image directory, cgroups under its root, veths. */
async function targetLeftovers(targetDir: string, ms = 20_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = [...processesIn(bed.target), ...(fs.existsSync(targetDir) ? [`directory ${targetDir}`] : []),
      ...targetCgroupDirs().map((d) => `cgroup ${d}`), ...(await extraLinks(bed.target)).map((l) => `link ${l}`)];
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** Kills what runs in host B (the restored container and its restorer) and removes B's cgroups and runc state. */
async function clearTarget(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const left = processesIn(bed.target);
    if (!left.length) break;
    for (const l of left) {
      try {
        process.kill(Number(l.split(' ')[0]), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await sleep(50);
  }
  for (let i = 0; i < 100 && removeCgroupTree(cgroupRoot); i++) await sleep(50);
  await bed.target.exec('rm', ['-rf', '/run/runc']);
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-ctr-migrate-'));
  bed = await createHosts();
  cgroupRoot = `/godwit-bed-${bed.id}-b`;
  // Both hosts carry the container's subnet on a bridge with the same gateway address (ARCHITECTURE: migrating a
  // container's network), so its address works on either.
  for (const h of [bed.source, bed.target]) {
    await h.execOk('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    await h.execOk('ip', ['addr', 'add', `198.19.${SUBNET}.1/24`, 'dev', BRIDGE]);
    await h.execOk('ip', ['link', 'set', BRIDGE, 'up']);
  }
}, 60_000);

afterEach(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
  if (bed) await clearTarget();
  await uc?.destroy();
  uc = undefined;
  await ctr?.destroy();
  ctr = undefined;
}, 60_000);

afterAll(async () => {
  await bed?.destroy();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const runInSource = (argv: string[], onEvent?: (e: Record<string, unknown>) => void): Promise<Run> =>
  runInHost(bed.source, argv, children, onEvent);

function migrateCli(what: string[], targetDir: string, extra: string[] = [], onEvent?: (e: Record<string, unknown>) => void): Promise<Run> {
  return runInSource([NODE, CLI, 'migrate', ...what, '--to', `root@${bed.target.address}`, '--identity', bed.clientKeyPath,
    '--known-hosts', bed.knownHostsPath, '--godwit-path', `${NODE} ${CLI}`, '--target-dir', targetDir,
    '--cgroup-root', cgroupRoot, '--json', ...extra], onEvent);
}

/** Host A as a NetHost for addContainerVeth: the container's veth gets its host end on A's bridge. */
function sourceNetHost(): NetHost {
  const p = bed.source.nsPath('net');
  return { path: p, bridge: BRIDGE, ip: async (args: string[]) => (await ipIn(p, args)).stdout.toString(),
    destroy: async () => undefined } as unknown as NetHost;
}

/** The restored container's root as this (the machine's) PID namespace sees it: host B's pid `bPid`. */
function restoredRoot(bPid: number): number {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const n = nspid(Number(e));
    // machine, host B, the restorer's namespace, the container's (pid 1 there)
    if (n.length === 4 && n[1] === bPid && n[3] === 1) return Number(e);
  }
  throw new Error(`no process with pid ${bPid} in host B`);
}

const count = (pid: number) => Number(safeRead(`/proc/${pid}/root/tmp/count`).trim() || 0);

/** The workload runs: its count goes up, and it found nothing changed (shm pattern, memory). */
async function expectCounting(pid: number): Promise<void> {
  const before = count(pid);
  let after = before;
  for (let i = 0; i < 100 && after <= before; i++) {
    await sleep(50);
    after = count(pid);
  }
  expect(after).toBeGreaterThan(before);
  expect(safeRead(`/proc/${pid}/root/tmp/result`)).toBe('');
}

/** The source container after a failed migration: alive, not stopped, not frozen, still counting and checking. */
async function expectSourceUnharmed(pid: number): Promise<void> {
  expect(fs.existsSync(`/proc/${pid}`)).toBe(true);
  for (const st of threadStates(pid)) expect(st).not.toMatch(/[Tt]/);
  const f = freezerState(cgroupMembership(pid));
  expect(f.v2 ?? false).toBe(false);
  if (f.v1 !== undefined) expect(f.v1).toBe('THAWED');
  await expectCounting(pid);
}

const doneSummary = (r: Run) => (r.events.find((e) => e.event === 'done') as { summary: Record<string, unknown> } | undefined)?.summary;

describe('godwit migrate of a container between two test hosts', () => {
  test('the unshare-built container with a veth moves to host B: fresh namespaces, equal limits, its network there, nothing left here', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-mig-u', memoryLimit: 36 << 20, pidsLimit: 19, memMib: 8 });
    const src = uc.pid;
    const veth = await addContainerVeth(src, sourceNetHost(), { subnet: SUBNET });
    expect(await pingFrom(bed.source.nsPath('net'), veth.addr4)).toBe(true);
    const srcMembers = cgroupMembership(src);
    const limits = readCgroupLimits(srcMembers);
    expect(limits).toMatchObject({ memoryMax: BigInt(36 << 20), pidsMax: 19 });
    const srcNs = Object.fromEntries(['mnt', 'uts', 'ipc', 'net', 'pid'].map((k) => [k, nsInode(src, k)]));
    const srcCgroups = uc.cgroupDirs.filter((d) => fs.existsSync(d));
    expect(srcCgroups.length).toBeGreaterThan(0);
    const shmKey = `0x${(0x60d817).toString(16).padStart(8, '0')}`;
    const beforeCount = count(src);
    const targetDir = path.join(work, 'img-unshare');

    const r = await migrateCli(['--pid', String(src)], targetDir, ['--bridge', BRIDGE]);
    expect({ code: r.code, error: r.error }).toEqual({ code: 0, error: undefined });
    const sum = doneSummary(r)!;
    expect(Number(sum.downtimeMs)).toBeGreaterThan(0);
    const steps = r.events.filter((e) => e.event === 'step' && e.status === 'done').map((e) => e.step);
    expect(steps).toEqual(expect.arrayContaining(['freeze', 'container: namespaces, mounts, rootfs, cgroups',
      'container: frozen (cgroup freezer) until the target runs it', 'commit: the target runs it, the source tree ends']));

    // Nothing of it on the source: processes, cgroups, the veth's host end (it goes with the namespace).
    expect(fs.existsSync(`/proc/${src}`) && !/^State:\s+Z/m.test(safeRead(`/proc/${src}/status`))).toBe(false);
    for (const d of srcCgroups) expect(fs.existsSync(d)).toBe(false);
    let links = await extraLinks(bed.source);
    for (let i = 0; i < 100 && links.length; i++) {
      await sleep(100);
      links = await extraLinks(bed.source);
    }
    expect(links).toEqual([]);

    // On host B: pid 1 of a fresh pid namespace, counting on from where it was (tmpfs file), shm and memory intact.
    const pid = restoredRoot(Number(sum.targetRootPid));
    expect(count(pid)).toBeGreaterThanOrEqual(beforeCount);
    await expectCounting(pid);
    for (const k of Object.keys(srcNs)) {
      expect(nsInode(pid, k)).not.toBe(srcNs[k]);
      expect(nsInode(pid, k)).not.toBe(nsInode(bed.target.initPid, k));
    }
    expect(execFileSync('nsenter', ['-t', String(pid), '-u', 'hostname']).toString().trim()).toBe('gw-mig-u');
    expect(execFileSync('nsenter', ['-t', String(pid), '-i', 'ipcs', '-m']).toString()).toContain(shmKey);
    expect(safeRead(`/proc/${pid}/mountinfo`)).toMatch(/ \/tmp .* - tmpfs /);
    // Same limits, in the same cgroup path under host B's cgroup root.
    const members = cgroupMembership(pid);
    const relocated = (ms: ReturnType<typeof cgroupMembership>) => ms.map((m) => `${m.controllers.join(',')}:${m.path}`).sort();
    expect(relocated(members)).toEqual(relocated(srcMembers.map((m) => ({ ...m, path: cgroupRoot + (m.path === '/' ? '' : m.path) }))));
    const got: CgroupLimits = readCgroupLimits(members);
    expect(got).toEqual(limits);
    // Its network: eth0 with its address, the host end on B's bridge, reachable from B.
    const addrs = (await ipIn(`/proc/${pid}/ns/net`, ['-o', 'addr', 'show', 'dev', 'eth0'])).stdout.toString();
    expect(addrs).toContain(`${veth.addr4}/24`);
    const hostEnds = (await ipIn(bed.target.nsPath('net'), ['-o', 'link', 'show', 'master', BRIDGE])).stdout.toString();
    expect(hostEnds.split('\n').filter(Boolean).length).toBe(1);
    expect(await pingFrom(bed.target.nsPath('net'), veth.addr4)).toBe(true);
    expect(fs.existsSync(targetDir)).toBe(false);
  }, 120_000);

  test('a runc container moves to host B, where runc lists it; runc state and cgroups gone from the source', async () => {
    ctr = await runContainer({ hostname: 'gw-mig-r', memoryLimit: 40 << 20, pidsLimit: 21 });
    const src = ctr.pid;
    const limits = readCgroupLimits(cgroupMembership(src));
    const targetDir = path.join(work, 'img-runc');
    const r = await migrateCli(['--container', ctr.id], targetDir);
    expect({ code: r.code, error: r.error }).toEqual({ code: 0, error: undefined });
    const sum = doneSummary(r)!;
    expect(fs.existsSync(`/run/runc/${ctr.id}`)).toBe(false);
    for (const h of cgroupHierarchies()) expect(fs.existsSync(path.join(h.mount, ctr.bundle.cgroupsPath))).toBe(false);
    const pid = restoredRoot(Number(sum.targetRootPid));
    await expectCounting(pid);
    expect(execFileSync('nsenter', ['-t', String(pid), '-u', 'hostname']).toString().trim()).toBe('gw-mig-r');
    expect(readCgroupLimits(cgroupMembership(pid))).toEqual(limits);
    // runc on host B (its own /run) knows the container, running with the restored init.
    const list = JSON.parse((await bed.target.execOk('runc', ['list', '-f', 'json'])).stdout) as { id: string; pid: number; status: string }[];
    expect(list.find((c) => c.id === ctr!.id)).toMatchObject({ pid: Number(sum.targetRootPid), status: 'running' });
    // Its state points runc at the cgroups under host B's root (runc ps / delete use them).
    const st = JSON.parse((await bed.target.execOk('cat', [`/run/runc/${ctr.id}/state.json`])).stdout) as { cgroup_paths: Record<string, string> };
    for (const p of Object.values(st.cgroup_paths)) expect(p).toContain(`${cgroupRoot}${ctr.bundle.cgroupsPath}`);
  }, 120_000);
});

describe('godwit migrate --pre-copy of a container with its own user and time namespaces', () => {
  test('rounds streamed while it runs; on host B the same id maps, its clocks and message queue, counting on', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-mig-pre', msgQueue: true, userns: { outside: 300000, count: 65536 },
      timens: { monotonic: 5000, boottime: 7000 }, memMib: 24 });
    const src = uc.pid;
    expect(safeRead(`/proc/${src}/uid_map`).trim().split(/\s+/)).toEqual(['0', '300000', '65536']);
    const targetDir = path.join(work, 'img-precopy');
    const r = await migrateCli(['--pid', String(src)], targetDir, ['--pre-copy']);
    expect({ code: r.code, error: r.error }).toEqual({ code: 0, error: undefined });
    const sum = doneSummary(r)! as { targetRootPid: number; preCopy?: { rounds: unknown[]; streamedBytes: number } };
    // The rounds went to B while the container ran: at least its 24 MiB of memory before the freeze.
    expect(sum.preCopy?.rounds.length).toBeGreaterThan(0);
    expect(sum.preCopy!.streamedBytes).toBeGreaterThan(4 << 20);
    expect(fs.existsSync(`/proc/${src}`) && !/^State:\s+Z/m.test(safeRead(`/proc/${src}/status`))).toBe(false);

    const pid = restoredRoot(Number(sum.targetRootPid));
    // It checks its message queue and memory on every tick (result stays empty) and counts on.
    await expectCounting(pid);
    expect(execFileSync('nsenter', ['-t', String(pid), '-u', 'hostname']).toString().trim()).toBe('gw-mig-pre');
    expect(safeRead(`/proc/${pid}/uid_map`).trim().split(/\s+/)).toEqual(['0', '300000', '65536']);
    expect(safeRead(`/proc/${pid}/gid_map`).trim().split(/\s+/)).toEqual(['0', '300000', '65536']);
    expect(safeRead(`/proc/${pid}/status`)).toMatch(/^Uid:\s+300000\s+300000\s+300000\s+300000$/m);
    expect(nsInode(pid, 'time')).not.toBe(nsInode(bed.target.initPid, 'time'));
    expect(nsInode(pid, 'user')).not.toBe(nsInode(bed.target.initPid, 'user'));
    expect(execFileSync('nsenter', ['-t', String(pid), '-U', '-i', 'ipcs', '-q']).toString()).toMatch(/0x[0-9a-f]+\s+\d+\s+\S+\s+\d+\s+\d+\s+6\b/);
    expect(fs.existsSync(targetDir)).toBe(false);
  }, 180_000);
});

describe('a failed container migration: the source runs on unharmed, host B holds nothing', () => {
  test('a corrupted chunk', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-mig-c', memMib: 8 });
    await addContainerVeth(uc.pid, sourceNetHost(), { subnet: SUBNET });
    const targetDir = path.join(work, 'img-corrupt');
    const args = { pid: uc.pid, host: bed.target.address, identity: bed.clientKeyPath, knownHosts: bed.knownHostsPath,
      godwitPath: `${NODE} ${CLI}`, targetDir, fault: 'corrupt', corruptAt: 1 << 20,
      target: { cgroupRoot, veth: { bridge: BRIDGE } } };
    const r = await runInSource([NODE, RUN_FIXTURE, JSON.stringify(args)]);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/failed; the source was resumed as it was/);
    expect(r.error).toMatch(/checksum/);
    await expectSourceUnharmed(uc.pid);
    expect(await pingFrom(bed.source.nsPath('net'), `198.19.${SUBNET}.2`)).toBe(true);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 90_000);

  test("the target's restorer killed while it restores the container", async () => {
    uc = await runUnshareContainer({ hostname: 'gw-mig-k', memMib: 8 });
    await addContainerVeth(uc.pid, sourceNetHost(), { subnet: SUBNET });
    const targetDir = path.join(work, 'img-killed');
    let watch: ReturnType<typeof killFirstRestorerOn> | undefined;
    const r = await migrateCli(['--pid', String(uc.pid)], targetDir, ['--bridge', BRIDGE], (e) => {
      // As in test/migrate: the watch starts with the stream, and kills the first restorer the receiver starts.
      if (e.event !== 'state' || e.state !== 'streaming') return;
      watch ??= killFirstRestorerOn(bed.target);
    }).finally(() => watch?.stop());
    const killed = await watch?.killed;
    expect(killed).toBeDefined();
    if (r.code !== 1) throw new Error(`the migration went through (exit ${r.code}) though the target's ${killed} was killed`);
    expect(r.error).toMatch(/failed; the source was resumed as it was/);
    await expectSourceUnharmed(uc.pid);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 90_000);
});

describe('a container migration in doubt: never running on both hosts', () => {
  test('every answer after Ready lost: B runs the container, the source stays stopped', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-mig-d', memMib: 4 });
    const src = uc.pid;
    const targetDir = path.join(work, 'img-doubt');
    const args = { pid: src, host: bed.target.address, identity: bed.clientKeyPath, knownHosts: bed.knownHostsPath,
      godwitPath: `${NODE} ${CLI}`, targetDir, fault: 'drop-after-ready', runningMs: 3000, target: { cgroupRoot } };
    const r = await runInSource([NODE, RUN_FIXTURE, JSON.stringify(args)]);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/may be running the workload/);
    expect(r.error).toMatch(/are stopped \(SIGSTOP\)/);
    // The source container: alive, every thread stopped, its count no longer moving.
    expect(threadStates(src).length).toBeGreaterThan(0);
    for (const st of threadStates(src)) expect(st).toBe('T');
    const held = count(src);
    await sleep(300);
    expect(count(src)).toBe(held);
    // Host B runs it (the Commit went out): counting on there.
    const restored = processesIn(bed.target).map((l) => Number(l.split(' ')[0]))
      .find((p) => safeRead(`/proc/${p}/cmdline`).startsWith('/bin/ctr-workload'));
    expect(restored).toBeDefined();
    await expectCounting(restored!);
  }, 90_000);
});

describe('godwit migrate/receive: container flags that cannot work are refused before anything starts', () => {
  const cli = (args: string[]) => {
    const r = require('node:child_process').spawnSync(NODE, [CLI, ...args], { encoding: 'utf8', input: '' }) as { status: number; stderr: string };
    return { status: r.status, stderr: r.stderr };
  };
  test.each([
    [['migrate', '--pid', '1', '--container', 'x', '--to', 'local'], /exactly one of --pid PID, --container ID, --cgroup PATH/],
    [['migrate', '--container', 'x', '--rootfs', 'diff', '--to', 'local'], /--rootfs diff needs --rootfs-base/],
    [['migrate', '--container', 'x', '--rootfs', 'both', '--to', 'local'], /--rootfs must be shared or diff/],
    [['migrate', '--pid', '1', '--runtime', 'runc', '--to', 'local'], /--runtime goes with --container/],
    [['migrate', '--container', 'x', '--bridge', 'br0', '--peer-addr', '198.18.0.1/24', '--to', 'local'], /exclude each other/],
    [['migrate', '--container', 'x', '--bridge', 'a b', '--to', 'local'], /only letters, digits/],
    [['receive', '--dir', '/tmp/x', '--cgroup-root', '/a'], /go with --migrate/],
    [['receive', '--dir', path.join(os.tmpdir(), 'godwit-never-made'), '--migrate', '--cgroup-root', 'rel/x'], /--cgroup-root: .*absolute path/],
    [['receive', '--dir', path.join(os.tmpdir(), 'godwit-never-made'), '--migrate', '--peer-addr', 'nope'], /--peer-addr "nope"/],
  ])('%j', (args, message) => {
    const r = cli(args as string[]);
    expect(r.stderr).toMatch(message as RegExp);
    expect(r.status).toBe(2);
  });
});
