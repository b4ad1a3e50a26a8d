/**
 * Reads the few CRIU image kinds restore needs, decoded into the same plain-object shape images/ produces
 * (proto field names, 64-bit as bigint). Bridge until images/ (the full registry + schemas) is on main;
 * restore/load.ts is the only user, so swapping it for images/ is a one-file change.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImageError } from '../util/errors';

export type Msg = { [field: string]: unknown };
type T = 'u32' | 'u64' | 's32' | 's64' | 'bool' | 'str' | 'bytes' | Def;
interface Def {
  [no: number]: [name: string, type: T, repeated?: boolean];
}

const COMMON_MAGIC = 0x54564319;
const MAX_ENTRY = 64 << 20;

const itimer: Def = { 1: ['isec', 'u64'], 2: ['iusec', 'u64'], 3: ['vsec', 'u64'], 4: ['vusec', 'u64'] };
const posixTimer: Def = {
  1: ['it_id', 'u32'], 2: ['clock_id', 'u32'], 3: ['si_signo', 'u32'], 4: ['it_sigev_notify', 'u32'],
  5: ['sival_ptr', 'u64'], 6: ['overrun', 'u32'], 7: ['isec', 'u64'], 8: ['insec', 'u64'], 9: ['vsec', 'u64'],
  10: ['vnsec', 'u64'], 11: ['notify_thread_id', 's32'],
};
const siginfo: Def = { 1: ['siginfo', 'bytes'] };
const sigQueue: Def = { 1: ['signals', siginfo, true] };
const creds: Def = {
  1: ['uid', 'u32'], 2: ['gid', 'u32'], 3: ['euid', 'u32'], 4: ['egid', 'u32'], 5: ['suid', 'u32'], 6: ['sgid', 'u32'],
  7: ['fsuid', 'u32'], 8: ['fsgid', 'u32'], 9: ['cap_inh', 'u32', true], 10: ['cap_prm', 'u32', true],
  11: ['cap_eff', 'u32', true], 12: ['cap_bnd', 'u32', true], 13: ['secbits', 'u32'], 14: ['groups', 'u32', true],
  19: ['cap_amb', 'u32', true],
};
const regs: Def = {};
'r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss fs_base gs_base ds es fs gs'
  .split(' ')
  .forEach((n, i) => (regs[i + 1] = [n, 'u64']));
regs[28] = ['mode', 'u32'];
const xsave: Def = {
  1: ['xstate_bv', 'u64'], 2: ['ymmh_space', 'u32', true], 3: ['bndreg_state', 'u64', true],
  4: ['bndcsr_state', 'u64', true], 5: ['opmask_reg', 'u64', true], 6: ['zmm_upper', 'u64', true],
  7: ['hi16_zmm', 'u64', true], 8: ['pkru', 'u32', true],
};
const fpregs: Def = {
  1: ['cwd', 'u32'], 2: ['swd', 'u32'], 3: ['twd', 'u32'], 4: ['fop', 'u32'], 5: ['rip', 'u64'], 6: ['rdp', 'u64'],
  7: ['mxcsr', 'u32'], 8: ['mxcsr_mask', 'u32'], 9: ['st_space', 'u32', true], 10: ['xmm_space', 'u32', true],
  13: ['xsave', xsave],
};
const threadInfo: Def = { 1: ['clear_tid_addr', 'u64'], 2: ['gpregs', regs], 3: ['fpregs', fpregs] };
const sa: Def = {
  1: ['sigaction', 'u64'], 2: ['flags', 'u64'], 3: ['restorer', 'u64'], 4: ['mask', 'u64'],
  5: ['compat_sigaction', 'bool'], 6: ['mask_extended', 'u64'],
};
const taskCore: Def = {
  1: ['task_state', 'u32'], 2: ['exit_code', 'u32'], 3: ['personality', 'u32'], 4: ['flags', 'u32'],
  5: ['blk_sigset', 'u64'], 6: ['comm', 'str'],
  7: ['timers', { 1: ['real', itimer], 2: ['virt', itimer], 3: ['prof', itimer], 4: ['posix', posixTimer, true] }],
  8: ['rlimits', { 1: ['rlimits', { 1: ['cur', 'u64'], 2: ['max', 'u64'] }, true] }],
  9: ['cg_set', 'u32'], 10: ['signals_s', sigQueue], 13: ['loginuid', 'u32'], 14: ['oom_score_adj', 's32'],
  15: ['sigactions', sa, true], 18: ['child_subreaper', 'bool'],
};
const threadCore: Def = {
  1: ['futex_rla', 'u64'], 2: ['futex_rla_len', 'u32'], 3: ['sched_nice', 's32'], 4: ['sched_policy', 'u32'],
  5: ['sched_prio', 'u32'], 6: ['blk_sigset', 'u64'],
  7: ['sas', { 1: ['ss_sp', 'u64'], 2: ['ss_size', 'u64'], 3: ['ss_flags', 'u32'] }], 8: ['pdeath_sig', 'u32'],
  9: ['signals_p', sigQueue], 10: ['creds', creds], 11: ['seccomp_mode', 'u32'], 12: ['seccomp_filter', 'u32'],
  13: ['comm', 'str'],
  15: ['rseq_entry', { 1: ['rseq_abi_pointer', 'u64'], 2: ['rseq_abi_size', 'u32'], 3: ['signature', 'u32'], 4: ['rseq_cs_pointer', 'u64'] }],
  16: ['cg_set', 'u32'],
};
const ids: Def = {
  1: ['vm_id', 'u32'], 2: ['files_id', 'u32'], 3: ['fs_id', 'u32'], 4: ['sighand_id', 'u32'], 5: ['pid_ns_id', 'u32'],
  6: ['net_ns_id', 'u32'], 7: ['ipc_ns_id', 'u32'], 8: ['uts_ns_id', 'u32'], 9: ['mnt_ns_id', 'u32'],
  10: ['user_ns_id', 'u32'], 11: ['cgroup_ns_id', 'u32'],
};
const vma: Def = {
  1: ['start', 'u64'], 2: ['end', 'u64'], 3: ['pgoff', 'u64'], 4: ['shmid', 'u64'], 5: ['prot', 'u32'],
  6: ['flags', 'u32'], 7: ['status', 'u32'], 8: ['fd', 's64'], 9: ['madv', 'u64'], 10: ['fdflags', 'u32'],
};
const fown: Def = { 1: ['uid', 'u32'], 2: ['euid', 'u32'], 3: ['signum', 'u32'], 4: ['pid_type', 'u32'], 5: ['pid', 'u32'] };

export const SCHEMAS: Record<string, Def> = {
  pstree: { 1: ['pid', 'u32'], 2: ['ppid', 'u32'], 3: ['pgid', 'u32'], 4: ['sid', 'u32'], 5: ['threads', 'u32', true] },
  core: { 1: ['mtype', 'u32'], 2: ['thread_info', threadInfo], 3: ['tc', taskCore], 4: ['ids', ids], 5: ['thread_core', threadCore] },
  ids,
  mm: {
    1: ['mm_start_code', 'u64'], 2: ['mm_end_code', 'u64'], 3: ['mm_start_data', 'u64'], 4: ['mm_end_data', 'u64'],
    5: ['mm_start_stack', 'u64'], 6: ['mm_start_brk', 'u64'], 7: ['mm_brk', 'u64'], 8: ['mm_arg_start', 'u64'],
    9: ['mm_arg_end', 'u64'], 10: ['mm_env_start', 'u64'], 11: ['mm_env_end', 'u64'], 12: ['exe_file_id', 'u32'],
    13: ['mm_saved_auxv', 'u64', true], 14: ['vmas', vma, true], 15: ['dumpable', 's32'], 17: ['thp_disabled', 'bool'],
  },
  pagemap_head: { 1: ['pages_id', 'u32'] },
  pagemap: { 1: ['vaddr', 'u64'], 2: ['compat_nr_pages', 'u32'], 3: ['in_parent', 'bool'], 4: ['flags', 'u32'], 5: ['nr_pages', 'u64'] },
  file: {
    1: ['type', 'u32'], 2: ['id', 'u32'],
    3: ['reg', {
      1: ['id', 'u32'], 2: ['flags', 'u32'], 3: ['pos', 'u64'], 5: ['fown', fown], 6: ['name', 'str'], 7: ['mnt_id', 's32'],
      8: ['size', 'u64'], 9: ['ext', 'bool'], 10: ['mode', 'u32'], 11: ['build_id', 'u32', true],
    }],
    18: ['pipe', { 1: ['id', 'u32'], 2: ['pipe_id', 'u32'], 3: ['flags', 'u32'], 4: ['fown', fown] }],
  },
  fdinfo: { 1: ['id', 'u32'], 2: ['flags', 'u32'], 3: ['type', 'u32'], 4: ['fd', 'u32'] },
  pipe_data: { 1: ['pipe_id', 'u32'], 2: ['bytes', 'u32'], 3: ['size', 'u32'] },
  fs: { 1: ['cwd_id', 'u32'], 2: ['root_id', 'u32'], 3: ['umask', 'u32'] },
};

function varint(b: Buffer, pos: { i: number }, file: string): bigint {
  let r = 0n;
  let shift = 0n;
  for (;;) {
    if (pos.i >= b.length || shift > 63n) throw new ImageError(file, pos.i, 'truncated or overlong varint');
    const c = b[pos.i++];
    r |= BigInt(c & 0x7f) << shift;
    shift += 7n;
    if (c < 0x80) return r;
  }
}

function scalar(t: T, v: bigint): unknown {
  switch (t) {
    case 'u32':
      return Number(v & 0xffffffffn);
    case 's32':
      return Number(BigInt.asIntN(32, (v >> 1n) ^ -(v & 1n)));
    case 's64':
      return BigInt.asIntN(64, (v >> 1n) ^ -(v & 1n));
    case 'bool':
      return v !== 0n;
    default:
      return BigInt.asUintN(64, v);
  }
}

export function decode(def: Def, b: Buffer, file: string, base = 0): Msg {
  const m: Msg = {};
  const pos = { i: 0 };
  while (pos.i < b.length) {
    const key = varint(b, pos, file);
    const no = Number(key >> 3n);
    const wt = Number(key & 7n);
    const f = def[no];
    let raw: bigint | Buffer;
    if (wt === 0) raw = varint(b, pos, file);
    else if (wt === 1) {
      raw = b.readBigUInt64LE(pos.i);
      pos.i += 8;
    } else if (wt === 5) {
      raw = BigInt(b.readUInt32LE(pos.i));
      pos.i += 4;
    } else if (wt === 2) {
      const len = Number(varint(b, pos, file));
      if (pos.i + len > b.length) throw new ImageError(file, base + pos.i, `field ${no} runs past its message`);
      raw = b.subarray(pos.i, pos.i + len);
      pos.i += len;
    } else throw new ImageError(file, base + pos.i, `unsupported wire type ${wt} for field ${no}`);
    if (!f) continue;
    const [name, t, rep] = f;
    const vals: unknown[] = [];
    if (typeof t === 'object') vals.push(decode(t, raw as Buffer, file, base));
    else if (t === 'str') vals.push((raw as Buffer).toString('utf8'));
    else if (t === 'bytes') vals.push(Buffer.from(raw as Buffer));
    else if (Buffer.isBuffer(raw)) {
      const p = { i: 0 };
      while (p.i < raw.length) vals.push(scalar(t, varint(raw, p, file))); // packed
    } else vals.push(scalar(t, raw));
    if (rep) ((m[name] ??= []) as unknown[]).push(...vals);
    else m[name] = vals[vals.length - 1];
  }
  return m;
}

export interface ReadOptions {
  /** Schema of the first entry when it differs (pagemap head). */
  head?: string;
  /** Entries followed by raw bytes whose length is this field (pipes-data: `bytes`). */
  extraField?: string;
}

/** All entries of one image file; `null` when the file does not exist. */
export function readEntries(dir: string, file: string, kind: string, opts: ReadOptions = {}): Msg[] | null {
  const p = path.join(dir, file);
  let b: Buffer;
  try {
    b = fs.readFileSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  if (b.length < 8 || b.readUInt32LE(0) !== COMMON_MAGIC)
    throw new ImageError(p, 0, `not a CRIU image (expected magic 0x${COMMON_MAGIC.toString(16)})`);
  const out: Msg[] = [];
  let i = 8;
  while (i < b.length) {
    if (i + 4 > b.length) throw new ImageError(p, i, 'truncated entry size');
    const len = b.readUInt32LE(i);
    if (len > MAX_ENTRY || i + 4 + len > b.length) throw new ImageError(p, i, `entry of ${len} bytes runs past the file`);
    const def = SCHEMAS[out.length === 0 && opts.head ? opts.head : kind];
    const m = decode(def, b.subarray(i + 4, i + 4 + len), p, i + 4);
    i += 4 + len;
    if (opts.extraField) {
      const n = Number(m[opts.extraField] ?? 0);
      if (i + n > b.length) throw new ImageError(p, i, `${n} bytes of data run past the file`);
      m.extra = Buffer.from(b.subarray(i, i + n));
      i += n;
    }
    out.push(m);
  }
  return out;
}
