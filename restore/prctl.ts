/**
 * Per-process settings CRIU keeps in core/mm and godwit dumps, set in the task's per-process batch: the child
 * subreaper flag (tc.child_subreaper), the dumpable flag (mm.dumpable: 0 or 1; 2, "suid_dumpable", cannot be
 * set by prctl and stays 1), and oom_score_adj (written to /proc/self/oom_score_adj inside the task: lowering it
 * needs CAP_SYS_RESOURCE, so a refusal is a warning, not a failure), and the audit login uid (tc.loginuid,
 * written to /proc/self/loginuid inside the task: only a task may set its own; a refusal is a warning too),
 * THP disabled for the whole mm (mm.thp_disabled: prctl(PR_SET_THP_DISABLE)),
 * and the membarrier registrations (tc.membarrier_registration_mask: each bit is a MEMBARRIER_CMD_REGISTER_*
 * command; without them the process's expedited membarrier() calls fail with EPERM).
 */
import * as fs from 'node:fs';
import type { RestoreContext } from './context';
import { mainCore } from './context';
import type { Msg } from './image-files';
import type { TaskImage } from './load';
import { Batch, ResultRef } from './syscalls';

const PR_SET_DUMPABLE = 4;
const PR_SET_CHILD_SUBREAPER = 36;
const PR_SET_THP_DISABLE = 41;
const O_WRONLY = 1;
const O_CLOEXEC = 0o2000000;
const AT_FDCWD = -100;

export interface PrctlCalls {
  /** Index of the oom_score_adj write in the batch, to check its result. */
  oomWrite?: ResultRef;
  oomValue?: number;
  loginuidWrite?: ResultRef;
  loginuid?: number;
}

/** The login uid the restorer's tasks inherit (godwit's own); undefined without audit support. */
function inheritedLoginuid(): number | undefined {
  try {
    return Number(fs.readFileSync('/proc/self/loginuid', 'utf8').trim());
  } catch {
    return undefined;
  }
}

export function addPrctlCalls(t: TaskImage, b: Batch): PrctlCalls {
  const tc = (mainCore(t).tc as Msg | undefined) ?? {};
  if (tc.child_subreaper) b.call('prctl', [PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0], 'become a child subreaper again');
  if (t.mm.thp_disabled) b.call('prctl', [PR_SET_THP_DISABLE, 1, 0, 0, 0], 'disable THP again');
  const barriers = Number(tc.membarrier_registration_mask ?? 0);
  for (let bit = 1; bit <= barriers; bit *= 2)
    if (barriers & bit) b.call('membarrier', [bit, 0, 0], `register for membarrier command ${bit} again`);
  const out: PrctlCalls = {};
  const oom = Number(tc.oom_score_adj ?? 0);
  if (oom !== 0) {
    const fd = b.call('openat', [AT_FDCWD, b.str('/proc/self/oom_score_adj'), O_WRONLY | O_CLOEXEC, 0], 'open /proc/self/oom_score_adj');
    const text = Buffer.from(`${oom}\n`);
    out.oomWrite = b.call('write', [fd, b.data(text), text.length], `set oom_score_adj ${oom}`, { allowFail: true });
    out.oomValue = oom;
    b.call('close', [fd], 'close oom_score_adj');
  }
  const inherited = inheritedLoginuid();
  if (tc.loginuid !== undefined && inherited !== undefined && Number(tc.loginuid) >>> 0 !== inherited >>> 0) {
    const uid = Number(tc.loginuid) >>> 0;
    const fd = b.call('openat', [AT_FDCWD, b.str('/proc/self/loginuid'), O_WRONLY | O_CLOEXEC, 0], 'open /proc/self/loginuid');
    const text = Buffer.from(`${uid}`);
    out.loginuidWrite = b.call('write', [fd, b.data(text), text.length], `set loginuid ${uid}`, { allowFail: true });
    out.loginuid = uid;
    b.call('close', [fd], 'close loginuid');
  }
  // Last: with dumpable 0, /proc/PID of the task belongs to root (the restorer still is).
  const dumpable = t.mm.dumpable;
  if (dumpable !== undefined && Number(dumpable) === 0) b.call('prctl', [PR_SET_DUMPABLE, 0, 0, 0, 0], 'set dumpable 0');
  return out;
}

export function checkPrctlResults(ctx: RestoreContext, t: TaskImage, calls: PrctlCalls, results: bigint[]): void {
  if (calls.oomWrite && results[calls.oomWrite.result] < 0n)
    ctx.warnings.push({ pid: t.pid, message: `oom_score_adj kept at this host's value, not ${calls.oomValue} (lowering it needs CAP_SYS_RESOURCE)` });
  if (calls.loginuidWrite && results[calls.loginuidWrite.result] < 0n)
    ctx.warnings.push({
      pid: t.pid,
      message: `loginuid kept at godwit's, not ${calls.loginuid} (error ${-results[calls.loginuidWrite.result]}: changing a set one needs CAP_AUDIT_CONTROL and a mutable loginuid)`,
    });
}
