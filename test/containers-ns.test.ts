/**
 * Container namespace content and cgroups round trip: uts names and SysV IPC (a shm segment's bytes, a
 * semaphore set) dumped from a running runc container go through their CRIU images into fresh namespaces;
 * the cgroup with its limits is recreated from cgroup.img and a process moved in sees the same limits.
 * Everything created is removed, also on failure.
 */
import * as fs from 'fs';
import { spawn } from 'child_process';
import { RunningContainer, runContainer } from '../scenarios/container/bundle';
import { cgroupImage, cgroupMembership, readCgroupLimits } from '../checkpoint/cgroups';
import { dumpIpc, dumpIpcVars, dumpTimens, dumpUserns, dumpUts, ipcImageEntries, ipcVarEntry, namespaceOwnership, parseIpcStream, runNsutil } from '../checkpoint/ns-content';
import { restoreCgroups } from '../restore/cgroups';
import { FreshNamespaces, createFreshNamespaces, ipcContentFromImages, ipcStream, prepareNamespaces, restoreIpc, restoreIpcVars } from '../restore/ns-content';
import { decodeImage, encodeImage } from '../images';

function pattern(seed: number, i: number): number {
  return (i * 131 + seed * 7 + (i >> 12)) & 0xff;
}

describe('container namespaces and cgroups round trip', () => {
  let ctr: RunningContainer | undefined;
  let ns: FreshNamespaces | undefined;
  const cleanups: Array<() => void | Promise<void>> = [];
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
    await ns?.destroy();
    ns = undefined;
    await ctr?.destroy();
    ctr = undefined;
  });

  it('dumps uts and SysV IPC of a runc container and restores them into fresh namespaces', async () => {
    ctr = await runContainer({ hostname: 'gw-uts-rt', shmBytes: 300000, seed: 11 });
    const uts = await dumpUts(ctr.pid);
    expect(uts).toEqual({ nodename: 'gw-uts-rt', domainname: '(none)' });
    const ipc = await dumpIpc(ctr.pid);
    expect(ipc.shm).toHaveLength(1);
    const shm = ipc.shm[0];
    expect(shm.desc.key).toBe(ctr.bundle.opts.shmKey);
    expect(shm.desc.mode).toBe(0o640);
    expect(shm.size).toBe(300000);
    for (const i of [0, 1, 4095, 4096, 123457, 299999]) expect(shm.data[i]).toBe(pattern(11, i));

    // Through CRIU's images and back.
    const ent = ipcImageEntries(ipc);
    const shmImg = decodeImage(encodeImage('IPCNS_SHM', ent.shm), 'ipcns-shm-9.img').entries;
    const semImg = decodeImage(encodeImage('IPCNS_SEM', ent.sem), 'ipcns-sem-9.img').entries;
    const utsImg = decodeImage(encodeImage('UTSNS', [uts as unknown as Record<string, unknown>]), 'utsns-9.img').entries[0].msg;
    const back = ipcContentFromImages(shmImg, semImg);
    expect(back.shm[0].data.equals(shm.data)).toBe(true);

    ns = await prepareNamespaces(['uts', 'ipc'], { uts: { nodename: String(utsImg.nodename), domainname: 'gw.test' }, ipc: back });
    const own = namespaceOwnership(ns.pid);
    expect(own.uts.own && own.ipc.own).toBe(true);
    expect(own.uts.ino).not.toBe(namespaceOwnership(ctr.pid).uts.ino);
    expect(await dumpUts(ns.pid)).toEqual({ nodename: 'gw-uts-rt', domainname: 'gw.test' });
    const again = await dumpIpc(ns.pid);
    expect(again.shm.map((s) => s.desc)).toEqual(ipc.shm.map((s) => s.desc));
    expect(again.shm[0].data.equals(shm.data)).toBe(true);
    // The host's names and IPC are untouched.
    expect(fs.readFileSync('/proc/sys/kernel/hostname', 'utf8').trim()).not.toBe('gw-uts-rt');
  });

  it('restores semaphore sets and several segments with their ids; a clash tears the namespaces down', async () => {
    const src = await createFreshNamespaces(['ipc']);
    cleanups.push(() => src.destroy());
    const content = {
      shm: [
        { desc: { key: 0x1111, id: 0, mode: 0o600, uid: 0, gid: 0, cuid: 0, cgid: 0 }, size: 10, data: Buffer.from('0123456789') },
        { desc: { key: 0, id: 32769, mode: 0o644, uid: 1234, gid: 99, cuid: 0, cgid: 0 }, size: 5000, data: Buffer.alloc(5000, 0xab) },
      ],
      sem: [{ desc: { key: 0x2222, id: 65538, mode: 0o660, uid: 0, gid: 0, cuid: 0, cgid: 0 }, values: [3, 0, 32767] }],
      msg: [
        {
          desc: { key: 0x3333, id: 98307, mode: 0o620, uid: 7, gid: 8, cuid: 0, cgid: 0 },
          qbytes: 4000,
          // Order, types, an empty message and binary bytes with newlines must all survive.
          messages: [
            { mtype: 5n, data: Buffer.from('first\nline') },
            { mtype: 2n, data: Buffer.alloc(0) },
            { mtype: 0x7fffffffffffffffn, data: Buffer.from([0, 10, 255, 13, 10]) },
            { mtype: 5n, data: Buffer.alloc(1000, 0x5a) },
          ],
        },
        { desc: { key: 0, id: 1, mode: 0o600, uid: 0, gid: 0, cuid: 0, cgid: 0 }, qbytes: 16384, messages: [] },
      ],
    };
    await runNsutil(['ipc-restore', String(src.pid)], ipcStream(content));
    const got = await dumpIpc(src.pid);
    expect(got).toEqual({ ...content, msg: [...content.msg].sort((a, b) => a.desc.id - b.desc.id) });
    expect(parseIpcStream(ipcStream(content))).toEqual(content);
    // The dump copies messages (MSG_COPY) without taking them: a second dump sees the same queues.
    expect(await dumpIpc(src.pid)).toEqual(got);
    // Through CRIU's ipcns-msg image (header, then length-prefixed ipc_msg + bytes padded to 8) and back.
    const msgImg = encodeImage('IPCNS_MSG', ipcImageEntries(got).msg);
    const q0 = got.msg.find((q) => q.desc.id === 98307)!;
    // magic pair + per queue: u32 len + entry, then per message u32 len + ipc_msg + padded bytes.
    expect(msgImg.indexOf(Buffer.from('first\nline\0\0\0\0\0\0'))).toBeGreaterThan(0);
    expect(ipcContentFromImages([], [], decodeImage(msgImg, 'ipcns-msg-9.img').entries).msg).toEqual(got.msg);
    expect(q0.messages.map((m) => m.mtype)).toEqual([5n, 2n, 0x7fffffffffffffffn, 5n]);

    // Restoring the same objects again clashes on the first key: the prepared namespaces are gone afterwards.
    const before = new Set(fs.readdirSync('/proc'));
    await expect(prepareNamespaces(['ipc', 'uts'], { uts: { nodename: 'x', domainname: 'y' }, ipc: { shm: [content.shm[0], content.shm[0]], sem: [], msg: [] } })).rejects.toThrow(
      /godwit-nsutil ipc-restore .* failed .*shmget\(key 4369 id 0 size 10\).*File exists/,
    );
    // The namespace holder is this process's own child (setpriv execs unshare, which execs sleep infinity): count
    // only such children, not the holders of other suites running on the machine at the same time.
    const leftover = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && !before.has(p)).filter((p) => {
      try {
        const ppid = Number(/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
        return ppid === process.pid && fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('infinity');
      } catch {
        return false;
      }
    });
    expect(leftover).toEqual([]);
  });

  it('carries the ipc namespace sysctls (ipcns-var), so a queue above the default byte limit comes back', async () => {
    const src = await createFreshNamespaces(['ipc']);
    cleanups.push(() => src.destroy());
    const vars = 'kernel/sem 250 32000 32 128\nkernel/msgmnb 65536\nkernel/msgmax 16384\nkernel/shmmni 1000\nfs/mqueue/msg_max 20\n';
    await runNsutil(['ipc-vars-set', String(src.pid)], Buffer.from(vars));
    const q = { desc: { key: 0x4444, id: 7, mode: 0o600, uid: 0, gid: 0, cuid: 0, cgid: 0 }, qbytes: 40000, messages: [{ mtype: 3n, data: Buffer.alloc(12000, 0x33) }] };
    await runNsutil(['ipc-restore', String(src.pid)], ipcStream({ shm: [], sem: [], msg: [q] }));
    const got = await dumpIpcVars(src.pid);
    expect(got).toMatchObject({ 'kernel/sem': '250 32000 32 128', 'kernel/msgmnb': '65536', 'kernel/msgmax': '16384', 'kernel/shmmni': '1000', 'fs/mqueue/msg_max': '20' });
    // Through CRIU's ipcns-var image into a fresh namespace: the limits first, then the queue fits again.
    const entry = decodeImage(encodeImage('IPC_VAR', [ipcVarEntry(got)]), 'ipcns-var-9.img').entries[0].msg;
    expect(entry).toMatchObject({ sem_ctls: [250, 32000, 32, 128], msg_ctlmnb: 65536, msg_ctlmax: 16384, shm_ctlmni: 1000, mq_msg_max: 20 });
    ns = await createFreshNamespaces(['ipc']);
    await expect(restoreIpc(ns.pid, { shm: [], sem: [], msg: [q] })).rejects.toThrow(/qbytes 40000 \(kernel.msgmnb here is 16384/);
    await restoreIpcVars(ns.pid, entry);
    expect(await dumpIpcVars(ns.pid)).toEqual(got);
    await restoreIpc(ns.pid, { shm: [], sem: [], msg: [{ ...q, desc: { ...q.desc, key: 0x4445, id: 9 } }] });
    expect((await dumpIpc(ns.pid)).msg.find((m) => m.desc.key === 0x4445)).toMatchObject({ qbytes: 40000, messages: [{ mtype: 3n }] });
    // Only ipc namespace sysctls go through this path.
    await expect(runNsutil(['ipc-vars-set', String(ns.pid)], Buffer.from('kernel/hostname evil\n'))).rejects.toThrow(/kernel\/hostname is not an ipc namespace sysctl/);
    await expect(runNsutil(['ipc-vars-set', String(ns.pid)], Buffer.from('kernel/msgmnb -5\n'))).rejects.toThrow(/write\(\/proc\/sys\/kernel\/msgmnb = -5\)/);
  });

  it('refuses a corrupt ipc stream with a clear error', async () => {
    ns = await createFreshNamespaces(['ipc']);
    await expect(runNsutil(['ipc-restore', String(ns.pid)], Buffer.from('shm 1 0 600 0 0 0 0 99999999999\n'))).rejects.toThrow(/over the .* limit/);
    await expect(runNsutil(['ipc-restore', String(ns.pid)], Buffer.from('shm 1 0 600 0 0 0 0 100\nshort'))).rejects.toThrow(/stream ended after 5 of 100 bytes/);
    await expect(runNsutil(['ipc-restore', String(ns.pid)], Buffer.from('bogus'))).rejects.toThrow(/unknown object kind/);
    await expect(runNsutil(['ipc-restore', String(ns.pid)], Buffer.from('msg 9 3 600 0 0 0 0 16384 2\n1 4\nabcd0 1\n'))).rejects.toThrow(/msg id 3 message 1: type 0 size 1/);
    await expect(runNsutil(['ipc-restore', String(ns.pid)], Buffer.from('msg 10 4 600 0 0 0 0 16384 1\n1 40\nab'))).rejects.toThrow(/stream ended inside its 40 bytes/);
    // A byte limit above msgmnb needs CAP_SYS_RESOURCE: the error says which limit and why.
    await expect(runNsutil(['ipc-restore', String(ns.pid)], Buffer.from('msg 11 5 600 0 0 0 0 99999999 0\nend\n'))).rejects.toThrow(/IPC_SET id 5 qbytes 99999999 \(kernel.msgmnb here is 16384/);
    await expect(runNsutil(['uts-get', '999999999'])).rejects.toThrow(/usage/);
  });

  it('recreates the container cgroup with equal limits (v1 and v2 hierarchies) and removes it', async () => {
    ctr = await runContainer({ memoryLimit: 40 << 20, pidsLimit: 21, cpuQuota: 25000, cpuShares: 256 });
    const members = cgroupMembership(ctr.pid);
    const want = readCgroupLimits(members);
    const img = decodeImage(encodeImage('CGROUP', [cgroupImage(members)]), 'cgroup.img').entries[0].msg;
    const newPath = `${ctr.bundle.cgroupsPath}-restored`;
    const rc = restoreCgroups(img, { relocate: { from: ctr.bundle.cgroupsPath, to: newPath } });
    cleanups.push(() => rc.remove());
    expect(rc.skipped).toEqual([]);
    expect(rc.created.length).toBe(members.length); // only the new leaf: the parent exists
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          if (sleeper.exitCode !== null || sleeper.signalCode !== null) return r();
          sleeper.once('exit', () => r());
          sleeper.kill('SIGKILL');
        }),
    );
    rc.addProcess(sleeper.pid!);
    const moved = cgroupMembership(sleeper.pid!);
    for (const m of moved) expect(m.path).toBe(newPath);
    expect(readCgroupLimits(moved)).toEqual(want);
    expect(want).toMatchObject({ memoryMax: BigInt(40 << 20), pidsMax: 21, cpuQuota: 25000, cpuShares: 256 });

    // A limit the kernel refuses: everything created is removed again.
    const bad = JSON.parse(JSON.stringify(img, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
    const pidsCtl = bad.controllers.find((c: any) => c.cnames.includes('pids'));
    pidsCtl.dirs[0].children[0].properties = [{ name: 'pids.max', value: 'not-a-number' }];
    const badPath = `${ctr.bundle.cgroupsPath}-bad`;
    expect(() => restoreCgroups(bad, { relocate: { from: ctr!.bundle.cgroupsPath, to: badPath } })).toThrow(/cannot set pids.max = not-a-number in \/sys\/fs\/cgroup\/pids/);
    for (const m of members) expect(fs.existsSync(m.mount + badPath)).toBe(false);
  });

  it('reads user namespace maps and time namespace offsets', async () => {
    const um = dumpUserns(process.pid);
    expect(um.uid_map).toEqual([{ first: 0, lower_first: 0, count: 4294967295 }]);
    const t = dumpTimens(process.pid);
    expect(t).toEqual({ monotonic: { tv_sec: 0n, tv_nsec: 0n }, boottime: { tv_sec: 0n, tv_nsec: 0n } });
    // A real time namespace with offsets, through unshare --time.
    const holder = spawn('unshare', ['--time', '--fork', '--monotonic', '-1000', '--boottime', '86400', 'sleep', '30'], { stdio: 'ignore' });
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          if (holder.exitCode !== null || holder.signalCode !== null) return r();
          holder.once('exit', () => r());
          holder.kill('SIGKILL');
        }),
    );
    let child = 0;
    for (let i = 0; i < 200 && !child; i++) {
      await new Promise((r) => setTimeout(r, 10));
      try {
        child = Number(fs.readFileSync(`/proc/${holder.pid}/task/${holder.pid}/children`, 'utf8').trim().split(' ')[0]) || 0;
      } catch {
        /* not yet */
      }
    }
    expect(child).toBeGreaterThan(0);
    const off = dumpTimens(child);
    expect(off.monotonic.tv_sec).toBe(BigInt.asUintN(64, -1000n));
    expect(off.boottime.tv_sec).toBe(86400n);
    expect(namespaceOwnership(child).time.own).toBe(true);
  });
});
