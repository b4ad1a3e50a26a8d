/**
 * ssh2's outgoing AES-GCM packets: random padding from a pool, memory from slabs.
 *
 * ssh2 fills the 4-19 padding bytes of every packet it sends with a randomFillSync call of its own, and OpenSSH
 * caps a session channel's packets at 32 KiB: a CSPRNG call per 32 KiB, 0.13 s of the sending process's CPU per
 * 542 MB here (a tenth of it, on the path every byte of a migration takes). The same CSPRNG's bytes are taken
 * from a pool filled 64 KiB at a time instead, each byte used once. ssh2 also allocates every packet as a Buffer of
 * its own (an ArrayBuffer with its backing store: ~3 µs each, and garbage the collector chases, 0.1 s per 542 MB);
 * packets are cut from 1 MiB slabs instead, as Node cuts small Buffers from its pool. A slab is reused once the
 * socket has handed every packet to the kernel (which copies them), else left to the GC.
 *
 * Only ssh2's AES-GCM cipher with its native binding (what it negotiates with OpenSSH where AES-NI exists) is
 * changed, and only when it has the shape this was written against (ssh2 1.17): its allocPacket is replaced by
 * one that lays out the packet exactly as ssh2 does (RFC 4253 §6 with RFC 5647's unpadded length, room for the
 * 16-byte tag). Any other cipher or ssh2 is left alone, which is merely slower. Rekeying installs a new cipher
 * object: the protocol's cipher slot is watched so that it is padded from the pool too.
 */
import { randomFillSync } from 'node:crypto';

/** Bytes per refill: ~3,500 packets' padding per CSPRNG call. */
const POOL_BYTES = 64 << 10;
/** Slab size: 31 packets of OpenSSH's 32 KiB; a slab lives as long as its last packet is queued. */
const SLAB_BYTES = 1 << 20;
/** Written-out slabs kept for reuse: the socket usually drains within a few slabs. */
const SPARE_SLABS = 4;
const GCM_BLOCK = 16;
const GCM_TAG = 16;

export const POOLED = Symbol('godwit.pooledPadding');

class RandomPool {
  private readonly buf = Buffer.allocUnsafe(POOL_BYTES);
  private used = POOL_BYTES;

  fill(dst: Buffer, at: number, n: number): void {
    if (this.used + n > POOL_BYTES) {
      randomFillSync(this.buf);
      this.used = 0;
    }
    // 4-19 bytes: a loop is ~3x faster here than Buffer.copy, whose cost is mostly fixed per call.
    const src = this.buf;
    for (let i = 0, from = this.used; i < n; i++) dst[at + i] = src[from + i]!;
    this.used += n;
  }
}

class PacketSlab {
  private slab: Buffer = Buffer.alloc(0);
  private used = 0;
  /** Full slabs kept for reuse: fresh memory is slow to fault in here, and a stream would fault in all of it. */
  private readonly spare: Buffer[] = [];

  /** `written`: whether every packet handed out so far has left for the kernel (the socket holds none). */
  constructor(private readonly written: () => boolean) {}

  take(n: number): Buffer {
    if (n > SLAB_BYTES / 4) return Buffer.allocUnsafe(n);
    if (this.used + n > this.slab.length) this.nextSlab();
    const b = this.slab.subarray(this.used, this.used + n);
    this.used += (n + 7) & ~7;
    return b;
  }

  private nextSlab(): void {
    const reuse = this.spare.length > 0 && this.written() ? this.spare.pop()! : Buffer.allocUnsafeSlow(SLAB_BYTES);
    if (this.slab.length > 0 && this.spare.length < SPARE_SLABS) this.spare.push(this.slab);
    this.slab = reuse;
    this.used = 0;
  }
}

interface Ssh2Cipher {
  allocPacket(payloadLen: number): Buffer;
  [POOLED]?: true;
}

/** ssh2's AES-GCM packet: length (not counting itself), padding length, payload, padding, room for the tag. */
export function gcmPacket(payloadLen: number, pad: (packet: Buffer, at: number, n: number) => void,
  alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer {
  let pktLen = 4 + 1 + payloadLen;
  let padLen = GCM_BLOCK - ((pktLen - 4) & (GCM_BLOCK - 1));
  if (padLen < 4) padLen += GCM_BLOCK;
  pktLen += padLen;
  const packet = alloc(pktLen + GCM_TAG);
  packet.writeUInt32BE(pktLen - 4, 0);
  packet[4] = padLen;
  pad(packet, 5 + payloadLen, padLen);
  return packet;
}

function poolCipher(cipher: unknown, pool: RandomPool, slab: PacketSlab): void {
  const c = cipher as Ssh2Cipher | undefined;
  if (!c || c[POOLED] || c.constructor?.name !== 'AESGCMCipherBinding' || typeof c.allocPacket !== 'function' || c.allocPacket.length !== 1) return;
  c.allocPacket = (payloadLen: number) => gcmPacket(payloadLen, (p, at, n) => pool.fill(p, at, n), (n) => slab.take(n));
  c[POOLED] = true;
}

/**
 * Pad and allocate the packets of an ssh2 Client's connection from pools, now and after every rekey. Returns
 * whether the current cipher's packets come from them (false for other ciphers or an ssh2 of another shape).
 */
export function poolPackets(client: unknown): boolean {
  const protocol = (client as { _protocol?: Record<string, unknown> } | undefined)?._protocol;
  if (!protocol || !('_cipher' in protocol)) return false;
  const pool = new RandomPool();
  const sock = (client as { _sock?: { writableLength?: number } })._sock;
  // Without a socket to ask, no slab is ever taken as written: each is left to the GC.
  const slab = new PacketSlab(() => sock?.writableLength === 0);
  let current = protocol._cipher;
  poolCipher(current, pool, slab);
  const slot = Object.getOwnPropertyDescriptor(protocol, '_cipher');
  if (slot && slot.writable && slot.configurable) {
    Object.defineProperty(protocol, '_cipher', {
      configurable: true,
      enumerable: slot.enumerable ?? true,
      get: () => current,
      set: (next: unknown) => {
        current = next;
        poolCipher(next, pool, slab);
      },
    });
  }
  return (current as Ssh2Cipher | undefined)?.[POOLED] === true;
}
