/**
 * `godwit migrate` end to end between the two hosts of a test bed: the workload and `godwit migrate` run in host A's
 * network namespace (the machine's PID and mount namespaces, so the harness sees the source's pids as they are), the
 * target is host B (its own net, PID, mount, UTS and IPC namespaces), reached over SSH, where `godwit receive
 * --migrate` restores the tree for real. Every workload verifies itself on the target; every fault leaves the
 * source running unharmed (it verifies itself too) and nothing on the target.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHosts, TestBed } from '../scenarios/hosts';
import { findWorkloadPids, startWorkload, Workload, WorkloadName } from '../scenarios/workload';
import { killFirstRestorerOn, nsInode, processesIn, safeRead, threadStates } from './helpers/host-procs';
import { Run, RunEvent, runInHost } from './helpers/run-in-host';

const CLI = path.resolve(__dirname, '..', 'cli', 'main.js');
const RUN_FIXTURE = path.resolve(__dirname, 'fixtures', 'migrate-run.js');
const NODE = process.execPath;

let bed: TestBed;
let work: string;
const workloads: Workload[] = [];
const children = new Set<ChildProcess>();

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'godwit-migrate-test-'));
  bed = await createHosts();
}, 60_000);

afterEach(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
  for (const w of workloads.splice(0)) {
    // A source kept stopped (the in-doubt case) must be able to die: SIGKILL works on stopped tasks too.
    await w.cleanup().catch(() => undefined);
  }
});

afterAll(async () => {
  await bed?.destroy();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function start(name: WorkloadName, args: string[] = []): Promise<Workload> {
  const w = await startWorkload(name, { args, tmpRoot: work, prefix: ['nsenter', `--net=${bed.source.nsPath('net')}`] });
  workloads.push(w);
  return w;
}

type Event = RunEvent;

/** Runs argv in host A's network namespace; `onEvent` sees each JSON line of its stdout as it comes. */
const runInSource = (argv: string[], onEvent?: (e: Event, child: ChildProcess) => void): Promise<Run> =>
  runInHost(bed.source, argv, children, onEvent);

function sshArgs(): string[] {
  return ['--to', `root@${bed.target.address}`, '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath,
    '--godwit-path', `${NODE} ${CLI}`];
}

function migrateCli(w: Workload, extra: string[] = [], onEvent?: (e: Event, child: ChildProcess) => void): Promise<Run> {
  return runInSource([NODE, CLI, 'migrate', '--pid', String(w.pid), ...sshArgs(), '--json', ...extra], onEvent);
}

/** Waits until the target holds no process of ours and `targetDir` is gone; returns what is left. */
async function targetLeftovers(targetDir: string, ms = 20_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = [...processesIn(bed.target), ...(fs.existsSync(targetDir) ? [`directory ${targetDir}: ${fs.readdirSync(targetDir).join(" ")}`] : [])];
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** The source is alive, not stopped, and its whole state checks out (the workload ends after verifying). */
async function expectSourceUnharmed(w: Workload): Promise<void> {
  expect(w.alivePids().sort()).toEqual(w.pids.sort());
  for (const pid of w.pids) for (const st of threadStates(pid)) expect(st).not.toMatch(/[Tt]/);
  const v = await w.verify();
  expect(v.detail).toBe('PASS');
}

/**
 * After a successful migration: the source's processes are gone, the restored ones live in host B. `kept`: the
 * images stay on the target (--keep-images), so only processes are checked for leftovers.
 */
async function expectMigrated(w: Workload, r: Run, targetDir: string, kept = false): Promise<void> {
  expect({ code: r.code, error: r.error, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, error: undefined, stderr: '' });
  const done = r.events.find((e) => e.event === 'done') as { summary: Record<string, number> } | undefined;
  expect(done).toBeDefined();
  expect(done!.summary.downtimeMs).toBeGreaterThan(0);
  expect(done!.summary.wireBytes).toBeGreaterThan(0);
  const sourcePids = w.pids;
  const now = findWorkloadPids(w.dir);
  for (const p of sourcePids) expect(now).not.toContain(p);
  expect(now.length).toBe(sourcePids.length);
  const targetNs = nsInode(bed.target.initPid, 'pid');
  for (const p of now) {
    // In host B's PID namespace, or in a namespace nested in it (--new-pidns).
    const nspid = /^NSpid:\s+(.*)$/m.exec(safeRead(`/proc/${p}/status`))![1]!.trim().split(/\s+/);
    expect(nspid.length).toBeGreaterThanOrEqual(nsInode(p, 'pid') === targetNs ? 2 : 3);
  }
  // Same order as the ready file: the restored pids in the target's namespace are the dumped ones.
  const byNsPid = new Map(now.map((p) => [Number(/^NSpid:.*\s(\d+)\s*$/m.exec(safeRead(`/proc/${p}/status`))![1]), p]));
  w.setPids(sourcePids.map((p) => byNsPid.get(p) ?? now[0]!));
  const v = await w.verify();
  expect(v.detail).toBe('PASS');
  if (kept) expect(fs.existsSync(path.join(targetDir, 'godwit-manifest.json'))).toBe(true);
  expect(await targetLeftovers(kept ? path.join(work, 'no-such-dir') : targetDir)).toEqual([]);
}

describe('godwit migrate between two test hosts', () => {
  const cases: Array<[WorkloadName, string[], string[]]> = [
    ['mem-counter', ['--mib', '32'], []],
    ['mem-counter', ['--mib', '32', '--dirty-pages', '64'], ['--pre-copy']],
    ['threads', [], []],
    ['pipe-tree', [], ['--new-pidns']],
    ['signals', [], []],
    ['timers', [], []],
    ['files', [], []],
    ['unix-sockets', [], []],
    ['eventfd-epoll', [], []],
  ];
  test.each(cases)('%s migrates and verifies itself on the target %j %j', async (name, args, extra) => {
    const w = await start(name, args);
    const targetDir = path.join(work, `img-${name}`);
    if (name === 'pipe-tree') {
      // The bed's hosts share one filesystem, so the workload's FIFO would be one kernel pipe on both sides while the
      // source is frozen (its 777 bytes in flight would be seen twice). Give host B a FIFO of its own at that path,
      // as a second machine has.
      const own = path.join(work, 'host-b-fifo');
      await bed.target.execOk('sh', ['-c', `mkfifo -m 600 '${own}' && mount --bind '${own}' '${path.join(w.dir, 'fifo')}'`]);
    }
    const r = await migrateCli(w, ['--target-dir', targetDir, ...extra]);
    await expectMigrated(w, r, targetDir);
    // The event stream: every step with its time, the dump's steps nested, progress, and the states in order.
    const steps = r.events.filter((e) => e.event === 'step' && e.status === 'done').map((e) => e.step);
    expect(steps).toEqual(expect.arrayContaining(['freeze', 'dump pages', 'write manifest', 'checkpoint and stream',
      'target: restore, held stopped', 'commit: the target runs it, the source tree ends']));
    const states = r.events.filter((e) => e.event === 'state').map((e) => e.state);
    expect(states).toEqual(['connecting', 'streaming', 'verifying', 'restoring', 'committing', 'done']);
  }, 60_000);
});

/**
 * Migrates a mem-counter while the target's restorer is SIGKILLed as soon as it shows up (the restore has begun):
 * the source must continue unharmed and the target hold nothing.
 */
async function restoreKilledHalfWay(dirName: string, extra: string[]): Promise<void> {
  // On a loaded machine the killer may find the restorer only once the source has said commit, when it has resumed
  // the tree and only reaps it: then the migration rightly succeeds, and that attempt tests nothing: again.
  for (let attempt = 1; ; attempt++) {
    const w = await start('mem-counter', ['--mib', '128']);
    const targetDir = path.join(work, `${dirName}-${attempt}`);
    let watch: ReturnType<typeof killFirstRestorerOn> | undefined;
    let committing: number | undefined;
    const r = await migrateCli(w, ['--target-dir', targetDir, ...extra], (e) => {
      // The restorer starts once the files are checked: the watch starts with the stream (the receiver runs by then),
      // so it is already polling when a fast restore begins; it kills the first one it sees.
      if (e.event === 'state' && e.state === 'committing') committing ??= Date.now();
      if (e.event !== 'state' || e.state !== 'streaming') return;
      watch ??= killFirstRestorerOn(bed.target);
    }).finally(() => watch?.stop());
    const killed = await watch?.killed;
    const killedAt = await watch?.killedAt;
    if (process.env.GODWIT_TEST_DEBUG) process.stderr.write(`killed: ${killed} at ${killedAt}, committing seen at ${committing}\n`);
    expect(killed).toBeDefined();
    if (r.code === 0 && committing !== undefined && killedAt !== undefined && killedAt > committing && attempt < 3) {
      w.setPids(findWorkloadPids(w.dir)); // it runs on the target now: ended there
      await w.cleanup();
      continue;
    }
    if (r.code !== 1) throw new Error(`the migration went through (exit ${r.code}) though the target's ${killed} was killed`);
    expect(r.error).toMatch(/failed; the source was resumed as it was/);
    expect(r.error).toMatch(/restor/);
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
    return;
  }
}

describe('migrate faults: the source continues unharmed, the target holds nothing', () => {
  test('the SSH link cut mid-stream', async () => {
    const w = await start('mem-counter', ['--mib', '192']);
    const targetDir = path.join(work, 'img-cut');
    let cut: Promise<void> | undefined;
    // The stream is held at 4 MiB until the link is down: cutting on a progress event raced a fast stream to its end.
    const args = { pid: w.pid, host: bed.target.address, identity: bed.clientKeyPath, knownHosts: bed.knownHostsPath,
      godwitPath: `${NODE} ${CLI}`, targetDir, fault: 'stall', corruptAt: 4 << 20, keepaliveMs: 300, idleMs: 3000 };
    try {
      const r = await runInSource([NODE, RUN_FIXTURE, JSON.stringify(args)], (e) => {
        if (!cut && e.event === 'stalled') cut = bed.target.setLinkUp(false);
      });
      expect(cut).toBeDefined();
      expect(r.code).toBe(1);
      expect(r.error).toMatch(/failed; the source was resumed as it was/);
      expect(r.error).toMatch(/connection lost|stopped answering keepalives/);
    } finally {
      await cut;
      await bed.target.setLinkUp(true);
    }
    await expectSourceUnharmed(w);
    // The target notices on its own (nothing came for 3 s) and removes what it received.
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 90_000);

  test('Ctrl-C on the source mid-stream', async () => {
    const w = await start('mem-counter', ['--mib', '128']);
    const targetDir = path.join(work, 'img-ctrlc');
    let interrupted = false;
    const r = await migrateCli(w, ['--target-dir', targetDir], (e, child) => {
      // At the freeze's end, while the pages are still to be read and streamed: a trigger on a progress event
      // raced a fast stream to its end.
      if (!interrupted && e.event === 'step' && e.step === 'freeze' && e.status === 'done') {
        interrupted = true;
        child.kill('SIGINT'); // setpriv and nsenter exec in place: this is godwit migrate itself
      }
    });
    expect(interrupted).toBe(true);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/failed; the source was resumed as it was[\s\S]*interrupted/);
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 60_000);

  test("the target's restore killed half-way", () => restoreKilledHalfWay('img-killed', []), 60_000);

  test('a corrupted chunk', async () => {
    const w = await start('mem-counter', ['--mib', '32']);
    const targetDir = path.join(work, 'img-corrupt');
    const args = { pid: w.pid, host: bed.target.address, identity: bed.clientKeyPath, knownHosts: bed.knownHostsPath,
      godwitPath: `${NODE} ${CLI}`, targetDir, fault: 'corrupt', corruptAt: 3 << 20 };
    const r = await runInSource([NODE, RUN_FIXTURE, JSON.stringify(args)]);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/failed; the source was resumed as it was/);
    expect(r.error).toMatch(/checksum/);
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 60_000);

  test("the target's disk full", async () => {
    const w = await start('mem-counter', ['--mib', '64']);
    const small = path.join(work, 'small-disk');
    fs.mkdirSync(small);
    // 8 MiB inside host B only: the images (about 34 MB) do not fit.
    await bed.target.mountTmpfs(small, 8 << 20);
    const targetDir = path.join(small, 'img');
    const r = await migrateCli(w, ['--target-dir', targetDir]);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/failed; the source was resumed as it was/);
    expect(r.error).toMatch(/disk is full|ENOSPC/);
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
    expect((await bed.target.execOk('ls', ['-A', small])).stdout).toBe('');
  }, 60_000);

  test('lost after the commit: in doubt, the target runs it and the source stays stopped (never both)', async () => {
    const w = await start('mem-counter', ['--mib', '16']);
    const targetDir = path.join(work, 'img-doubt');
    const args = { pid: w.pid, host: bed.target.address, identity: bed.clientKeyPath, knownHosts: bed.knownHostsPath,
      godwitPath: `${NODE} ${CLI}`, targetDir, fault: 'drop-after-ready', runningMs: 3000 };
    const r = await runInSource([NODE, RUN_FIXTURE, JSON.stringify(args)]);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/may be running the workload/);
    expect(r.error).toMatch(/are stopped \(SIGSTOP\)/);
    // The source: alive but stopped, every thread, after the migrate process has exited.
    expect(w.alivePids()).toEqual(w.pids);
    for (const st of threadStates(w.pid)) expect(st).toBe('T');
    // The target runs it (the restored copy answers the verify request; the stopped source cannot).
    const sourcePid = w.pid;
    const restored = findWorkloadPids(w.dir).filter((p) => p !== sourcePid);
    expect(restored.length).toBe(1);
    w.setPids(restored);
    const v = await w.verify();
    expect(v.detail).toBe('PASS');
    w.setPids([sourcePid]); // cleanup() then kills the stopped source
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 60_000);
});

describe('migrate: what the dump cannot take', () => {
  test('shared-mem: migrates if the dump supports it, else refused before freezing with the source unharmed', async () => {
    const w = await start('shared-mem');
    const targetDir = path.join(work, 'img-shared-mem');
    const r = await migrateCli(w, ['--target-dir', targetDir]);
    if (r.code === 0) {
      await expectMigrated(w, r, targetDir);
      return;
    }
    expect(r.error).toMatch(/the source was resumed as it was[\s\S]*nothing was frozen[\s\S]*shared/);
    expect(r.events.some((e) => e.event === 'step' && e.step === 'freeze')).toBe(false);
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 60_000);
});

describe('migrate: target problems found before anything is frozen', () => {
  test('no godwit on the target: a clear error, the source never stopped', async () => {
    const w = await start('signals');
    const r = await runInSource([NODE, CLI, 'migrate', '--pid', String(w.pid), '--to', `root@${bed.target.address}`,
      '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', '/nonexistent/godwit', '--json']);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/godwit: command not found on root@198\.18\.\d+\.2 — install godwit on it/);
    expect(r.events.some((e) => e.event === 'step' && e.step === 'freeze')).toBe(false);
    await expectSourceUnharmed(w);
  }, 30_000);

  test('an old godwit on the target (no such command): a clear error', async () => {
    const w = await start('signals');
    const r = await runInSource([NODE, CLI, 'migrate', '--pid', String(w.pid), '--to', `root@${bed.target.address}`,
      '--identity', bed.clientKeyPath, '--known-hosts', bed.knownHostsPath, '--godwit-path', `${NODE} ${CLI} receive-v0`, '--json']);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/godwit on root@198\.18\.\d+\.2 does not understand `receive` .* upgrade it/);
    await expectSourceUnharmed(w);
  }, 30_000);
});

/** Events up to the dump's freeze (the tree ran meanwhile), and whether the freeze started at all. */
function beforeFreeze(r: Run): { events: Event[]; froze: boolean } {
  const i = r.events.findIndex((e) => e.event === 'step' && e.step === 'freeze');
  return { events: i < 0 ? r.events : r.events.slice(0, i), froze: i >= 0 };
}

interface PreCopySent {
  rounds: { round: number; pageBytes: number; imageBytes: number }[];
  streamedBytes: number;
  afterFreezeBytes: number;
  afterFreezePageBytes: number;
}

/** The streamed pre-copy's figures: every round on the target before the freeze, its bytes in the summary. */
function expectStreamedRounds(r: Run): { sent: PreCopySent; pageBytes: number } {
  const done = r.events.find((e) => e.event === 'done') as { summary: { preCopy?: PreCopySent; pageBytes: number } };
  const sent = done.summary.preCopy!;
  expect(sent).toBeDefined();
  expect(sent.rounds.length).toBeGreaterThanOrEqual(1);
  const { events, froze } = beforeFreeze(r);
  expect(froze).toBe(true);
  const roundEvents = events.filter((e) => e.event === 'pre-copy round');
  expect(roundEvents.map((e) => e.round)).toEqual(sent.rounds.map((x) => x.round));
  // When each round was reported, its files had gone into the stream: the image bytes sent so far cover it.
  let cumulative = 0;
  roundEvents.forEach((e, i) => {
    cumulative += sent.rounds[i]!.imageBytes;
    expect(Number(e.rawBytes)).toBeGreaterThanOrEqual(cumulative);
  });
  expect(sent.streamedBytes).toBe(cumulative);
  return { sent, pageBytes: done.summary.pageBytes };
}

/** The target's memory reserve as the migration's summary reports it. */
function targetReserveOf(r: Run): { bytes: number; heldBytes: number; atFreeze?: number } | undefined {
  const done = r.events.find((e) => e.event === 'done') as unknown as {
    summary: { targetReserve?: { bytes: number; heldBytes: number }; targetReservedAtFreeze?: number };
  };
  const t = done.summary.targetReserve;
  return t && { ...t, ...(done.summary.targetReservedAtFreeze !== undefined ? { atFreeze: done.summary.targetReservedAtFreeze } : {}) };
}

describe('migrate without pre-copy: the target\'s memory reserve', () => {
  test('the source freezes only once the target holds the memory for the restore (Reserved)', async () => {
    const w = await start('mem-counter', ['--mib', '96']);
    const targetDir = path.join(work, 'img-plain-reserve');
    const r = await migrateCli(w, ['--target-dir', targetDir]);
    await expectMigrated(w, r, targetDir);
    const done = r.events.filter((e) => e.event === 'step' && e.status === 'done').map((e) => e.step);
    expect(done.indexOf('ready to freeze')).toBeGreaterThanOrEqual(0);
    expect(done.indexOf('ready to freeze')).toBeLessThan(done.indexOf('freeze'));
    const reserve = targetReserveOf(r);
    expect(reserve).toBeDefined();
    expect(reserve!.bytes).toBeGreaterThanOrEqual(96 << 20);
    // The source waited for it: the target had said it held all of it before the freeze, and the whole reserve
    // was faulted in when the restore began.
    expect(reserve!.atFreeze).toBe(reserve!.bytes);
    expect(reserve!.heldBytes).toBe(reserve!.bytes);
  }, 60_000);
});

describe('migrate --pre-copy: the rounds streamed to the target while the tree runs', () => {
  test('mem-counter: round 1 carries the memory before the freeze, the frozen window almost nothing', async () => {
    const w = await start('mem-counter', ['--mib', '48']);
    const targetDir = path.join(work, 'img-precopy-idle');
    const r = await migrateCli(w, ['--target-dir', targetDir, '--pre-copy']);
    await expectMigrated(w, r, targetDir);
    const { sent, pageBytes } = expectStreamedRounds(r);
    expect(sent.rounds[0]!.pageBytes).toBeGreaterThanOrEqual(48 << 20);
    // After the freeze: the counter's page, stacks and the like; the 48 MiB area went before.
    expect(sent.afterFreezePageBytes).toBeLessThan(2 << 20);
    expect(sent.afterFreezePageBytes).toBeLessThan(pageBytes / 20);
    expect(sent.afterFreezeBytes).toBeLessThan(sent.streamedBytes / 10);
    // The target held the tree's memory (as the source measured it before the dump) for the restore, and let it go
    // before it (expectMigrated: no process of ours is left on host B).
    const reserve = targetReserveOf(r);
    expect(reserve).toBeDefined();
    expect(reserve!.bytes).toBeGreaterThanOrEqual(48 << 20);
    expect(reserve!.heldBytes).toBeLessThanOrEqual(reserve!.bytes);
  }, 60_000);

  test('a workload that keeps writing memory: only its dirty pages travel after the freeze; the kept chain restores here, and a broken chain is a clear error', async () => {
    // 1024 pages rewritten at 20,000 pages/s: every round (and the freeze) finds them written again.
    const w = await start('mem-counter', ['--mib', '48', '--dirty-pages', '1024', '--dirty-rate', '20000']);
    const targetDir = path.join(work, 'img-precopy-dirty');
    const logBefore = fs.readFileSync(path.join(w.dir, 'log'));
    try {
      const r = await migrateCli(w, ['--target-dir', targetDir, '--pre-copy', '--keep-images']);
      await expectMigrated(w, r, targetDir, true);
      const { sent, pageBytes } = expectStreamedRounds(r);
      expect(sent.rounds[0]!.pageBytes).toBeGreaterThanOrEqual(48 << 20);
      // The dirty set (4 MiB) plus a little (counter page, stacks): not the area.
      expect(sent.afterFreezePageBytes).toBeGreaterThan(0);
      expect(sent.afterFreezePageBytes).toBeLessThanOrEqual((1024 * 4096) + (2 << 20));
      expect(sent.afterFreezePageBytes).toBeLessThan(pageBytes / 4);

      // What the target received: the rounds as a pre-dump chain the receiver linked itself.
      const k = sent.rounds.length;
      expect(fs.readlinkSync(path.join(targetDir, 'parent'))).toBe(`pre-${k}`);
      for (let i = 2; i <= k; i++) expect(fs.readlinkSync(path.join(targetDir, `pre-${i}`, 'parent'))).toBe(`../pre-${i - 1}`);
      expect(fs.existsSync(path.join(targetDir, 'pre-1', 'parent'))).toBe(false);
      // `godwit verify` checks the whole chain, each image against its own manifest.
      const verified = spawnSync(NODE, [CLI, 'verify', targetDir], { encoding: 'utf8' });
      expect({ status: verified.status, out: verified.stdout + verified.stderr }).toEqual({ status: 0, out: expect.stringMatching(/: OK: /) });

      // `godwit restore` of the chain (here, in a new PID namespace): the state at the freeze, every page its stamp.
      fs.rmSync(path.join(w.dir, 'result'), { force: true });
      fs.rmSync(path.join(w.dir, 'go'), { force: true });
      fs.writeFileSync(path.join(w.dir, 'log'), logBefore);
      const restoreCli = (dir: string) => new Promise<{ code: number | null; out: string }>((resolve) => {
        const c = spawn(NODE, [CLI, 'restore', '--dir', dir, '--new-pidns', '--detach', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
        children.add(c);
        let out = '';
        c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
        c.on('close', (code) => {
          children.delete(c);
          resolve({ code, out });
        });
      });
      const ok = await restoreCli(targetDir);
      expect({ code: ok.code, out: ok.code === 0 ? '' : ok.out }).toEqual({ code: 0, out: '' });
      const pids = findWorkloadPids(w.dir);
      expect(pids.length).toBe(1);
      w.setPids(pids);
      expect((await w.verify()).detail).toBe('PASS');
      expect(findWorkloadPids(w.dir)).toEqual([]);
      fs.writeFileSync(path.join(w.dir, 'log'), logBefore);

      // `godwit convert --to criu` of the chain: every round in CRIU's plain layout, linked as before; it restores.
      const plain = path.join(work, 'img-precopy-plain');
      const conv = spawnSync(NODE, [CLI, 'convert', targetDir, '--to', 'criu', '--out', plain, '--json'], { encoding: 'utf8' });
      expect({ status: conv.status, err: conv.stderr }).toEqual({ status: 0, err: '' });
      expect((JSON.parse(conv.stdout) as { rounds: unknown[] }).rounds.length).toBe(k);
      expect(fs.readlinkSync(path.join(plain, 'parent'))).toBe(`pre-${k}`);
      for (let i = 1; i <= k; i++) {
        const pagesFiles = fs.readdirSync(path.join(plain, `pre-${i}`)).filter((f) => /^pages-\d+\.(img|gwz)$/.test(f));
        expect(pagesFiles.length).toBeGreaterThan(0);
        expect(pagesFiles.every((f) => f.endsWith('.img'))).toBe(true);
        if (i > 1) expect(fs.readlinkSync(path.join(plain, `pre-${i}`, 'parent'))).toBe(`../pre-${i - 1}`);
      }
      fs.rmSync(path.join(w.dir, 'result'), { force: true });
      fs.rmSync(path.join(w.dir, 'go'), { force: true });
      const okPlain = await restoreCli(plain);
      expect({ code: okPlain.code, out: okPlain.code === 0 ? '' : okPlain.out }).toEqual({ code: 0, out: '' });
      w.setPids(findWorkloadPids(w.dir));
      expect((await w.verify()).detail).toBe('PASS');
      fs.writeFileSync(path.join(w.dir, 'log'), logBefore);
      // And back in place: every round's pages packed again, the chain still whole for `godwit verify`.
      expect(spawnSync(NODE, [CLI, 'convert', plain, '--to', 'godwit'], { encoding: 'utf8' }).status).toBe(0);
      for (let i = 1; i <= k; i++) expect(fs.readdirSync(path.join(plain, `pre-${i}`)).some((f) => f.endsWith('.img') && f.startsWith('pages-'))).toBe(false);
      const reverified = spawnSync(NODE, [CLI, 'verify', plain], { encoding: 'utf8' });
      expect({ status: reverified.status, out: reverified.stdout + reverified.stderr }).toEqual({ status: 0, out: expect.stringMatching(/: OK: /) });
      fs.rmSync(plain, { recursive: true, force: true });

      // A parent's pages file missing: its manifest names it.
      const pages = path.join(targetDir, 'pre-1', 'pages-1.gwz');
      const aside = path.join(work, 'pre-1-pages.gwz');
      fs.renameSync(pages, aside);
      let bad = await restoreCli(targetDir);
      expect(bad.code).toBe(1);
      expect(bad.out).toMatch(/pre-1 \(parent image\): pages-1\.gwz is listed in the manifest but missing/);
      // The same in a chain without godwit manifests (as CRIU writes them): found when its pages are needed.
      const manifest = path.join(targetDir, 'pre-1', 'godwit-manifest.json');
      fs.renameSync(manifest, `${aside}.json`);
      bad = await restoreCli(targetDir);
      expect(bad.code).toBe(1);
      expect(bad.out).toMatch(/neither \S*pre-1\/pages-1\.img nor \S*pre-1\/pages-1\.gwz exists/);
      fs.renameSync(aside, pages);
      fs.renameSync(`${aside}.json`, manifest);
      // The link to the parent gone.
      fs.unlinkSync(path.join(targetDir, 'parent'));
      bad = await restoreCli(targetDir);
      expect(bad.code).toBe(1);
      expect(bad.out).toMatch(/marks pages 0x[0-9a-f]+-0x[0-9a-f]+ as in the parent image, but \S+ has no `parent` link/);
      // Nothing of the failed restores runs.
      expect(findWorkloadPids(w.dir)).toEqual([]);
    } finally {
      fs.rmSync(targetDir, { recursive: true, force: true });
    }
  }, 120_000);

  test('the SSH link cut during a round: the source continues, no round is left on the target', async () => {
    const w = await start('mem-counter', ['--mib', '192']);
    const targetDir = path.join(work, 'img-precopy-cut');
    let cut: Promise<void> | undefined;
    // The stream is held at 4 MiB (inside round 1's pages: the tree runs) until the link is down.
    const args = { pid: w.pid, host: bed.target.address, identity: bed.clientKeyPath, knownHosts: bed.knownHostsPath,
      godwitPath: `${NODE} ${CLI}`, targetDir, fault: 'stall', corruptAt: 4 << 20, keepaliveMs: 300, idleMs: 3000, preCopy: true };
    try {
      const r = await runInSource([NODE, RUN_FIXTURE, JSON.stringify(args)], (e) => {
        if (!cut && e.event === 'stalled') cut = bed.target.setLinkUp(false);
      });
      expect(cut).toBeDefined();
      expect(r.events.some((e) => e.event === 'step' && e.step === 'pre-copy' && e.status === 'start')).toBe(true);
      expect(beforeFreeze(r).froze).toBe(false);
      expect(r.code).toBe(1);
      expect(r.error).toMatch(/failed; the source was resumed as it was/);
      expect(r.error).toMatch(/connection lost|stopped answering keepalives/);
    } finally {
      await cut;
      await bed.target.setLinkUp(true);
    }
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 90_000);

  test("the target's restore of the chain killed half-way: the source continues, the rounds are removed", () =>
    restoreKilledHalfWay('img-precopy-killed', ['--pre-copy']), 60_000);

  test('Ctrl-C during a round: the source continues untracked, the target removes the rounds', async () => {
    const w = await start('mem-counter', ['--mib', '128']);
    const targetDir = path.join(work, 'img-precopy-ctrlc');
    let interrupted = false;
    const r = await migrateCli(w, ['--target-dir', targetDir, '--pre-copy'], (e, child) => {
      // As the rounds start: round 1 copies and sends 128 MiB (hundreds of ms on any machine) before a freeze.
      if (!interrupted && e.event === 'step' && e.step === 'pre-copy' && e.status === 'start') {
        interrupted = true;
        child.kill('SIGINT');
      }
    });
    expect(interrupted).toBe(true);
    expect(beforeFreeze(r).froze).toBe(false);
    expect(r.code).toBe(1);
    expect(r.error).toMatch(/failed; the source was resumed as it was[\s\S]*interrupted/);
    // Write tracking ended with the migration: no userfaultfd left in the workload, nothing write-protected.
    const links = fs.readdirSync(`/proc/${w.pid}/fd`).map((f) => {
      try {
        return fs.readlinkSync(`/proc/${w.pid}/fd/${f}`);
      } catch {
        return '';
      }
    });
    expect(links.filter((l) => l.includes('userfaultfd'))).toEqual([]);
    expect(safeRead(`/proc/${w.pid}/smaps`).match(/^VmFlags:.*\buw\b.*$/gm) ?? []).toEqual([]);
    await expectSourceUnharmed(w);
    expect(await targetLeftovers(targetDir)).toEqual([]);
  }, 60_000);
});
