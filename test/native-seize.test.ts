/**
 * Seizing, resuming and killing real processes through the real helper: an 8-thread spinning target stops and
 * resumes, a group-stopped one stays stopped, zombies and missing tasks are reported, kill reaps, and a helper
 * that dies leaves nothing traced or stopped.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Helper } from '../native/helper';
import { GodwitError, SysError } from '../util/errors';
import { listTids, sleep, startTarget, taskStatus, type Target } from './native-target';

const targets: Target[] = [];
const helpers: Helper[] = [];

async function target(threads: number, mode: 'spin' | 'sleep'): Promise<Target> {
  const t = await startTarget(threads, mode);
  targets.push(t);
  return t;
}
async function helper(): Promise<Helper> {
  const h = await Helper.start();
  helpers.push(h);
  return h;
}

afterEach(async () => {
  for (const h of helpers.splice(0)) await h.close();
  for (const t of targets.splice(0)) await t.stop();
});

/** Reads the target's per-thread counters (u64 each) through the helper. */
async function counters(h: Helper, t: Target, n: number): Promise<bigint[]> {
  const b = await h.readPagesToBuffer(t.pid, [{ start: BigInt(t.info.counters), length: BigInt(8 * n) }]);
  return Array.from({ length: n }, (_, i) => b.readBigUInt64LE(i * 8));
}

describe('seize and detach', () => {
  test('all 9 threads of a spinning 8-thread process stop, stay stopped, and run again after detach', async () => {
    const t = await target(8, 'spin');
    const h = await helper();
    const tids = t.tids();
    expect(tids).toHaveLength(9);
    const seized = await h.seize(tids);
    expect(seized.map((s) => s.status)).toEqual(tids.map(() => 'stopped'));
    expect(seized.every((s) => s.tgid === t.pid)).toBe(true);
    for (const tid of tids) {
      const st = taskStatus(tid);
      expect(st.tracerPid).toBe(h.pid);
      expect(st.state).toBe('t');
    }
    const before = await counters(h, t, 8);
    await sleep(50);
    expect(await counters(h, t, 8)).toEqual(before);

    const d = await h.detach();
    expect(d.detached.sort((a, b) => a - b)).toEqual(tids);
    await sleep(100);
    for (const tid of tids) expect(taskStatus(tid).tracerPid).toBe(0);
    // Every thread made progress once let go.
    const h2 = await helper();
    const after = await counters(h2, t, 8);
    after.forEach((c, i) => expect(c).toBeGreaterThan(before[i]));
  });

  test('seizing the same tid twice reports already-seized', async () => {
    const t = await target(0, 'sleep');
    const h = await helper();
    await h.seize([t.pid]);
    const again = await h.seize([t.pid]);
    expect(again[0].status).toBe('already-seized');
  });

  test('a process in group stop is reported group-stopped and stays stopped after detach', async () => {
    const t = await target(2, 'sleep');
    process.kill(t.pid, 'SIGSTOP');
    for (let i = 0; i < 100 && taskStatus(t.pid).state !== 'T'; i++) await sleep(10);
    const h = await helper();
    const seized = await h.seize(t.tids());
    expect(seized.map((s) => s.status)).toEqual(['group-stopped', 'group-stopped', 'group-stopped']);
    expect(seized[0].stopSignal).toBe(19);
    await h.detach();
    await sleep(50);
    for (const tid of t.tids()) expect(taskStatus(tid)).toEqual({ state: 'T', tracerPid: 0 });
    process.kill(t.pid, 'SIGCONT');
    for (let i = 0; i < 100 && taskStatus(t.pid).state === 'T'; i++) await sleep(10);
    expect(taskStatus(t.pid).state).not.toBe('T');
  });

  test('a nonexistent pid is a SysError with ESRCH and the pid; with vanished: report it is listed', async () => {
    const h = await helper();
    const missing = 4194303; // above this machine's pid_max: never a live task
    const err = await h.seize([missing]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SysError);
    expect(err).toMatchObject({ code: 'ESRCH', errno: 3, pid: missing, syscall: 'ptrace(PTRACE_SEIZE)' });
    const r = await h.seize([missing], { vanished: 'report' });
    expect(r).toEqual([expect.objectContaining({ tid: missing, status: 'vanished' })]);
  });

  test('a zombie is reported as such and not traced', async () => {
    // sh forks a child that exits at once, then becomes `sleep`, which never reaps it.
    const sh = spawn('sh', ['-c', 'sleep 0 & exec sleep 30'], { stdio: 'ignore' });
    try {
      let zombie = 0;
      for (let i = 0; i < 200 && !zombie; i++) {
        await sleep(10);
        const kids = fs.readFileSync(`/proc/${sh.pid}/task/${sh.pid}/children`, 'utf8').trim();
        if (kids && taskStatus(Number(kids)).state === 'Z') zombie = Number(kids);
      }
      expect(zombie).toBeGreaterThan(0);
      const h = await helper();
      const r = await h.seize([zombie]);
      expect(r[0].status).toBe('zombie');
    } finally {
      sh.kill('SIGKILL');
    }
  });

  test('registers look sane: rip inside an executable mapping, rsp inside the stack or a thread stack', async () => {
    const t = await target(3, 'sleep');
    const h = await helper();
    await h.seize(t.tids());
    const maps = fs
      .readFileSync(`/proc/${t.pid}/maps`, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [range, perms] = l.split(' ');
        const [a, b] = range.split('-').map((x) => BigInt('0x' + x));
        return { a, b, perms };
      });
    const within = (x: bigint, perm: RegExp): boolean => maps.some((m) => x >= m.a && x < m.b && perm.test(m.perms));
    for (const r of await h.threadRegs(t.tids())) {
      const ip = r.regs.readBigUInt64LE(16 * 8);
      const sp = r.regs.readBigUInt64LE(19 * 8);
      expect(within(ip, /^..x/)).toBe(true);
      expect(within(sp, /^rw/)).toBe(true);
    }
  });
});

describe('the helper process', () => {
  test('holds only its own fds once running: stdio, control socket, signalfd, bulk pipe write end', async () => {
    const h = await helper();
    await h.detach(); // any request: the helper then drops its copy of the bulk pipe's read end
    const fds = fs.readdirSync(`/proc/${h.pid}/fd`).map(Number);
    const kinds = fds.filter((fd) => fd > 3).map((fd) => fs.readlinkSync(`/proc/${h.pid}/fd/${fd}`));
    expect(kinds).toHaveLength(2);
    expect(kinds.filter((k) => /signalfd/.test(k))).toHaveLength(1);
    expect(kinds.filter((k) => /^pipe:/.test(k))).toHaveLength(1);
  });
});

describe('kill and failure paths', () => {
  test('kill SIGKILLs the process and reaps every seized thread, leader last', async () => {
    const t = await target(4, 'spin');
    const h = await helper();
    const tids = t.tids();
    await h.seize(tids);
    const reaped = await h.kill([t.pid]);
    expect([...reaped].sort((a, b) => a - b)).toEqual(tids);
    expect(reaped[reaped.length - 1]).toBe(t.pid);
    await t.stop();
    expect(t.child.signalCode).toBe('SIGKILL');
  });

  test('a helper killed while holding a stopped process leaves it running and untraced', async () => {
    const t = await target(8, 'spin');
    const h = await helper();
    const tids = t.tids();
    await h.seize(tids);
    process.kill(h.pid, 'SIGKILL');
    await h.close();
    await sleep(100);
    for (const tid of tids) {
      const st = taskStatus(tid);
      expect(st.tracerPid).toBe(0);
      expect(st.state).not.toMatch(/[tT]/);
    }
  });

  test('a helper SIGKILLed in the middle of a page read leaves the target running and untraced', async () => {
    const t = await target(4, 'spin');
    const h = await helper();
    const tids = t.tids();
    await h.seize(tids);
    let killed = false;
    const reading = h
      .readPages(t.pid, Array.from({ length: 64 }, () => ({ start: BigInt(t.info.mem), length: 4n << 20n })), () => {
        if (!killed) {
          killed = true;
          process.kill(h.pid, 'SIGKILL');
        }
        return sleep(5);
      })
      .catch((e: unknown) => e);
    expect(await reading).toBeInstanceOf(GodwitError);
    expect(killed).toBe(true);
    await sleep(100);
    for (const tid of tids) {
      const st = taskStatus(tid);
      expect(st.tracerPid).toBe(0);
      expect(st.state).not.toMatch(/[tT]/);
    }
  });

  test('closing the control channel mid-read detaches everything and the helper exits', async () => {
    const t = await target(2, 'sleep');
    const h = await helper();
    const tids = t.tids();
    await h.seize(tids);
    // A slow sink keeps the read going while the helper is told to go away.
    const reading = h
      .readPages(t.pid, Array.from({ length: 64 }, () => ({ start: BigInt(t.info.mem), length: 4n << 20n })), () =>
        sleep(20),
      )
      .catch((e: unknown) => e);
    await sleep(100);
    await h.close();
    const err = await reading;
    expect(err).toBeInstanceOf(GodwitError);
    expect((err as Error).message).toMatch(/godwit-helper/);
    await sleep(50);
    for (const tid of tids) {
      const st = taskStatus(tid);
      expect(st.tracerPid).toBe(0);
      expect(st.state).toMatch(/^[RS]$/); // sleeping, or running between two sleeps
    }
    expect(listTids(t.pid)).toEqual(tids);
  });
});
