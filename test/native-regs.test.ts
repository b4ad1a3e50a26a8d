/**
 * Per-thread state through ptrace on a real target: syscall restart normalisation, signal masks, pending
 * signals (per thread), xsave/fxsave, rseq, robust list, TLS, decoded into CRIU's field names.
 */
import { Helper, type ThreadRegs } from '../native/helper';
import { decodeFpRegs, decodeGpRegs, decodeSiginfo, decodeUserDesc, decodeXsave, sigmaskToList, xsaveXcr0 } from '../native/regs';
import { startTarget, type Target } from './native-target';

const SIGRTMIN = 34; // glibc's SIGRTMIN (the kernel's 32 + 2 reserved by NPTL)
const SYS_PAUSE = 34n;
const SYS_CLOCK_NANOSLEEP = 230n;

let t: Target;
let h: Helper;
let regs: ThreadRegs[];

beforeAll(async () => {
  t = await startTarget(3, 'sleep');
  h = await Helper.start();
  await h.seize(t.tids());
  regs = await h.threadRegs(t.tids());
});
afterAll(async () => {
  await h?.close();
  await t?.stop();
});

const main = (): ThreadRegs => regs.find((r) => r.tid === t.pid)!;

test('the main thread, stopped in pause(), is normalised to re-enter it', () => {
  const raw = decodeGpRegs(main().regsRaw);
  const norm = decodeGpRegs(main().regs);
  expect(raw.orig_ax).toBe(SYS_PAUSE);
  expect(BigInt.asIntN(64, raw.ax)).toBe(-514n); // -ERESTARTNOHAND
  expect(main().restart).toBe('syscall');
  expect(norm.ax).toBe(SYS_PAUSE);
  expect(norm.ip).toBe(raw.ip - 2n);
  expect(norm.fs_base).toBe(raw.fs_base);
  expect(norm.fs_base).not.toBe(0n);
});

test('threads stopped in nanosleep() get -EINTR (restart_syscall cannot be carried over)', async () => {
  // Under load the workers may all be between two 2 ms sleeps when seized: seize again until one sleeps.
  const sleeping = (rs: ThreadRegs[]): boolean =>
    rs.some((r) => r.tid !== t.pid && BigInt.asIntN(64, decodeGpRegs(r.regsRaw).ax) === -516n);
  let rs = regs;
  for (let i = 0; i < 50 && !sleeping(rs); i++) {
    await h.detach();
    await new Promise((r) => setTimeout(r, 5));
    await h.seize(t.tids());
    rs = await h.threadRegs(t.tids());
  }
  const workers = rs.filter((r) => r.tid !== t.pid);
  expect(workers).toHaveLength(3);
  let asleep = 0;
  for (const w of workers) {
    const raw = decodeGpRegs(w.regsRaw);
    // A worker may be caught between two sleeps, or just as one returned 0 (rarely); most of the time it sleeps.
    if (raw.orig_ax !== SYS_CLOCK_NANOSLEEP || raw.ax === 0n) {
      expect(w.restart).toBe('none');
      continue;
    }
    asleep++;
    expect(BigInt.asIntN(64, raw.ax)).toBe(-516n); // -ERESTART_RESTARTBLOCK
    expect(w.restart).toBe('eintr');
    expect(BigInt.asIntN(64, decodeGpRegs(w.regs).ax)).toBe(-4n);
  }
  expect(asleep).toBeGreaterThan(0);
});

test('blocked and pending signals show: SIGRTMIN+2 queued to the main thread with its value', () => {
  for (const r of regs) expect(sigmaskToList(r.sigmask)).toEqual(expect.arrayContaining([SIGRTMIN + 2, SIGRTMIN + 3]));
  const pending = main().pending.map(decodeSiginfo);
  expect(pending).toEqual([expect.objectContaining({ signo: SIGRTMIN + 2, code: -1, pid: t.pid })]);
  expect(Number(pending[0].value & 0xffffffffn)).toBe(77);
  // The process-wide one is shared, not per thread.
  for (const r of regs) expect(r.pending.map(decodeSiginfo).some((s) => s.signo === SIGRTMIN + 3)).toBe(false);
});

test('xsave state decodes: default MXCSR, xstate header, features within XCR0', () => {
  for (const r of regs) {
    expect(r.xsave?.length).toBe(h.info.xsaveSize);
    const fp = decodeFpRegs(r.xsave!);
    expect(fp.mxcsr & 0xffc0).toBe(0x1f80); // exception masks set, as glibc leaves them
    expect(fp.st_space).toHaveLength(32);
    expect(fp.xmm_space).toHaveLength(64);
    const xs = decodeXsave(r.xsave!, h.info.xsaveComponents);
    expect(xs.xstate_bv & ~h.info.xcr0).toBe(0n);
    expect(xsaveXcr0(r.xsave!)).toBe(h.info.xcr0);
    if (h.info.xcr0 & 4n) expect(xs.ymmh_space).toHaveLength(64);
  }
});

test('rseq, robust list and TLS entries are read per thread', () => {
  const ptrs = new Set<bigint>();
  for (const r of regs) {
    // glibc >= 2.35 registers rseq in every thread; it lives in the thread's TCB, so each differs.
    expect(r.rseq).toBeDefined();
    expect(r.rseq!.abiSize).toBeGreaterThanOrEqual(32);
    ptrs.add(r.rseq!.abiPointer);
    expect(r.robustList).not.toBe(0n);
    expect(r.robustListLen).toBe(24n);
    expect(r.tls).toHaveLength(3);
    expect(r.tls.map(decodeUserDesc).map((d) => d.entry_number)).toEqual([12, 13, 14]);
  }
  expect(ptrs.size).toBe(regs.length);
});
