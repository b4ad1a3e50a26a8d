/**
 * core-TID.img, one per thread: registers (thread_info), the process-wide task state in the leader's core
 * (tc: state, personality, flags, signal mask, sigactions, timers, rlimits, shared pending signals), and per
 * thread state (thread_core: robust list, sigaltstack, rseq, credentials, pending signals, scheduling).
 */
import type { HelperInfo, ProcessState, ThreadRegs } from '../native/helper';
import type { TreeProcess } from './tree';
import { fpregsEntry, gpregsEntry, tlsEntry } from './regs';
import type { ProcStatus } from './proc/status';
import type { ProcPosixTimer } from './proc/misc';
import { buildTimers } from './timers';
import { buildSigactions } from './signals';

const EMPTY = Buffer.alloc(0);
import { credsEntry } from './creds';

// compel's task states (compel/include/uapi/task-state.h).
export const TASK_ALIVE = 1;
export const TASK_DEAD = 2;
export const TASK_STOPPED = 3;
export const TASK_ZOMBIE = 6;

const CORE_X86_64 = 1;
const SCHED_OTHER = 0;

export interface ProcessExtras {
  personality: number;
  loginuid: number;
  oomScoreAdj: number;
  rlimits: { cur: bigint; max: bigint }[];
  posixTimers: ProcPosixTimer[];
  /** Was in a job-control stop when seized (restored stopped, as CRIU's TASK_STOPPED). */
  stopped: boolean;
  stopSignal?: number;
}

function queue(signals: Buffer[]): Record<string, unknown> {
  return { signals: signals.map((s) => ({ siginfo: s })) };
}

export function buildThreadCore(
  p: TreeProcess,
  tid: number,
  regs: ThreadRegs,
  state: ProcessState,
  status: ProcStatus,
  comm: string,
  sched: { nice: number; policy: number; rtPriority: number },
): Record<string, unknown> {
  const inj = state.threads.find((t) => t.tid === tid);
  const tc: Record<string, unknown> = {
    futex_rla: regs.robustList,
    futex_rla_len: Number(regs.robustListLen),
    sched_nice: sched.nice,
    sched_policy: sched.policy,
    sas: {
      ss_sp: inj?.altstack.sp ?? 0n,
      ss_size: inj?.altstack.size ?? 0n,
      ss_flags: inj?.altstack.flags ?? 2, // SS_DISABLE
    },
    signals_p: queue(regs.pending),
    creds: credsEntry(status),
    comm,
    cg_set: 1,
  };
  // The leader's mask is the task's (tc.blk_sigset); CRIU sets the per-thread one for the other threads only.
  if (tid !== p.pid) tc.blk_sigset = regs.sigmask;
  if (sched.policy !== SCHED_OTHER) tc.sched_prio = sched.rtPriority;
  if (status.cpusAllowed.length) tc.allowed_cpus = status.cpusAllowed;
  if (inj?.pdeathsig) tc.pdeath_sig = inj.pdeathsig;
  if (status.seccomp) tc.seccomp_mode = status.seccomp;
  if (regs.rseq && regs.rseq.abiSize > 0)
    tc.rseq_entry = { rseq_abi_pointer: regs.rseq.abiPointer, rseq_abi_size: regs.rseq.abiSize, signature: regs.rseq.signature };
  return tc;
}

export function buildCore(
  p: TreeProcess,
  tid: number,
  regs: ThreadRegs,
  xsave: HelperInfo,
  state: ProcessState,
  extras: ProcessExtras,
  threadCore: Record<string, unknown>,
): Record<string, unknown> {
  const inj = state.threads.find((t) => t.tid === tid);
  const core: Record<string, unknown> = {
    mtype: CORE_X86_64,
    thread_info: {
      clear_tid_addr: inj?.clearTidAddress ?? 0n,
      gpregs: gpregsEntry(regs.regs),
      fpregs: fpregsEntry(regs.fpregs ?? EMPTY, regs.xsave ?? EMPTY, xsave),
      tls: regs.tls.map(tlsEntry),
    },
  };
  if (tid === p.pid) {
    const tc: Record<string, unknown> = {
      task_state: extras.stopped ? TASK_STOPPED : TASK_ALIVE,
      exit_code: 0,
      personality: extras.personality,
      flags: p.stat.flags,
      blk_sigset: regs.sigmask,
      comm: p.comm,
      timers: buildTimers(state, extras.posixTimers),
      rlimits: { rlimits: extras.rlimits.map((r) => ({ cur: r.cur, max: r.max })) },
      signals_s: queue(state.sharedPending),
      loginuid: extras.loginuid,
      oom_score_adj: extras.oomScoreAdj,
      sigactions: buildSigactions(state.sigactions),
      child_subreaper: state.childSubreaper !== 0,
    };
    if (state.membarrierRegistrations > 0) tc.membarrier_registration_mask = state.membarrierRegistrations;
    if (extras.stopped && extras.stopSignal) tc.stop_signo = extras.stopSignal;
    core.tc = tc;
  }
  core.thread_core = threadCore;
  return core;
}

/** A zombie has no threads or memory left: its core holds the state and exit code only. */
export function buildZombieCore(p: TreeProcess): Record<string, unknown> {
  return {
    mtype: CORE_X86_64,
    tc: {
      task_state: TASK_ZOMBIE,
      exit_code: p.stat.exitCode,
      personality: 0,
      flags: p.stat.flags,
      blk_sigset: 0n,
      comm: p.comm,
    },
  };
}
