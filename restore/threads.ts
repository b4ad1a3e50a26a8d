/**
 * Per-thread state: robust futex list, clear-child-tid address, rseq, sigaltstack, then (last) registers,
 * xsave and the signal mask. The trampoline goes before the main thread's registers are set: the munmap runs
 * single-stepped over a `syscall` found in the restored [vdso], so no fault and no leftover code page.
 */
import { GodwitError } from '../util/errors';
import { RestoreContext } from './context';
import { Msg } from './image-files';
import { TaskImage } from './load';
import { TRAMPOLINE_SIZE, Vma, VMA } from './memory';
import { Op } from './restorer';
import { Batch, NR, runBatch } from './syscalls';

const SS_DISABLE = 2;
const PR_SET_PDEATHSIG = 1;
const PR_SET_NAME = 15;
const REG_NAMES = 'r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss fs_base gs_base ds es fs gs'.split(' ');
/** Image xsave fields per feature bit (CRIU's user_x86_xsave_entry), and their element size in bytes. */
const XSAVE_PARTS: [bit: number, field: string, elem: 4 | 8][] = [
  [2, 'ymmh_space', 4], [3, 'bndreg_state', 8], [4, 'bndcsr_state', 8], [5, 'opmask_reg', 8], [6, 'zmm_upper', 8],
  [7, 'hi16_zmm', 8], [9, 'pkru', 4],
];

/** This host's xsave layout: enabled features (XCR0) and each component's standard-format offset and size. */
export interface HostXsave {
  xcr0: bigint;
  components: Map<number, [offset: number, size: number]>;
}

export function threadCore(t: TaskImage, tid: number): Msg {
  return (t.cores.get(tid)!.thread_core as Msg | undefined) ?? {};
}

/**
 * Per-thread kernel state that only the thread itself can set. `extra` adds more calls to the thread's batch and
 * may return a function that gets the batch's results, to check them.
 */
export async function restoreThreadState(
  ctx: RestoreContext,
  t: TaskImage,
  tid: number,
  extra?: (b: Batch) => ((results: bigint[]) => void) | void,
): Promise<void> {
  const core = t.cores.get(tid)!;
  const tc = threadCore(t, tid);
  const ti = (core.thread_info as Msg | undefined) ?? {};
  const b = new Batch();
  const comm = (tc.comm as string | undefined) ?? (tid === t.pid ? ((core.tc as Msg | undefined)?.comm as string | undefined) : undefined);
  if (comm !== undefined) b.call('prctl', [PR_SET_NAME, b.data(Buffer.from(comm.slice(0, 15) + '\0'))], 'set the thread name');
  const rla = (tc.futex_rla as bigint | undefined) ?? 0n;
  b.call('set_robust_list', [rla, Number(tc.futex_rla_len ?? 24) || 24], 'set the robust futex list');
  b.call('set_tid_address', [(ti.clear_tid_addr as bigint | undefined) ?? 0n], 'set the clear-child-tid address');
  const rseq = tc.rseq_entry as Msg | undefined;
  if (rseq && rseq.rseq_abi_pointer)
    b.call('rseq', [rseq.rseq_abi_pointer as bigint, Number(rseq.rseq_abi_size ?? 32), 0, Number(rseq.signature ?? 0)], 'register rseq');
  const sas = tc.sas as Msg | undefined;
  if (sas && (sas.ss_sp || Number(sas.ss_flags ?? SS_DISABLE) !== SS_DISABLE)) {
    const ss = Buffer.alloc(24);
    ss.writeBigUInt64LE(BigInt((sas.ss_sp as bigint | undefined) ?? 0n), 0);
    ss.writeInt32LE(Number(sas.ss_flags ?? 0) & ~1 /* SS_ONSTACK is a state, not a request */, 8);
    ss.writeBigUInt64LE(BigInt((sas.ss_size as bigint | undefined) ?? 0n), 16);
    b.call('sigaltstack', [b.data(ss), 0], 'set the alternate signal stack');
  }
  if (tid === t.pid) b.call('prctl', [PR_SET_PDEATHSIG, Number(tc.pdeath_sig ?? 0)], 'set the parent-death signal');
  for (const s of ((tc.signals_p as Msg | undefined)?.signals as Msg[] | undefined) ?? []) {
    const info = s.siginfo as Buffer;
    b.call('rt_tgsigqueueinfo', [t.pid, tid, info.readInt32LE(0), b.data(info)], `queue pending signal ${info.readInt32LE(0)} of thread ${tid}`);
  }
  const check = extra?.(b);
  const results = await runBatch(ctx.restorer!, tid, b);
  check?.(results);
}

/** Reads the host's xsave size from a stub thread (PTRACE_GETREGSET NT_X86_XSTATE). */
export async function readXstateInfo(ctx: RestoreContext, tid: number): Promise<{ size: number; features: bigint }> {
  const b = Buffer.alloc(4);
  b.writeInt32LE(tid, 0);
  const x = await ctx.restorer!.request(Op.XSTATE_INFO, b, 'read the xsave layout');
  // sw_reserved (offset 464) holds the kernel's xstate info: magic1, extended_size, xfeatures, xstate_size.
  const features = x.length >= 480 && x.readUInt32LE(464) === 0x46505853 ? x.readBigUInt64LE(472) : 0x3n;
  return { size: x.length, features };
}

/** The standard-format xsave area for PTRACE_SETREGSET from the image's fpregs. */
export function buildXsave(fp: Msg, size: number, host: HostXsave, t: TaskImage, tid: number): Buffer {
  const x = Buffer.alloc(Math.max(size, 512));
  x.writeUInt16LE(Number(fp.cwd ?? 0x37f) & 0xffff, 0);
  x.writeUInt16LE(Number(fp.swd ?? 0) & 0xffff, 2);
  x.writeUInt16LE(Number(fp.twd ?? 0) & 0xffff, 4);
  x.writeUInt16LE(Number(fp.fop ?? 0) & 0xffff, 6);
  x.writeBigUInt64LE(BigInt((fp.rip as bigint | undefined) ?? 0n), 8);
  x.writeBigUInt64LE(BigInt((fp.rdp as bigint | undefined) ?? 0n), 16);
  x.writeUInt32LE(Number(fp.mxcsr ?? 0x1f80), 24);
  x.writeUInt32LE(Number(fp.mxcsr_mask ?? 0), 28);
  ((fp.st_space as number[] | undefined) ?? []).slice(0, 32).forEach((v, i) => x.writeUInt32LE(v >>> 0, 32 + 4 * i));
  ((fp.xmm_space as number[] | undefined) ?? []).slice(0, 64).forEach((v, i) => x.writeUInt32LE(v >>> 0, 160 + 4 * i));
  if (size > 512) {
    const xs = (fp.xsave as Msg | undefined) ?? {};
    let bv = BigInt((xs.xstate_bv as bigint | undefined) ?? 0n);
    if (bv & ~host.xcr0)
      throw new GodwitError(`thread ${tid} of task ${t.pid}: its xsave state uses features 0x${(bv & ~host.xcr0).toString(16)} that this CPU/kernel does not enable (XCR0 0x${host.xcr0.toString(16)}): restore it on a host with the same CPU features`);
    bv |= 0x3n; // the legacy area above is always meaningful
    x.writeBigUInt64LE(bv, 512);
    for (const [bit, field, elem] of XSAVE_PARTS) {
      const vals = (xs[field] as (number | bigint)[] | undefined) ?? [];
      const comp = host.components.get(bit);
      if (!vals.length || !comp || !(bv & (1n << BigInt(bit)))) continue;
      const [off, len] = comp;
      if (off + len > x.length) throw new GodwitError(`xsave component ${bit} lies outside this host's xsave area`);
      vals.slice(0, len / elem).forEach((v, i) =>
        elem === 4 ? x.writeUInt32LE(Number(v) >>> 0, off + 4 * i) : x.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), off + 8 * i));
    }
  }
  return x;
}

function regsBuffer(gp: Msg): Buffer {
  const r = Buffer.alloc(27 * 8);
  REG_NAMES.forEach((n, i) => r.writeBigUInt64LE(BigInt.asUintN(64, BigInt((gp[n] as bigint | undefined) ?? 0n)), 8 * i));
  // orig_ax = -1: the thread resumes at ip with ax as dumped; the kernel must not apply syscall-restart logic.
  r.writeBigInt64LE(-1n, 15 * 8);
  return r;
}

/** Registers, xsave and blocked mask of one thread: the last thing done to it. */
export async function setRegisters(ctx: RestoreContext, t: TaskImage, tid: number): Promise<void> {
  const core = t.cores.get(tid)!;
  const ti = core.thread_info as Msg | undefined;
  if (!ti || !ti.gpregs) throw new GodwitError(`core-${tid}.img: no x86_64 registers (mtype ${core.mtype}): only x86_64 images restore here`);
  const gp = ti.gpregs as Msg;
  if (Number(gp.mode ?? 1) !== 1) throw new GodwitError(`thread ${tid}: 32-bit (compat) tasks are not supported`);
  const regs = regsBuffer(gp);
  const xsave = ti.fpregs ? buildXsave(ti.fpregs as Msg, ctx.xstateSize, ctx.hostXsave!, t, tid) : Buffer.alloc(0);
  const tc = threadCore(t, tid);
  const mask =
    tid === t.pid
      ? BigInt(((core.tc as Msg | undefined)?.blk_sigset as bigint | undefined) ?? 0n)
      : BigInt((tc.blk_sigset as bigint | undefined) ?? 0n);
  const b = Buffer.alloc(16 + regs.length + 4 + xsave.length);
  b.writeInt32LE(tid, 0);
  b.writeUInt32LE(1, 4);
  b.writeBigUInt64LE(mask, 8);
  regs.copy(b, 16);
  b.writeUInt32LE(xsave.length, 16 + regs.length);
  xsave.copy(b, 20 + regs.length);
  await ctx.restorer!.request(Op.SETREGS, b, `set registers of thread ${tid}`);
}

/** Unmaps the trampoline from the main thread, single-stepping a `syscall` in [vdso] (or any code mapping). */
export async function dropTrampoline(ctx: RestoreContext, t: TaskImage, vmas: Vma[]): Promise<void> {
  const tramp = ctx.trampolines.get(t.pid)!;
  const vdso = vmas.find((v) => v.status & VMA.VDSO);
  const candidates = [...(vdso ? [vdso] : []), ...vmas.filter((v) => v.prot & 4 && !(v.status & (VMA.VSYSCALL | VMA.VDSO)))];
  let insn: bigint | null = null;
  for (const v of candidates) {
    const q = Buffer.alloc(20);
    q.writeInt32LE(t.pid, 0);
    q.writeBigUInt64LE(v.start, 4);
    const end = v.end - v.start > 1n << 20n ? v.start + (1n << 20n) : v.end;
    q.writeBigUInt64LE(end, 12);
    try {
      insn = (await ctx.restorer!.request(Op.FIND_SYSCALL, q, 'find a syscall instruction')).readBigUInt64LE(0);
      break;
    } catch {
      /* try the next mapping */
    }
  }
  if (insn === null) throw new GodwitError(`task ${t.pid}: no syscall instruction in its code to unmap the trampoline with`);
  const b = Buffer.alloc(64);
  b.writeInt32LE(t.pid, 0);
  b.writeUInt32LE(NR.munmap, 4);
  b.writeBigUInt64LE(insn, 8);
  b.writeBigUInt64LE(tramp, 16);
  b.writeBigUInt64LE(TRAMPOLINE_SIZE, 24);
  await ctx.restorer!.request(Op.SYSCALL_AT, b, `unmap the trampoline of ${t.pid}`);
  ctx.trampolines.delete(t.pid);
}
