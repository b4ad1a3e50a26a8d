/**
 * Per-process state through injected syscalls (DumpProcess) on a real target: what it installed comes back
 * (dispositions, timers, sigaltstack, clear-tid address, shared pending signals, rlimits), and the target is left
 * exactly as it was: same maps, registers, masks, dispositions, and it runs on normally.
 */
import * as fs from 'node:fs';
import { Helper, type ProcessState } from '../native/helper';
import { decodeSiginfo } from '../native/regs';
import { SysError } from '../util/errors';
import { sleep, startTarget, taskStatus, type Target } from './native-target';

const SIGRTMIN = 34;
const SA_SIGINFO = 4n;
const SA_RESTART = 0x10000000n;
const SS_DISABLE = 2;

let t: Target;
let h: Helper;
let ps: ProcessState;
let before: { maps: string; regs: Buffer[]; masks: bigint[]; xsave: (Buffer | undefined)[] };

const timerIds = (pid: number): number[] =>
  [...fs.readFileSync(`/proc/${pid}/timers`, 'utf8').matchAll(/^ID: (\d+)$/gm)].map((m) => Number(m[1]));

beforeAll(async () => {
  t = await startTarget(3, 'sleep');
  h = await Helper.start();
  await h.seize(t.tids());
  const regs = await h.threadRegs(t.tids());
  before = {
    maps: fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8'),
    regs: regs.map((r) => r.regsRaw),
    masks: regs.map((r) => r.sigmask),
    xsave: regs.map((r) => r.xsave),
  };
  ps = await h.dumpProcess(t.pid, t.tids(), timerIds(t.pid));
});
afterAll(async () => {
  await h?.close();
  await t?.stop();
});

const action = (sig: number) => ps.sigactions.find((a) => a.sig === sig)!;

test('signal dispositions are the ones the target installed', () => {
  expect(ps.sigactions.map((a) => a.sig)).toEqual(
    Array.from({ length: 64 }, (_, i) => i + 1).filter((s) => s !== 9 && s !== 19),
  );
  const usr1 = action(10);
  expect(usr1.handler).toBe(BigInt(t.info.usr1));
  expect(usr1.flags & (SA_SIGINFO | SA_RESTART)).toBe(SA_SIGINFO | SA_RESTART);
  expect(usr1.mask).toBe(1n << 11n); // SIGUSR2
  expect(usr1.restorer).not.toBe(0n);
  expect(action(12).handler).toBe(1n); // SIGUSR2: SIG_IGN
  expect(action(5).handler).toBe(1n); // SIGTRAP: still SIG_IGN after all the injected calls
  expect(action(14).handler).toBe(BigInt(t.info.alrm));
  expect(action(15)).toEqual({ sig: 15, handler: 0n, flags: 0n, restorer: 0n, mask: 0n });
});

test('interval and POSIX timers', () => {
  const real = ps.itimers.find((i) => i.which === 0)!;
  expect(real.value.sec).toBeGreaterThan(900n);
  expect(real.value.sec).toBeLessThanOrEqual(1000n);
  expect(ps.itimers.filter((i) => i.which !== 0).every((i) => i.value.sec === 0n && i.value.usec === 0n)).toBe(true);
  expect(ps.posixTimers).toHaveLength(1);
  expect(ps.posixTimers[0].interval).toEqual({ sec: 7n, nsec: 0n });
  expect(ps.posixTimers[0].value.sec).toBeGreaterThan(400n);
  expect(ps.posixTimers[0].overrun).toBe(0);
});

test('per thread: sigaltstack of the main thread, clear-tid addresses, parent-death signal', () => {
  expect(ps.threads.map((x) => x.tid)).toEqual(t.tids());
  const main = ps.threads.find((x) => x.tid === t.pid)!;
  expect(main.altstack).toEqual({ sp: BigInt(t.info.altstack), flags: 0, size: BigInt(t.info.altstackSize) });
  for (const w of ps.threads.filter((x) => x.tid !== t.pid)) expect(w.altstack.flags).toBe(SS_DISABLE);
  const tidAddrs = new Set(ps.threads.map((x) => x.clearTidAddress));
  expect(tidAddrs.size).toBe(ps.threads.length);
  expect(ps.threads.every((x) => x.pdeathsig === 0)).toBe(true);
});

test('process-wide: dumpable, subreaper, shared pending signal with its value, rlimits', () => {
  expect(ps.dumpable).toBe(1);
  expect(ps.childSubreaper).toBe(0);
  const shared = ps.sharedPending.map(decodeSiginfo);
  expect(shared).toEqual([expect.objectContaining({ signo: SIGRTMIN + 3, pid: t.pid })]);
  expect(Number(shared[0].value & 0xffffffffn)).toBe(4242);
  const nofile = /^Max open files\s+(\d+)\s+(\d+)/m.exec(fs.readFileSync(`/proc/${t.pid}/limits`, 'utf8'))!;
  expect(ps.rlimits.find((l) => l.resource === 7)).toEqual({ resource: 7, cur: BigInt(nofile[1]), max: BigInt(nofile[2]) });
  expect(ps.injectedSyscalls).toBeGreaterThan(10);
});

test('the target is left exactly as it was: maps, registers, masks, xsave', async () => {
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).toBe(before.maps);
  const regs = await h.threadRegs(t.tids());
  expect(regs.map((r) => r.regsRaw)).toEqual(before.regs);
  expect(regs.map((r) => r.sigmask)).toEqual(before.masks);
  expect(regs.map((r) => r.xsave)).toEqual(before.xsave);
});

test('errors: a thread that is not seized is ESRCH naming it', async () => {
  const other = await startTarget(0, 'sleep');
  try {
    const err = await h.dumpProcess(other.pid, [other.pid]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SysError);
    expect(err).toMatchObject({ code: 'ESRCH', pid: other.pid });
  } finally {
    await other.stop();
  }
});

test('after detach the target runs on: handles SIGUSR1 and its threads make progress', async () => {
  const counters = async (hh: Helper): Promise<bigint[]> => {
    const b = await hh.readPagesToBuffer(t.pid, [{ start: BigInt(t.info.counters), length: 24n }]);
    return [0, 1, 2].map((i) => b.readBigUInt64LE(i * 8));
  };
  const c0 = await counters(h);
  await h.detach();
  process.kill(t.pid, 'SIGUSR1');
  await sleep(100);
  expect(taskStatus(t.pid).state).toMatch(/[RS]/);
  const h2 = await Helper.start();
  try {
    const c1 = await counters(h2);
    c1.forEach((c, i) => expect(c).toBeGreaterThan(c0[i]));
  } finally {
    await h2.close();
  }
});

test('a group-stopped process can be dumped and stays stopped', async () => {
  const g = await startTarget(1, 'sleep');
  const hg = await Helper.start();
  try {
    process.kill(g.pid, 'SIGSTOP');
    for (let i = 0; i < 100 && taskStatus(g.pid).state !== 'T'; i++) await sleep(10);
    await hg.seize(g.tids());
    const s = await hg.dumpProcess(g.pid, g.tids(), timerIds(g.pid));
    expect(s.sigactions.find((a) => a.sig === 10)!.handler).toBe(BigInt(g.info.usr1));
    await hg.detach();
    await sleep(50);
    for (const tid of g.tids()) expect(taskStatus(tid)).toEqual({ state: 'T', tracerPid: 0 });
  } finally {
    await hg.close();
    await g.stop();
  }
});
