import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { localEndpoint, sendImageDir } from '../transport/endpoint';
import { closeAllLocal } from '../transport/local';
import { FrozenSource, InDoubtError, MigrateSourceOptions, migrateSource, MigrationFailedError, SourceState } from '../transport/migrate-channel';
import { ImageSender } from '../transport/send';
import type { Channel } from '../transport/wire';
import { describeError } from '../util/errors';
import { corruptingChannel, makeTree, sleep, tempDir } from './transport-helpers';

const fixture = path.resolve(__dirname, 'fixtures', 'migrate-target.js');
let work: string;
let src: string;
let small: string;
let mounted = false;
const pids = new Set<number>();
const targetPids = () => path.join(work, 'target-pids');

beforeAll(() => {
  work = tempDir('migrate');
  src = path.join(work, 'src');
  fs.mkdirSync(src);
  makeTree(src);
  small = path.join(work, 'small');
  fs.mkdirSync(small);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', small]);
  mounted = true;
});

afterEach(async () => {
  await closeAllLocal();
  // Stand-in trees the target fixture started (their pids are in this file even when no answer came back).
  for (const line of fs.existsSync(targetPids()) ? fs.readFileSync(targetPids(), 'utf8').split('\n') : []) {
    if (/^\d+$/.test(line)) pids.add(Number(line));
  }
  fs.rmSync(targetPids(), { force: true });
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  pids.clear();
});

afterAll(() => {
  if (mounted) {
    // A process that still has it open (a receiver being reaped) makes umount EBUSY: detach it lazily then.
    try {
      execFileSync('umount', [small]);
    } catch {
      execFileSync('umount', ['-l', small]);
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

/** /proc state letter of a pid (T stopped, S sleeping, undefined gone or a zombie reaped). */
function state(pid: number): string | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const st = s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    return st === 'Z' ? undefined : st;
  } catch {
    return undefined;
  }
}

async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 100 && state(pid) !== undefined; i++) await sleep(20);
  return state(pid) === undefined;
}

/** A real "frozen" source: a sleeping process stopped with SIGSTOP (the real one is frozen by checkpoint/). */
function frozenSource(): FrozenSource & { pid: number; calls: string[] } {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  const pid = child.pid!;
  pids.add(pid);
  process.kill(pid, 'SIGSTOP');
  const calls: string[] = [];
  return {
    pid,
    calls,
    async resume() {
      calls.push('resume');
      process.kill(pid, 'SIGCONT');
    },
    async kill() {
      calls.push('kill');
      process.kill(pid, 'SIGKILL');
    },
  };
}

function options(dir: string, source: FrozenSource, env: Record<string, string> = {}, extra: Partial<MigrateSourceOptions> = {}) {
  const states: SourceState[] = [];
  const endpoint = localEndpoint({
    command: [process.execPath, fixture],
    env: { ...process.env, GODWIT_TEST_PIDS: targetPids(), ...env },
  });
  const o: MigrateSourceOptions = {
    endpoint, dir, source, onState: (s) => states.push(s),
    produce: (sender: ImageSender) => sender.sendDirectory(src),
    timeouts: { completeMs: 20_000, restoreMs: 20_000, runningMs: 5000 },
    ...extra,
  };
  return { o, states };
}

describe('migrate transaction over a local child process', () => {
  test('success: the target reports its tree running, then the source is killed and the images removed', async () => {
    const dst = path.join(work, 'ok');
    const source = frozenSource();
    const { o, states } = options(dst, source);
    const r = await migrateSource(o);
    const targetPid = r.running.pid as number;
    pids.add(targetPid);
    expect(states).toEqual(['connecting', 'streaming', 'verifying', 'restoring', 'committing', 'done']);
    expect(source.calls).toEqual(['kill']);
    expect(await gone(source.pid)).toBe(true);
    expect(state(targetPid)).toMatch(/[SR]/); // running, not stopped
    expect(r.ready.pid).toBe(targetPid);
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('the target restore fails: the source resumes, the target holds nothing', async () => {
    const dst = path.join(work, 'restore-fail');
    const source = frozenSource();
    const { o, states } = options(dst, source, { GODWIT_TEST_TARGET: 'restore-fail' });
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(err).toBeInstanceOf(MigrationFailedError);
    expect(describeError(err)).toMatch(/the source was resumed as it was[\s\S]*restore of .* failed: no such task/);
    expect(source.calls).toEqual(['resume']);
    expect(state(source.pid)).toMatch(/[SR]/);
    expect(states.at(-1)).toBe('resumed');
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('a timeout while the target restores: the source resumes, the target gives up and cleans up', async () => {
    const dst = path.join(work, 'hang');
    const source = frozenSource();
    const { o } = options(dst, source, { GODWIT_TEST_TARGET: 'restore-hang' }, { timeouts: { restoreMs: 1000 } });
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/timed out after 1 s waiting for local to restore/);
    expect(source.calls).toEqual(['resume']);
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('the connection is lost after commit: in doubt, the source stays frozen (never runs twice)', async () => {
    const dst = path.join(work, 'doubt');
    const source = frozenSource();
    const { o, states } = options(dst, source, { GODWIT_TEST_TARGET: 'die-after-commit' });
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(err).toBeInstanceOf(InDoubtError);
    expect(describeError(err)).toMatch(/may be running the workload.*kept frozen/);
    expect(source.calls).toEqual([]);
    expect(state(source.pid)).toBe('T');
    expect(states.at(-1)).toBe('in-doubt');
  });

  test('the receiver is killed mid-stream: clear error, the source resumes, the target dir is swept', async () => {
    const dst = path.join(work, 'killed');
    const source = frozenSource();
    let victim: Channel & { pid?: number } | undefined;
    const { o } = options(dst, source, {}, {
      produce: async (sender) => {
        victim = sender.channel as Channel & { pid?: number };
        const w = sender.beginFile('pages-1.img');
        const block = Buffer.alloc(1 << 20, 7);
        for (let i = 0; i < 64; i++) {
          if (i === 8) process.kill(victim.pid!, 'SIGKILL');
          if (!w.write(block)) await new Promise((r) => w.once('drain', r));
        }
        await new Promise<void>((resolve, reject) => w.end((e?: Error | null) => (e ? reject(e) : resolve())));
      },
    });
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(err).toBeInstanceOf(MigrationFailedError);
    expect(describeError(err)).toMatch(/the receiver on local was killed by SIGKILL/);
    expect(source.calls).toEqual(['resume']);
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('a corrupted chunk: the sender names it, the source resumes, the target dir is gone', async () => {
    const dst = path.join(work, 'corrupt');
    const source = frozenSource();
    const { o } = options(dst, source);
    const run = o.endpoint.run.bind(o.endpoint);
    o.endpoint.run = async (args) => (args.includes('--migrate') ? corruptingChannel(await run(args), 3 << 20) : run(args));
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/checksum mismatch/);
    expect(source.calls).toEqual(['resume']);
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('the target disk is full (4 MiB tmpfs): the error says so, the source resumes, nothing is left', async () => {
    const dst = path.join(small, 'img');
    const source = frozenSource();
    const { o } = options(dst, source);
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/the target's disk is full/);
    expect(describeError(err)).toMatch(/ENOSPC/);
    expect(source.calls).toEqual(['resume']);
    expect(fs.readdirSync(small)).toEqual([]);
  });

  test('Ctrl-C on the source mid-stream: the source resumes and the target cleans up', async () => {
    const dst = path.join(work, 'ctrlc');
    const source = frozenSource();
    const ac = new AbortController();
    const { o } = options(dst, source, {}, {
      signal: ac.signal,
      produce: async (sender) => {
        await sender.sendFile(path.join(src, 'pages-1.img'), 'pages-1.img');
        ac.abort();
        await sender.sendFile(path.join(src, 'core-1.img'), 'core-1.img');
      },
    });
    let err: unknown;
    await migrateSource(o).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/interrupted/);
    expect(source.calls).toEqual(['resume']);
    expect(fs.existsSync(dst)).toBe(false);
  });

  test('godwit send into a full disk: a clear error and nothing left', async () => {
    let err: unknown;
    await sendImageDir(localEndpoint(), src, path.join(small, 'send')).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/writing "pages-1.img" on .* failed: the target's disk is full/);
    expect(fs.readdirSync(small)).toEqual([]);
  });

  test('godwit send whose receiver is killed (SIGKILL) mid-stream: the sweep removes its leftovers', async () => {
    const dst = path.join(work, 'send-killed');
    const endpoint = localEndpoint();
    const run = endpoint.run.bind(endpoint);
    endpoint.run = async (args) => {
      const ch = await run(args);
      if (!args.includes('--discard')) {
        // Kill it once the directory exists and data has begun to land.
        void (async () => {
          for (let i = 0; i < 500 && !(fs.existsSync(dst) && fs.readdirSync(dst).some((e) => e.startsWith('.godwit-part-'))); i++) await sleep(5);
          process.kill((ch as Channel & { pid: number }).pid, 'SIGKILL');
        })();
      }
      return ch;
    };
    let err: unknown;
    await sendImageDir(endpoint, src, dst, { chunkSize: 64 << 10 }).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/the receiver on local was killed by SIGKILL in the middle of the stream/);
    expect(fs.existsSync(dst)).toBe(false);
  });
});
