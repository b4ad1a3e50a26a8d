/**
 * Register sets from the helper's raw buffers to CRIU's x86_64 entries: user_regs_struct (216 bytes),
 * the FXSAVE legacy area (512 bytes) and the XSAVE extended components, TLS descriptors.
 */
import type { HelperInfo } from '../native/helper';

const GP_NAMES = [
  'r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di',
  'orig_ax', 'ip', 'cs', 'flags', 'sp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;

export const USER_REGS_SIZE = GP_NAMES.length * 8;
const MODE_NATIVE = 1;

export function gpregsEntry(regs: Buffer): Record<string, unknown> {
  if (regs.length < USER_REGS_SIZE) throw new Error(`user_regs_struct of ${regs.length} bytes, expected ${USER_REGS_SIZE}`);
  const e: Record<string, unknown> = {};
  GP_NAMES.forEach((n, i) => (e[n] = regs.readBigUInt64LE(i * 8)));
  e.mode = MODE_NATIVE;
  return e;
}

function u32s(b: Buffer, off: number, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(b.readUInt32LE(off + i * 4));
  return out;
}

function u64s(b: Buffer, off: number, count: number): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) out.push(b.readBigUInt64LE(off + i * 8));
  return out;
}

/** XSAVE component numbers (Intel SDM vol. 1, 13.1). */
const XFEATURE_YMM = 2;
const XFEATURE_OPMASK = 5;
const XFEATURE_ZMM_HI256 = 6;
const XFEATURE_HI16_ZMM = 7;
const XFEATURE_PKRU = 9;

/** fpregs: the FXSAVE area (first 512 bytes of XSAVE or NT_PRFPREG), plus the XSAVE extensions if present. */
export function fpregsEntry(fpregs: Buffer, xsave: Buffer, layout: Pick<HelperInfo, 'xcr0' | 'xsaveComponents'>): Record<string, unknown> {
  const fx = xsave.length >= 512 ? xsave : fpregs;
  if (fx.length < 512) throw new Error(`FXSAVE area of ${fx.length} bytes, expected 512`);
  const e: Record<string, unknown> = {
    cwd: fx.readUInt16LE(0),
    swd: fx.readUInt16LE(2),
    twd: fx.readUInt16LE(4),
    fop: fx.readUInt16LE(6),
    rip: fx.readBigUInt64LE(8),
    rdp: fx.readBigUInt64LE(16),
    mxcsr: fx.readUInt32LE(24),
    mxcsr_mask: fx.readUInt32LE(28),
    st_space: u32s(fx, 32, 32),
    xmm_space: u32s(fx, 160, 64),
  };
  if (xsave.length >= 576) {
    const x: Record<string, unknown> = { xstate_bv: xsave.readBigUInt64LE(512) };
    const comp = (i: number) => {
      const c = layout.xsaveComponents.find((x) => x.index === i);
      return c && c.offset + c.size <= xsave.length && layout.xcr0 & (1n << BigInt(i)) ? c : undefined;
    };
    const ymm = comp(XFEATURE_YMM);
    if (ymm) x.ymmh_space = u32s(xsave, ymm.offset, ymm.size / 4);
    const op = comp(XFEATURE_OPMASK);
    if (op) x.opmask_reg = u64s(xsave, op.offset, op.size / 8);
    const zu = comp(XFEATURE_ZMM_HI256);
    if (zu) x.zmm_upper = u64s(xsave, zu.offset, zu.size / 8);
    const hz = comp(XFEATURE_HI16_ZMM);
    if (hz) x.hi16_zmm = u64s(xsave, hz.offset, hz.size / 8);
    const pk = comp(XFEATURE_PKRU);
    if (pk) x.pkru = u32s(xsave, pk.offset, pk.size / 4);
    e.xsave = x;
  }
  return e;
}

/** struct user_desc (16 bytes) -> user_desc_t. */
export function tlsEntry(d: Buffer): Record<string, unknown> {
  const flags = d.readUInt32LE(12);
  return {
    entry_number: d.readUInt32LE(0),
    base_addr: d.readUInt32LE(4),
    limit: d.readUInt32LE(8),
    seg_32bit: (flags & 1) !== 0,
    contents_h: (flags & 4) !== 0,
    contents_l: (flags & 2) !== 0,
    read_exec_only: (flags & 8) !== 0,
    limit_in_pages: (flags & 16) !== 0,
    seg_not_present: (flags & 32) !== 0,
    usable: (flags & 64) !== 0,
  };
}
