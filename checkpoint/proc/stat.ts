/** /proc/PID/stat and /proc/PID/task/TID/stat: the fields godwit uses, by their proc(5) numbers. */
import { GodwitError } from '../../util/errors';
import { readProcText } from './read';

export interface ProcStat {
  pid: number;
  comm: string;
  /** One letter: R S D T t Z X I ... */
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  ttyNr: number;
  /** Foreground process group of the controlling terminal (-1: none). */
  tpgid: number;
  /** PF_* flags; PF_KTHREAD (0x00200000) marks a kernel thread. */
  flags: number;
  numThreads: number;
  startTime: bigint;
  exitSignal: number;
  startCode: bigint;
  endCode: bigint;
  startStack: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  exitCode: number;
  nice: number;
  policy: number;
  rtPriority: number;
}

export const PF_KTHREAD = 0x00200000;

/** comm may hold spaces and ')': the fields start after the LAST ')'. */
export function parseStat(text: string, where = 'stat'): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new GodwitError(`${where}: no "(comm)" in /proc stat line`);
  const rest = text.slice(close + 2).trim().split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  const f = (n: number): string => {
    const v = rest[n - 3];
    if (v === undefined) throw new GodwitError(`${where}: stat line has no field ${n}`);
    return v;
  };
  const num = (n: number) => Number(f(n));
  const big = (n: number) => BigInt(f(n));
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: f(3),
    ppid: num(4),
    pgid: num(5),
    sid: num(6),
    ttyNr: num(7),
    tpgid: num(8),
    flags: num(9),
    nice: num(19),
    numThreads: num(20),
    startTime: big(22),
    startCode: big(26),
    endCode: big(27),
    startStack: big(28),
    exitSignal: num(38),
    rtPriority: num(40),
    policy: num(41),
    startData: big(45),
    endData: big(46),
    startBrk: big(47),
    argStart: big(48),
    argEnd: big(49),
    envStart: big(50),
    envEnd: big(51),
    exitCode: num(52),
  };
}

export function readStat(pid: number, tid?: number): ProcStat {
  const name = tid === undefined ? 'stat' : `task/${tid}/stat`;
  return parseStat(readProcText(pid, name), `/proc/${pid}/${name}`);
}
