/** Credentials and capabilities from /proc/PID/task/TID/status, as creds_entry (capabilities as 2 x u32). */
import type { ProcStatus } from './proc/status';

function cap(v: bigint): number[] {
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

export function credsEntry(s: ProcStatus): Record<string, unknown> {
  const e: Record<string, unknown> = {
    uid: s.uids[0],
    gid: s.gids[0],
    euid: s.uids[1],
    egid: s.gids[1],
    suid: s.uids[2],
    sgid: s.gids[2],
    fsuid: s.uids[3],
    fsgid: s.gids[3],
    cap_inh: cap(s.capInh),
    cap_prm: cap(s.capPrm),
    cap_eff: cap(s.capEff),
    cap_bnd: cap(s.capBnd),
    secbits: 0,
    cap_amb: cap(s.capAmb),
  };
  if (s.groups.length) e.groups = s.groups;
  if (s.noNewPrivs) e.no_new_privs = 1;
  return e;
}
