/**
 * Mappings of deleted files, found by checkpointing real programs: Python's multiprocessing (a sem_open()ed
 * semaphore in /dev/shm, mapped MAP_SHARED by the parent and its forked workers, then unlinked) and a program whose
 * executable was deleted or replaced by a package upgrade. Each comes back from a ghost file: one inode per deleted
 * file, shared by every task that maps it. Workload `ghostmap`: dump -> kill -> restore (and a --leave-running
 * snapshot), then the workload checks itself.
 */
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dump } from '../checkpoint/dump';
import { describeError } from '../util/errors';
import { createHosts, TestBed } from '../scenarios/hosts';
import { findWorkloadPids, startWorkload, Workload } from '../scenarios/workload';
import { entries, WorkloadFixture } from './helpers/workload-fixture';
import { runInHost } from './helpers/run-in-host';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');

const fx = new WorkloadFixture('godwit-ghostmap-');
afterEach(() => fx.cleanup());

test('ghostmap --sem: a deleted semaphore and data file mapped MAP_SHARED by three processes stay one inode, with their content', async () => {
  const w = await fx.start('ghostmap', ['--sem', '1']);
  const { dir } = await fx.cycle(w);
  // One ghost per deleted inode (semaphore, data file), however many processes and mappings hold it.
  expect(fs.readdirSync(dir).filter((f) => /^ghost-file-\d+\.img$/.test(f)).length).toBe(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('ghostmap --sem: a snapshot (--leave-running) of the tree, which then goes on and verifies', async () => {
  const w = await fx.start('ghostmap', ['--sem', '1']);
  const { dir } = await fx.snapshot(w);
  const remaps = entries(dir, 'remap-fpath.img');
  expect(remaps.length).toBeGreaterThanOrEqual(2);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('ghostmap --exe 1: a program whose executable was deleted runs on from it after restore (text, data, RELRO, /proc/self/exe)', async () => {
  await fx.restoredPasses('ghostmap', ['--exe', '1']);
});

test('ghostmap --exe 2: a new file now at the executable\'s path is left alone; the deleted one comes back beside it', async () => {
  const w = await fx.start('ghostmap', ['--exe', '2']);
  await fx.snapshot(w);
  await fx.cycle(w);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  // The ghost's temporary name is gone again.
  expect(fs.readdirSync(w.dir).filter((f) => f.includes('godwit-ghost'))).toEqual([]);
});

test('the ghost limit applies to mapped deleted files: a clear error naming the mapping, the tree left running', async () => {
  const w = await fx.start('ghostmap', ['--exe', '1']);
  const dir = fx.imageDir();
  const err = await dump({ pid: w.pid, dir, ghostLimit: 4096 }).then(() => undefined, (e: unknown) => e);
  expect(describeError(err)).toMatch(
    new RegExp(`pid ${w.pid} (mapping [0-9a-f]+-[0-9a-f]+|executable): deleted file .*exe-copy holds \\d+ bytes, more than the ghost limit of 4096; raise --ghost-limit`),
  );
  expect(fs.existsSync(dir)).toBe(false);
  expect(w.alivePids()).toEqual(w.pids);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

test('a mapping of a removed name of a file that still has another name is refused by name before freezing', async () => {
  const w = await fx.start('ghostmap', ['--linked', '1']);
  const dir = fx.imageDir();
  const err = await dump({ pid: w.pid, dir }).then(() => undefined, (e: unknown) => e);
  expect(describeError(err)).toMatch(
    new RegExp(`pid ${w.pid} mapping 0x[0-9a-f]+-0x[0-9a-f]+ .*/linked \\(deleted\\): mapping of the removed name .*/linked of a file that still has other links`),
  );
  expect(fs.existsSync(dir)).toBe(false);
  expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
});

/**
 * A migration to the other host of a test bed (its own PID, mount and IPC namespaces): the ghosts' content travels
 * in the image stream, the target makes each deleted inode once and every restored task maps it.
 */
describe('migrated to the other test host', () => {
  let bed: TestBed;
  let work: string;
  const children = new Set<ChildProcess>();
  const workloads: Workload[] = [];

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-ghostmap-migrate-'));
    bed = await createHosts();
  }, 60_000);
  afterEach(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    children.clear();
    for (const w of workloads.splice(0)) await w.cleanup().catch(() => undefined);
  });
  afterAll(async () => {
    await bed?.destroy();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  test.each([[['--sem', '1']], [['--exe', '2']]])('ghostmap %j migrates and verifies itself on the target', async (args) => {
    const w = await startWorkload('ghostmap', { args, tmpRoot: work, prefix: ['nsenter', `--net=${bed.source.nsPath('net')}`] });
    workloads.push(w);
    const targetDir = path.join(work, `img-${args.join('')}`);
    const r = await runInHost(bed.source, [process.execPath, CLI, 'migrate', '--pid', String(w.pid), '--to', `root@${bed.target.address}`,
      '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', `${process.execPath} ${CLI}`,
      '--json', '--target-dir', targetDir], children);
    expect({ code: r.code, error: r.error }).toEqual({ code: 0, error: undefined });
    // The restored tree lives in host B's PID namespace: the dumped pids there, other pids here.
    const now = findWorkloadPids(w.dir);
    expect(now.length).toBe(w.pids.length);
    const byNsPid = new Map(now.map((p) => [Number(/^NSpid:.*\s(\d+)\s*$/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))![1]), p]));
    w.setPids(w.pids.map((p) => byNsPid.get(p) ?? now[0]!));
    expect(await w.verify()).toEqual({ pass: true, detail: 'PASS' });
  }, 90_000);
});
