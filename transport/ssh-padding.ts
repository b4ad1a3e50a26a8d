/**
 * Random padding for ssh2's outgoing packets from a pool.
 *
 * ssh2 fills the 4-19 padding bytes of every packet it sends with a randomFillSync call of its own, and OpenSSH
 * caps a session channel's packets at 32 KiB: a CSPRNG call per 32 KiB, 0.13 s of the sending process's CPU per
 * 542 MB here (a tenth of it, on the path every byte of a migration takes). The same CSPRNG's bytes are taken
 * from a pool filled 64 KiB at a time instead, each byte used once.
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
    this.buf.copy(dst, at, this.used, this.used + n);
    this.used += n;
  }
}

interface Ssh2Cipher {
  allocPacket(payloadLen: number): Buffer;
  [POOLED]?: true;
}

/** ssh2's AES-GCM packet: length (not counting itself), padding length, payload, padding, room for the tag. */
export function gcmPacket(payloadLen: number, pad: (packet: Buffer, at: number, n: number) => void): Buffer {
  let pktLen = 4 + 1 + payloadLen;
  let padLen = GCM_BLOCK - ((pktLen - 4) & (GCM_BLOCK - 1));
  if (padLen < 4) padLen += GCM_BLOCK;
  pktLen += padLen;
  const packet = Buffer.allocUnsafe(pktLen + GCM_TAG);
  packet.writeUInt32BE(pktLen - 4, 0);
  packet[4] = padLen;
  pad(packet, 5 + payloadLen, padLen);
  return packet;
}

function poolCipher(cipher: unknown, pool: RandomPool): void {
  const c = cipher as Ssh2Cipher | undefined;
  if (!c || c[POOLED] || c.constructor?.name !== 'AESGCMCipherBinding' || typeof c.allocPacket !== 'function' || c.allocPacket.length !== 1) return;
  c.allocPacket = (payloadLen: number) => gcmPacket(payloadLen, (p, at, n) => pool.fill(p, at, n));
  c[POOLED] = true;
}

/**
 * Pad the packets of an ssh2 Client's connection from a pool, now and after every rekey. Returns whether the
 * current cipher is padded from the pool (false for other ciphers or an ssh2 of another shape).
 */
export function poolPadding(client: unknown): boolean {
  const protocol = (client as { _protocol?: Record<string, unknown> } | undefined)?._protocol;
  if (!protocol || !('_cipher' in protocol)) return false;
  const pool = new RandomPool();
  let current = protocol._cipher;
  poolCipher(current, pool);
  const slot = Object.getOwnPropertyDescriptor(protocol, '_cipher');
  if (slot && slot.writable && slot.configurable) {
    Object.defineProperty(protocol, '_cipher', {
      configurable: true,
      enumerable: slot.enumerable ?? true,
      get: () => current,
      set: (next: unknown) => {
        current = next;
        poolCipher(next, pool);
      },
    });
  }
  return (current as Ssh2Cipher | undefined)?.[POOLED] === true;
}
