/**
 * Shared memory: MAP_SHARED|MAP_ANONYMOUS areas and memfds (fds and mappings, shared, private, sealed),
 * shared between a parent and its forked child, through dump + kill + restore and through --leave-running
 * snapshots; one object per shared object in the images; SysV shm refused before anything is frozen.
 */
import * as fs from 'node:fs';
import { dump } from '../checkpoint/dump';
import { entries, WorkloadFixture, info } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-cov-');
afterEach(() => fx.cleanup());

describe('shared memory through dump, kill, restore', () => {
  test('shared-mem: parent and child share the anonymous area and the memfd again (two cycles)', async () => {
    const w = await fx.start('shared-mem');
    await fx.cycle(w, { newPidns: false });
    // A restored tree dumps and restores again: the objects are still one object each.
    await fx.cycle(w, { compress: 'none', newPidns: false });
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('shmem-more: sealed memfd, mapped-only memfd, private memfd mapping, holed and zero shared areas', async () => {
    const w = await fx.start('shmem-more');
    const { restored } = await fx.cycle(w);
    // Each object is shared between the two tasks again: same inode behind the counter page in both.
    const [parent, child] = [...restored.pids.values()];
    const inodes = (pid: number) =>
      new Set(fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.endsWith('/dev/zero (deleted)')).map((l) => l.split(/\s+/)[4]));
    const shared = [...inodes(parent)].filter((i) => inodes(child).has(i));
    expect(shared.length).toBeGreaterThanOrEqual(3);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

describe('shared memory snapshots (--leave-running)', () => {
  test('shared-mem: one pagemap-shmem per object, memfd.img, vma shmids, and the workload runs on', async () => {
    const w = await fx.start('shared-mem');
    const { dir } = await fx.snapshot(w);
    const files = fs.readdirSync(dir);
    const shmemFiles = files.filter((f) => f.startsWith('pagemap-shmem-'));
    expect(shmemFiles).toHaveLength(2); // the anonymous area and the memfd, though two processes map each
    const [inode] = entries(dir, 'memfd.img');
    expect(inode).toMatchObject({ name: 'godwit-scenario', size: 1048576n, seals: 1 });
    expect(files).toContain(`pagemap-shmem-${inode.shmid}.img`);
    // The memfd fd of the parent is a MEMFD file pointing at that inode; its mapping's vma.shmid is a MEMFD file too.
    const memfds = entries(dir, 'files.img').filter((f) => f.type === 18);
    expect(memfds.length).toBeGreaterThanOrEqual(1);
    for (const f of memfds) expect(BigInt((f.memfd as Record<string, number>).inode_id)).toBe(inode.inode_id);
    const [, addr] = info(w, 'memfd');
    const mm = entries(dir, `mm-${w.pid}.img`)[0];
    const vma = (mm.vmas as Record<string, bigint | number>[]).find((v) => v.start === BigInt(addr))!;
    expect(Number(vma.status) & 16384).toBeTruthy();
    expect(memfds.map((f) => f.id)).toContain(Number(vma.shmid));
    // Anonymous shared area: the pages the parent and child wrote (2 MiB) plus the control page.
    const anon = shmemFiles.find((f) => f !== `pagemap-shmem-${inode.shmid}.img`)!;
    const pm = entries(dir, anon);
    const pages = pm.slice(1).reduce((n, e) => n + Number(e.nr_pages), 0);
    expect(pages).toBe(513);
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });

  test('shmem-more: seals are recorded and the workload runs on', async () => {
    const w = await fx.start('shmem-more');
    const { dir } = await fx.snapshot(w, 'zstd');
    const byName = new Map(entries(dir, 'memfd.img').map((e) => [e.name, e]));
    expect([...byName.keys()].sort()).toEqual(['map-only', 'private', 'sealed']);
    expect(byName.get('sealed')!.seals).toBe(2 | 4); // F_SEAL_SHRINK | F_SEAL_GROW
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  });
});

test('SysV shared memory is refused before freezing, naming the pid, the mapping and the kind', async () => {
  const w = await fx.start('shmem-more', ['--sysv', '1']);
  const [, at] = info(w, 'sysv');
  const dir = fx.imageDir();
  const err = await dump({ pid: w.pid, dir }).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toMatch(new RegExp(`pid ${w.pid} mapping ${at}-0x[0-9a-f]+ /SYSV[0-9a-f]+ \\(deleted\\): SysV shared memory`));
  expect((err as Error).message).toContain('nothing was frozen');
  expect(fs.existsSync(dir)).toBe(false);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});
