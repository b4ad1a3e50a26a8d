/**
 * A container's SysV message queues and time namespace across a real checkpoint: the unshare-built container
 * keeps a queue with six messages in flight (types, sizes, one empty) and runs in a time namespace of its own
 * with nonzero offsets; it is dumped (killed), restored here, and the workload checks, on every tick, its queue
 * (copied in order) and that its clocks never read below the offsets nor go back. The test checks from outside
 * the queue contents (ids, permissions, byte limit, each message), the new time namespace's offsets from /proc,
 * and that receiving drains the queue in its order. Pending namespaces are refused before anything is frozen.
 * A container with a user namespace of its own (ids 0.. inside are 200000.. outside): its id maps go into
 * userns-N.img (credentials and IPC owners as seen inside), and the restore makes a user namespace with the same
 * maps that owns every other namespace of the container, its tasks root inside it (host id 200000).
 */
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { dump } from '../checkpoint/dump';
import { dumpIpc, dumpIpcVars, runNsutil } from '../checkpoint/ns-content';
import { decodeImage } from '../images';
import { restore, RestoreResult } from '../restore';
import { endRestoredRoot } from './helpers/restored';
import { runUnshareContainer, UnshareContainer } from '../scenarios/container/unshare';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MONO = 1000000; // s: far above this host's uptime, so a clock without the offset is caught
const BOOT = 2000000;

function readOr(f: string): string | undefined {
  try {
    return fs.readFileSync(f, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** /proc/PID/timens_offsets in ns: { monotonic, boottime }. */
function offsets(pid: number): { monotonic: bigint; boottime: bigint } {
  const out = { monotonic: 0n, boottime: 0n };
  for (const l of fs.readFileSync(`/proc/${pid}/timens_offsets`, 'utf8').split('\n')) {
    const [clock, s, ns] = l.trim().split(/\s+/);
    if (clock === 'monotonic' || clock === 'boottime') out[clock] = BigInt(s!) * 1000000000n + BigInt(ns!);
  }
  return out;
}

async function waitFor(what: string, fn: () => boolean, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function nsId(pid: number, kind: string): string {
  return fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
}

/** The user namespace owning each of PID's other namespaces (lsns's ONS column: util-linux asks NS_GET_USERNS). */
function owners(pid: number): Record<string, string> {
  const out = JSON.parse(execFileSync('lsns', ['-J', '-p', String(pid), '-o', 'NS,TYPE,ONS']).toString()) as { namespaces: Array<{ ns: number; type: string; ons: number }> };
  const r: Record<string, string> = {};
  for (const n of out.namespaces) if (['mnt', 'uts', 'ipc', 'net', 'pid', 'time'].includes(n.type)) r[n.type] = `user:[${n.ons}]`;
  return r;
}

describe('container message queues, time and user namespaces', () => {
  let uc: UnshareContainer | undefined;
  let restored: RestoreResult | undefined;
  let dir: string | undefined;
  const kills: number[] = [];
  afterEach(async () => {
    await endRestoredRoot(restored);
    restored = undefined;
    for (const p of kills.splice(0))
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    await uc?.destroy();
    uc = undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('carries a queue with messages in flight and the time namespace offsets through dump, kill and restore', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-ipc-time', msgQueue: true, timens: { monotonic: MONO, boottime: BOOT } });
    const pid0 = uc.pid;
    expect(offsets(pid0)).toEqual({ monotonic: BigInt(MONO) * 1000000000n, boottime: BigInt(BOOT) * 1000000000n });
    const before = await dumpIpc(pid0);
    expect(before.msg).toHaveLength(1);
    const q = before.msg[0]!;
    expect(q.desc.key).toBe(uc.bundle.opts.shmKey + 1);
    expect(q.desc.mode).toBe(0o620);
    expect(q.qbytes).toBe(12000);
    expect(q.messages).toHaveLength(6);
    expect(q.messages[2]!.data.length).toBe(0);
    expect((await dumpIpc(pid0)).msg).toEqual(before.msg); // dumping does not consume
    // Namespace limits of its own (ipcns-var-N.img) come back too.
    await runNsutil(['ipc-vars-set', String(pid0)], Buffer.from('kernel/msgmnb 65536\nkernel/msgmax 9000\nfs/mqueue/msg_max 30\n'));
    const varsBefore = await dumpIpcVars(pid0);
    expect(varsBefore).toMatchObject({ 'kernel/msgmnb': '65536', 'kernel/msgmax': '9000', 'fs/mqueue/msg_max': '30' });

    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    const hostBefore = process.hrtime.bigint();
    await dump({ pid: pid0, dir });
    await waitFor('the dumped container to go', () => !fs.existsSync(`/proc/${pid0}`));
    const rec = JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8'));
    expect(rec.ns).toEqual(['pid', 'net', 'ipc', 'uts', 'time', 'mnt']);
    expect(rec.timens).toEqual({ monotonic: [String(MONO), '0'], boottime: [String(BOOT), '0'] });
    // CRIU's images: timens-N.img holds the clocks as the container saw them; ipcns-msg-N.img the queue.
    const files = fs.readdirSync(dir);
    const timensFile = files.find((f) => /^timens-[1-9]\d*\.img$/.test(f));
    expect(timensFile).toBeDefined();
    const te = decodeImage(fs.readFileSync(path.join(dir, timensFile!)), timensFile!).entries[0]!.msg as Record<string, { tv_sec: bigint }>;
    expect(te.monotonic!.tv_sec).toBeGreaterThanOrEqual(BigInt(MONO));
    expect(te.boottime!.tv_sec).toBeGreaterThanOrEqual(BigInt(BOOT));
    const msgFile = files.find((f) => /^ipcns-msg-\d+\.img$/.test(f))!;
    const img = decodeImage(fs.readFileSync(path.join(dir, msgFile)), msgFile).entries;
    expect(img).toHaveLength(1);
    expect(img[0]!.msg).toMatchObject({ qbytes: 12000, qnum: 6, desc: { id: q.desc.id, key: q.desc.key } });

    restored = await restore({ dir, detach: true }, { silent: true });
    const hostAfter = process.hrtime.bigint();
    const pid = restored.rootPid;
    // A fresh time namespace that the restored tree is in (not a pending one), not the host's.
    const tns = fs.readlinkSync(`/proc/${pid}/ns/time`);
    expect(tns).not.toBe(fs.readlinkSync('/proc/self/ns/time'));
    expect(fs.readlinkSync(`/proc/${pid}/ns/time_for_children`)).toBe(tns);
    // Its clocks continue from the dumped values: each offset is the old one less the host time that passed
    // between the clock read (inside the dump) and the restorer's start, which lies within this test's window.
    const after = offsets(pid);
    for (const [k, old] of [['monotonic', MONO], ['boottime', BOOT]] as const) {
      const lost = BigInt(old) * 1000000000n - after[k];
      expect(lost).toBeGreaterThanOrEqual(0n);
      expect(lost).toBeLessThanOrEqual(hostAfter - hostBefore);
    }
    // The queue is back with its id, permissions, byte limit and every message in order.
    const again = await dumpIpc(pid);
    expect(again.msg).toEqual(before.msg);
    expect(await dumpIpcVars(pid)).toEqual(varsBefore);

    // The workload goes on: it counts, its clocks are checked on every tick, its queue copied and checked.
    const count = Number(readOr(`/proc/${pid}/root/tmp/count`));
    await waitFor('the restored workload to count on', () => Number(readOr(`/proc/${pid}/root/tmp/count`)) > count + 3);
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined();
    const [mono] = (readOr(`/proc/${pid}/root/tmp/clock`) ?? '').split(' ');
    expect(BigInt(mono!)).toBeGreaterThanOrEqual(BigInt(MONO) * 1000000000n);
    // Receiving (msgrcv type 0) drains it in the dumped order.
    fs.writeFileSync(`/proc/${pid}/root/tmp/drain`, '');
    await waitFor('the workload to drain its queue', () => readOr(`/proc/${pid}/root/tmp/drained`) !== undefined || readOr(`/proc/${pid}/root/tmp/result`) !== undefined);
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined();
    expect(readOr(`/proc/${pid}/root/tmp/drained`)).toBe('drained 6');
    expect((await dumpIpc(pid)).msg[0]!.messages).toEqual([]);
  });

  it('refuses, before freezing, a task holding a pending time namespace', async () => {
    // unshare(CLONE_NEWTIME) (syscall 272, flag 0x80) without a child to enter it: time_for_children differs.
    const p = spawn('perl', ['-e', 'syscall(272, 0x80) == 0 or die "unshare: $!"; sleep 60'], { stdio: 'ignore', detached: true });
    kills.push(p.pid!);
    await waitFor('the pending time namespace', () => {
      try {
        return fs.readlinkSync(`/proc/${p.pid}/ns/time_for_children`) !== fs.readlinkSync(`/proc/${p.pid}/ns/time`);
      } catch {
        return false;
      }
    });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await expect(dump({ pid: p.pid!, dir })).rejects.toThrow(/nothing was frozen[\s\S]*unshared a new time namespace its future children would enter/);
    const st = fs.readFileSync(`/proc/${p.pid}/status`, 'utf8');
    expect(st).toMatch(/^TracerPid:\s+0$/m);
    expect(st).toMatch(/^State:\s+S/m);
  });

  it('refuses, before freezing, a container whose ipc namespace holds POSIX message queues', async () => {
    uc = await runUnshareContainer({ hostname: 'gw-mq' });
    // /usr/bin/python3 (Debian's) opens a queue inside the container's ipc namespace; the queue outlives it.
    const mq = "import ctypes; rt = ctypes.CDLL('librt.so.1'); fd = rt.mq_open(b'/gw-posix-q', 0o102, 0o600, None); assert fd >= 0";
    execFileSync('nsenter', [`--ipc=/proc/${uc.pid}/ns/ipc`, '/usr/bin/python3', '-c', mq]);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await expect(dump({ pid: uc.pid, dir })).rejects.toThrow(/nothing was frozen.*POSIX message queue \/gw-posix-q/);
    expect(fs.existsSync(dir)).toBe(false);
    const st = fs.readFileSync(`/proc/${uc.pid}/status`, 'utf8');
    expect(st).toMatch(/^TracerPid:\s+0$/m);
    const count = uc.count();
    await waitFor('the container to count on', () => uc!.count() > count);
  });

  it('carries a user namespace: same id maps, owning the other namespaces (time included), credentials and IPC owners mapped', async () => {
    // 8 MiB of checked memory: restored by userfaultfd, which a task inside a user namespace may only create
    // for user-mode faults (UFFD_USER_MODE_ONLY; restore/memory.ts).
    uc = await runUnshareContainer({ hostname: 'gw-userns', msgQueue: true, userns: { outside: 200000, count: 65536 }, timens: { monotonic: MONO, boottime: BOOT },
      memMib: 8 });
    const pid0 = uc.pid;
    expect(readOr(`/proc/${pid0}/uid_map`)!.split(/\s+/)).toEqual(['0', '200000', '65536']);
    expect(fs.readFileSync(`/proc/${pid0}/status`, 'utf8')).toMatch(/^Uid:\s+200000\s+200000\s+200000\s+200000$/m);
    const before = await dumpIpc(pid0);
    expect(before.msg[0]!.desc).toMatchObject({ uid: 200000, gid: 200000, cuid: 200000, cgid: 200000 });
    const ownersBefore = owners(pid0);
    // Sanity: the scenario's namespaces are owned by its user namespace.
    const u0 = nsId(pid0, 'user');
    expect(ownersBefore).toEqual({ mnt: u0, uts: u0, ipc: u0, net: u0, pid: u0, time: u0 });

    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-ctr-img-'));
    fs.rmdirSync(dir);
    await dump({ pid: pid0, dir });
    await waitFor('the dumped container to go', () => !fs.existsSync(`/proc/${pid0}`));
    const rec = JSON.parse(fs.readFileSync(path.join(dir, 'container.json'), 'utf8'));
    expect(rec.ns).toEqual(['pid', 'net', 'ipc', 'uts', 'time', 'mnt', 'user']);
    const files = fs.readdirSync(dir);
    const usernsFile = files.find((f) => /^userns-\d+\.img$/.test(f))!;
    const ext = [{ first: 0, lower_first: 200000, count: 65536 }];
    expect(decodeImage(fs.readFileSync(path.join(dir, usernsFile)), usernsFile).entries[0]!.msg).toEqual({ uid_map: ext, gid_map: ext });
    // Credentials and IPC owners as the container sees them (CRIU's view): root inside, not 200000.
    const core = decodeImage(fs.readFileSync(path.join(dir, 'core-1.img')), 'core-1.img').entries[0]!.msg as { thread_core: { creds: unknown } };
    expect(core.thread_core.creds).toMatchObject({ uid: 0, gid: 0, euid: 0, egid: 0, suid: 0, sgid: 0, fsuid: 0, fsgid: 0 });
    const msgFile = files.find((f) => /^ipcns-msg-\d+\.img$/.test(f))!;
    expect(decodeImage(fs.readFileSync(path.join(dir, msgFile)), msgFile).entries[0]!.msg).toMatchObject({ qnum: 6, desc: { uid: 0, gid: 0, cuid: 0, cgid: 0 } });

    restored = await restore({ dir, detach: true }, { silent: true });
    const pid = restored.rootPid;
    // A fresh user namespace with the same maps, owning every other namespace of the container.
    expect(nsId(pid, 'user')).not.toBe(nsId(process.pid, 'user'));
    expect(readOr(`/proc/${pid}/uid_map`)!.split(/\s+/)).toEqual(['0', '200000', '65536']);
    expect(readOr(`/proc/${pid}/gid_map`)!.split(/\s+/)).toEqual(['0', '200000', '65536']);
    expect(owners(pid)).toEqual(Object.fromEntries(Object.keys(ownersBefore).map((k) => [k, nsId(pid, 'user')])));
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    expect(st).toMatch(/^Uid:\s+200000\s+200000\s+200000\s+200000$/m);
    expect(st).toMatch(/^Gid:\s+200000\s+200000\s+200000\s+200000$/m);
    expect(offsets(pid).monotonic).toBeGreaterThan(0n); // its time namespace, made inside the user namespace
    // Root inside keeps every capability in its namespace.
    expect(st).toMatch(/^CapEff:\s+000001ffffffffff$/m);
    // The queue with its owners as before, the workload going on and draining it in order.
    expect((await dumpIpc(pid)).msg).toEqual(before.msg);
    const count = Number(readOr(`/proc/${pid}/root/tmp/count`));
    await waitFor('the restored workload to count on', () => Number(readOr(`/proc/${pid}/root/tmp/count`)) > count + 3);
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined();
    // Files it writes now belong to its root, host id 200000.
    expect(fs.statSync(`/proc/${pid}/root/tmp/count`).uid).toBe(200000);
    fs.writeFileSync(`/proc/${pid}/root/tmp/drain`, '');
    await waitFor('the workload to drain its queue', () => readOr(`/proc/${pid}/root/tmp/drained`) !== undefined || readOr(`/proc/${pid}/root/tmp/result`) !== undefined);
    expect(readOr(`/proc/${pid}/root/tmp/result`)).toBeUndefined();
    expect(readOr(`/proc/${pid}/root/tmp/drained`)).toBe('drained 6');
  });
});
