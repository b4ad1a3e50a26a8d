/**
 * Decoding of the raw thread state the helper returns (native/helper.ts ThreadRegs) into objects named as
 * CRIU's core-x86.proto names them, so that checkpoint/ can put them into core images unchanged:
 * user_x86_regs_entry (GP registers), user_x86_fpregs_entry (fxsave area) and user_x86_xsave_entry (the
 * extended components), plus siginfo_t and struct user_desc.
 *
 * Layouts are the kernel's x86_64 ABI: struct user_regs_struct (27 x u64), the 512-byte fxsave area, the
 * XSAVE header at 512 and each component at the offset CPUID leaf 0xD gives (HelperInfo.xsaveComponents).
 */
import { GodwitError } from '../util/errors';
import type { XsaveComponent } from './helper';

/** struct user_regs_struct field order; names as CRIU's user_x86_regs_entry. */
export const GP_REG_NAMES = [
  'r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip',
  'cs', 'flags', 'sp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
export type GpRegName = (typeof GP_REG_NAMES)[number];
export type GpRegs = Record<GpRegName, bigint>;
export const USER_REGS_SIZE = GP_REG_NAMES.length * 8;

export function decodeGpRegs(b: Buffer): GpRegs {
  if (b.length !== USER_REGS_SIZE)
    throw new GodwitError(`user_regs_struct must be ${USER_REGS_SIZE} bytes, got ${b.length}`);
  const out = {} as GpRegs;
  GP_REG_NAMES.forEach((name, i) => (out[name] = b.readBigUInt64LE(i * 8)));
  return out;
}

export function encodeGpRegs(r: GpRegs): Buffer {
  const b = Buffer.alloc(USER_REGS_SIZE);
  GP_REG_NAMES.forEach((name, i) => b.writeBigUInt64LE(BigInt.asUintN(64, r[name]), i * 8));
  return b;
}

/** user_x86_fpregs_entry without its xsave part: the legacy 512-byte fxsave area. */
export interface FpRegs {
  cwd: number;
  swd: number;
  twd: number;
  fop: number;
  rip: bigint;
  rdp: bigint;
  mxcsr: number;
  mxcsr_mask: number;
  /** 8 x 16 bytes of x87/MMX registers as 32 u32. */
  st_space: number[];
  /** 16 x 16 bytes of XMM registers as 64 u32. */
  xmm_space: number[];
  /** The 24 u32 after xmm_space (bytes 416..511; 464.. is the kernel's software-reserved area). */
  padding: number[];
}

export const FXSAVE_SIZE = 512;

function u32s(b: Buffer, off: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(b.readUInt32LE(off + i * 4));
  return out;
}

export function decodeFpRegs(b: Buffer): FpRegs {
  if (b.length < FXSAVE_SIZE) throw new GodwitError(`fxsave area must be at least 512 bytes, got ${b.length}`);
  return {
    cwd: b.readUInt16LE(0),
    swd: b.readUInt16LE(2),
    twd: b.readUInt16LE(4),
    fop: b.readUInt16LE(6),
    rip: b.readBigUInt64LE(8),
    rdp: b.readBigUInt64LE(16),
    mxcsr: b.readUInt32LE(24),
    mxcsr_mask: b.readUInt32LE(28),
    st_space: u32s(b, 32, 32),
    xmm_space: u32s(b, 160, 64),
    padding: u32s(b, 416, 24),
  };
}

/** XSAVE feature bits (the component index is the bit number). */
export const XFEATURE = { FP: 0, SSE: 1, YMM: 2, BNDREGS: 3, BNDCSR: 4, OPMASK: 5, ZMM_HI256: 6, HI16_ZMM: 7, PKRU: 9 };

/** user_x86_xsave_entry: the components CRIU stores, as u64 arrays (u32 for pkru), present ones only. */
export interface XsaveState {
  xstate_bv: bigint;
  ymmh_space?: number[];
  bndreg_state?: bigint[];
  bndcsr_state?: bigint[];
  opmask_reg?: bigint[];
  zmm_upper?: bigint[];
  hi16_zmm?: bigint[];
  pkru?: number[];
}

function u64s(b: Buffer, off: number, n: number): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < n; i++) out.push(b.readBigUInt64LE(off + i * 8));
  return out;
}

/**
 * The XSAVE header and components of an NT_X86_XSTATE buffer. `xfeatures` (the kernel's mask of what the buffer
 * may hold) is at bytes 464+8 of the software-reserved area; xstate_bv (what is actually in use) at 512.
 */
export function decodeXsave(b: Buffer, layout: XsaveComponent[]): XsaveState {
  if (b.length < 576) throw new GodwitError(`xsave area must be at least 576 bytes, got ${b.length}`);
  const out: XsaveState = { xstate_bv: b.readBigUInt64LE(512) };
  const at = (idx: number): XsaveComponent | undefined => {
    const c = layout.find((x) => x.index === idx);
    return c && c.offset + c.size <= b.length ? c : undefined;
  };
  const ymm = at(XFEATURE.YMM);
  if (ymm) out.ymmh_space = u32s(b, ymm.offset, 64);
  const bndregs = at(XFEATURE.BNDREGS);
  if (bndregs) out.bndreg_state = u64s(b, bndregs.offset, 8);
  const bndcsr = at(XFEATURE.BNDCSR);
  if (bndcsr) out.bndcsr_state = u64s(b, bndcsr.offset, 2);
  const opmask = at(XFEATURE.OPMASK);
  if (opmask) out.opmask_reg = u64s(b, opmask.offset, 8);
  const zmmHi = at(XFEATURE.ZMM_HI256);
  if (zmmHi) out.zmm_upper = u64s(b, zmmHi.offset, 64);
  const hi16 = at(XFEATURE.HI16_ZMM);
  if (hi16) out.hi16_zmm = u64s(b, hi16.offset, 128);
  const pkru = at(XFEATURE.PKRU);
  if (pkru) out.pkru = u32s(b, pkru.offset, 2);
  return out;
}

/**
 * XCR0 as the kernel stores it in an NT_X86_XSTATE buffer: the first 8 bytes of the fxsave software-reserved area
 * (bytes 464..471), which is where debuggers read it too.
 */
export function xsaveXcr0(b: Buffer): bigint {
  if (b.length < 472) throw new GodwitError(`xsave area must be at least 472 bytes, got ${b.length}`);
  return b.readBigUInt64LE(464);
}

/** The fields of a 128-byte siginfo_t that matter for re-queueing it (CRIU keeps the raw bytes in siginfo.img). */
export interface Siginfo {
  signo: number;
  errno: number;
  code: number;
  /** si_pid / si_uid for kill/sigqueue-style codes; si_value (int) for queued signals. */
  pid: number;
  uid: number;
  value: bigint;
  raw: Buffer;
}

export function decodeSiginfo(b: Buffer): Siginfo {
  if (b.length !== 128) throw new GodwitError(`siginfo_t must be 128 bytes, got ${b.length}`);
  return {
    signo: b.readInt32LE(0),
    errno: b.readInt32LE(4),
    code: b.readInt32LE(8),
    pid: b.readInt32LE(16),
    uid: b.readUInt32LE(20),
    value: b.readBigUInt64LE(24),
    raw: b,
  };
}

/** struct user_desc (GDT TLS entry), named as CRIU's user_desc_t. */
export interface UserDesc {
  entry_number: number;
  base_addr: number;
  limit: number;
  seg_32bit: boolean;
  contents: number;
  read_exec_only: boolean;
  limit_in_pages: boolean;
  seg_not_present: boolean;
  useable: boolean;
}

export function decodeUserDesc(b: Buffer): UserDesc {
  if (b.length !== 16) throw new GodwitError(`struct user_desc must be 16 bytes, got ${b.length}`);
  const f = b.readUInt32LE(12);
  return {
    entry_number: b.readUInt32LE(0),
    base_addr: b.readUInt32LE(4),
    limit: b.readUInt32LE(8),
    seg_32bit: !!(f & 1),
    contents: (f >> 1) & 3,
    read_exec_only: !!(f & 8),
    limit_in_pages: !!(f & 16),
    seg_not_present: !!(f & 32),
    useable: !!(f & 64),
  };
}

/** Signal numbers in a 64-bit mask (bit sig-1). */
export function sigmaskToList(mask: bigint): number[] {
  const out: number[] = [];
  for (let sig = 1; sig <= 64; sig++) if ((mask >> BigInt(sig - 1)) & 1n) out.push(sig);
  return out;
}
