/**
 * crit's conversions of integer fields: flag tables, value tables, device numbers, and Python's
 * int(s, 0) for numbers written as strings. Tables hold facts (bit values) from CRIU's pb2dict.
 */
import { EncodeError } from './wire';

const FLAG_TABLES: Record<string, Array<[string, bigint]>> = {
  'mmap.prot': [['PROT_READ', 0x1n], ['PROT_WRITE', 0x2n], ['PROT_EXEC', 0x4n]],
  'mmap.flags': [['MAP_SHARED', 0x1n], ['MAP_PRIVATE', 0x2n], ['MAP_DROPPABLE', 0x08n], ['MAP_ANON', 0x20n], ['MAP_GROWSDOWN', 0x100n]],
  'mmap.status': [
    ['VMA_AREA_NONE', 0n], ['VMA_AREA_REGULAR', 1n << 0n], ['VMA_AREA_STACK', 1n << 1n], ['VMA_AREA_VSYSCALL', 1n << 2n],
    ['VMA_AREA_VDSO', 1n << 3n], ['VMA_AREA_HEAP', 1n << 5n], ['VMA_FILE_PRIVATE', 1n << 6n], ['VMA_FILE_SHARED', 1n << 7n],
    ['VMA_ANON_SHARED', 1n << 8n], ['VMA_ANON_PRIVATE', 1n << 9n], ['VMA_AREA_SYSVIPC', 1n << 10n], ['VMA_AREA_SOCKET', 1n << 11n],
    ['VMA_AREA_VVAR', 1n << 12n], ['VMA_AREA_AIORING', 1n << 13n], ['VMA_AREA_MEMFD', 1n << 14n], ['VMA_AREA_SHSTK', 1n << 15n],
    ['VMA_AREA_UPROBES', 1n << 17n], ['VMA_UNSUPP', 1n << 31n],
  ],
  'rfile.flags': [
    ['O_WRONLY', 0o1n], ['O_RDWR', 0o2n], ['O_CREAT', 0o100n], ['O_EXCL', 0o200n], ['O_NOCTTY', 0o400n], ['O_TRUNC', 0o1000n],
    ['O_APPEND', 0o2000n], ['O_NONBLOCK', 0o4000n], ['O_DSYNC', 0o10000n], ['FASYNC', 0o20000n], ['O_DIRECT', 0o40000n],
    ['O_LARGEFILE', 0o100000n], ['O_DIRECTORY', 0o200000n], ['O_NOFOLLOW', 0o400000n], ['O_NOATIME', 0o1000000n],
    ['O_CLOEXEC', 0o2000000n],
  ],
  'pmap.flags': [['PE_PARENT', 1n << 0n], ['PE_LAZY', 1n << 1n], ['PE_PRESENT', 1n << 2n]],
  'seals.flags': [['F_SEAL_SEAL', 0x1n], ['F_SEAL_SHRINK', 0x2n], ['F_SEAL_GROW', 0x4n], ['F_SEAL_WRITE', 0x8n], ['F_SEAL_FUTURE_WRITE', 0x10n]],
};

const DICT_TABLES: Record<string, Record<string, Record<number, string>>> = {
  gen: { task_state: { 1: 'Alive', 2: 'Dead', 3: 'Stopped', 6: 'Zombie' } },
  sk: {
    family: { 1: 'UNIX', 2: 'INET', 10: 'INET6', 16: 'NETLINK', 17: 'PACKET' },
    type: { 1: 'STREAM', 2: 'DGRAM', 3: 'RAW', 5: 'SEQPACKET', 10: 'PACKET' },
    state: {
      1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT', 7: 'CLOSE',
      8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN',
    },
    proto: { 0: 'IP', 6: 'TCP', 17: 'UDP', 136: 'UDPLITE' },
  },
};

function hexOf(v: bigint): string {
  return (v < 0n ? '-0x' : '0x') + (v < 0n ? -v : v).toString(16);
}

/** "A | B | 0x40" for a known table; undefined when the table is unknown (crit then prints hex). */
export function mapFlags(value: bigint, table: string): string | undefined {
  const t = FLAG_TABLES[table];
  if (!t) return undefined;
  const names = t.filter(([, bit]) => (value & bit) !== 0n).map(([n]) => n);
  const all = t.reduce((s, [, bit]) => s + bit, 0n);
  const rest = value & ~all;
  if (rest !== 0n) names.push(hexOf(rest));
  return names.join(' | ');
}

/** Inverse of mapFlags; undefined when the table is unknown (the caller parses a number instead). */
export function unmapFlags(s: string, table: string, where: string): bigint | undefined {
  const t = FLAG_TABLES[table];
  if (!t) return undefined;
  if (s === '') return 0n;
  const byName = new Map(t.map(([n, v]) => [n, v]));
  let sum = 0n;
  for (const part of s.split('|').map((x) => x.trim())) {
    const v = byName.get(part);
    sum += v !== undefined ? v : parsePyInt(part, `${where} (flag '${part}')`);
  }
  return sum;
}

export function dictName(table: string, field: string, value: number): string | undefined {
  return DICT_TABLES[table]?.[field]?.[value];
}

export function dictValue(table: string, field: string, name: string): number | undefined {
  const t = DICT_TABLES[table]?.[field];
  if (!t) return undefined;
  for (const [k, v] of Object.entries(t)) if (v === name) return Number(k);
  return undefined;
}

// The kernel's dev_t split (MINORBITS = 20) and glibc's (old) encoding used by stat's st_rdev.
const MINORBITS = 20n;

export function decodeDev(v: bigint, old: boolean): string {
  if (old) {
    const major = ((v >> 8n) & 0xfffn) | ((v >> 32n) & ~0xfffn);
    const minor = (v & 0xffn) | ((v >> 12n) & ~0xffn);
    return `${major}:${minor}`;
  }
  return `${v >> MINORBITS}:${v & ((1n << MINORBITS) - 1n)}`;
}

export function encodeDev(s: string, old: boolean, where: string): bigint {
  const m = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(s);
  if (!m) throw new EncodeError(`${where}: expected "major:minor", got ${JSON.stringify(s)}`);
  const major = BigInt(m[1]);
  const minor = BigInt(m[2]);
  if (old) return ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n);
  return (major << MINORBITS) | minor;
}

/** Python's int(s, 0): optional sign, 0x/0o/0b prefixes, decimal without leading zeros, '_' separators. */
export function parsePyInt(s: string, where: string): bigint {
  const m = /^\s*([+-]?)(0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|0(?:_?0)*|[1-9](?:_?\d)*)\s*$/.exec(s);
  if (!m) throw new EncodeError(`${where}: ${JSON.stringify(s)} is not a number`);
  const body = m[2].replace(/_/g, '');
  let v: bigint;
  if (/^0[oO]/.test(body)) v = BigInt('0o' + body.slice(2));
  else if (/^0[bB]/.test(body)) v = BigInt('0b' + body.slice(2));
  else if (/^0[xX]/.test(body)) v = BigInt('0x' + body.slice(2));
  else v = BigInt(body);
  return m[1] === '-' ? -v : v;
}
