/** /proc/PID/status: credentials, capabilities, signals, namespaced ids, seccomp. */
import { readProcText } from './read';

export interface ProcStatus {
  name: string;
  state: string;
  umask?: number;
  tgid: number;
  pid: number;
  ppid: number;
  tracerPid: number;
  /** real, effective, saved, fs */
  uids: [number, number, number, number];
  gids: [number, number, number, number];
  groups: number[];
  /** Innermost last, as the kernel prints them. */
  nsTgid: number[];
  nsPid: number[];
  nsPgid: number[];
  nsSid: number[];
  kthread?: boolean;
  threads: number;
  sigPnd: bigint;
  shdPnd: bigint;
  sigBlk: bigint;
  sigIgn: bigint;
  sigCgt: bigint;
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: number;
  seccomp: number;
  seccompFilters: number;
  /** Cpus_allowed as 64-bit words, word 0 = CPUs 0-63 (empty if the kernel does not show it). */
  cpusAllowed: bigint[];
  /** THP_enabled: false once the mm has THP disabled by prctl(PR_SET_THP_DISABLE) (absent before Linux 5.0). */
  thpEnabled?: boolean;
}

export function parseStatus(text: string): ProcStatus {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const get = (k: string) => m.get(k) ?? '';
  const ints = (k: string) => get(k).split(/\s+/).filter(Boolean).map(Number);
  const hex = (k: string) => (m.has(k) ? BigInt('0x' + get(k)) : 0n);
  const four = (k: string) => {
    const v = ints(k);
    return [v[0] ?? 0, v[1] ?? 0, v[2] ?? 0, v[3] ?? 0] as [number, number, number, number];
  };
  const st: ProcStatus = {
    name: get('Name'),
    state: get('State').charAt(0),
    tgid: Number(get('Tgid')),
    pid: Number(get('Pid')),
    ppid: Number(get('PPid')),
    tracerPid: Number(get('TracerPid')),
    uids: four('Uid'),
    gids: four('Gid'),
    groups: ints('Groups'),
    nsTgid: ints('NStgid'),
    nsPid: ints('NSpid'),
    nsPgid: ints('NSpgid'),
    nsSid: ints('NSsid'),
    threads: Number(get('Threads')),
    sigPnd: hex('SigPnd'),
    shdPnd: hex('ShdPnd'),
    sigBlk: hex('SigBlk'),
    sigIgn: hex('SigIgn'),
    sigCgt: hex('SigCgt'),
    capInh: hex('CapInh'),
    capPrm: hex('CapPrm'),
    capEff: hex('CapEff'),
    capBnd: hex('CapBnd'),
    capAmb: hex('CapAmb'),
    noNewPrivs: Number(get('NoNewPrivs') || 0),
    seccomp: Number(get('Seccomp') || 0),
    seccompFilters: Number(get('Seccomp_filters') || 0),
    cpusAllowed: cpuWords(get('Cpus_allowed')),
  };
  if (m.has('Umask')) st.umask = parseInt(get('Umask'), 8);
  if (m.has('Kthread')) st.kthread = get('Kthread') === '1';
  if (m.has('THP_enabled')) st.thpEnabled = get('THP_enabled') !== '0';
  return st;
}

/** "ffffffff,00000003" (32-bit groups, most significant first) -> 64-bit words, least significant first. */
export function cpuWords(mask: string): bigint[] {
  const hex = mask.replace(/,/g, '');
  if (!/^[0-9a-f]+$/i.test(hex)) return [];
  let v = BigInt('0x' + hex);
  const out: bigint[] = [];
  for (let n = Math.ceil((hex.length * 4) / 64); n > 0; n--, v >>= 64n) out.push(BigInt.asUintN(64, v));
  return out;
}

export function readStatus(pid: number, tid?: number): ProcStatus {
  return parseStatus(readProcText(pid, tid === undefined ? 'status' : `task/${tid}/status`));
}
