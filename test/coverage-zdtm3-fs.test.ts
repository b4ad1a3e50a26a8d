/**
 * Filesystem places CRIU's zdtm static tests found godwit losing (chroot, chroot-file, memfd02, proc-self,
 * unlink_fstat03), each reproduced by the fs-places workload: dump + kill + restore (and --leave-running
 * snapshots), then the workload checks itself.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { describeError } from '../util/errors';
import { entries, info, WorkloadFixture } from './helpers/workload-fixture';

const fx = new WorkloadFixture('godwit-covz3fs-');
afterEach(() => fx.cleanup());

test.each([
  ['1', 'outside the root (chroot without chdir)'],
  ['2', 'inside the root'],
])('fs-places --chroot %s: a chrooted child keeps its root and a cwd %s, files opened before and after the chroot', async (mode) => {
  await fx.restoredPasses('fs-places', ['--chroot', mode]);
});

test('fs-places --chroot 1 snapshot: the chrooted child runs on unharmed', async () => {
  const w = await fx.start('fs-places', ['--chroot', '1']);
  await fx.snapshot(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([true, false])('fs-places --proc 1 (new pid namespace: %s): an fd on /proc/self/maps reads the restored task\'s own maps', async (newPidns) => {
  const w = await fx.start('fs-places', ['--proc', '1']);
  await fx.cycle(w, { newPidns });
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test.each([true, false])('fs-places --ns 1 (new pid namespace: %s): fds on the task\'s own net and uts namespace files come back on the same namespaces', async (newPidns) => {
  const w = await fx.start('fs-places', ['--ns', '1']);
  const { dir } = await fx.cycle(w, { newPidns });
  const ns = entries(dir, 'files.img').filter((e) => Number(e.type) === 14);
  expect(ns.map((e) => (e.nsf as { ns_cflag: number }).ns_cflag).sort((a, b) => a - b)).toEqual([0x04000000, 0x40000000]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fs-places --ns 2: an fd on a namespace no task of the tree is in is refused by name before the freeze, the tree left running', async () => {
  const w = await fx.start('fs-places', ['--ns', '2']);
  const fd = info(w, 'foreign-ns-fd')[0];
  const err = await dump({ pid: w.pid, dir: fx.imageDir() }).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  expect(describeError(err)).toMatch(new RegExp(`pid ${w.pid}.*fd ${fd}: namespace file uts:\\[\\d+\\]: not the uts namespace of the dumped tree`));
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

/** The link remaps (godwit's names for removed files that still have links) in the workload's directory. */
const linkRemaps = (w: { dir: string }) => fs.readdirSync(w.dir).filter((f) => f.startsWith('.godwit-link-remap.'));

test.each([true, false])('fs-places --linked 1 (new pid namespace: %s): a file whose name was removed while another link names it keeps its inode through a link remap, removed after restore', async (newPidns) => {
  const w = await fx.start('fs-places', ['--linked', '1']);
  const { dir } = await fx.cycle(w, { newPidns });
  expect(entries(dir, 'remap-fpath.img').map((e) => Number(e.remap_type))).toEqual([0 /* LINKED */]);
  expect(linkRemaps(w)).toEqual([]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('fs-places --linked 1 snapshot: the link remap stays for a later restore, which opens the same inode and removes it', async () => {
  const w = await fx.start('fs-places', ['--linked', '1']);
  const { dir } = await fx.snapshot(w);
  const [link] = linkRemaps(w);
  expect(link).toBeDefined();
  const ino = fs.statSync(path.join(w.dir, 'linked.alias')).ino;
  expect(fs.statSync(path.join(w.dir, link)).ino).toBe(ino);
  // The snapshot's tree ends; its image is restored in its place.
  for (const pid of w.pids) process.kill(pid, 'SIGKILL');
  await waitGone(w);
  await fx.restore(w, dir, { newPidns: false });
  expect(linkRemaps(w)).toEqual([]);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

async function waitGone(w: { alivePids(): number[] }): Promise<void> {
  for (let i = 0; i < 100 && w.alivePids().length; i++) await new Promise((r) => setTimeout(r, 50));
  expect(w.alivePids()).toEqual([]);
}
