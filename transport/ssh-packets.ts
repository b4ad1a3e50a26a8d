/**
 * ssh2's outgoing AES-GCM packets: random padding from a pool, memory from slabs.
 *
 * ssh2 fills the 4-19 padding bytes of every packet it sends with a randomFillSync call of its own, and OpenSSH
 * caps a session channel's packets at 32 KiB: a CSPRNG call per 32 KiB, 0.13 s of the sending process's CPU per
 * 542 MB here (a tenth of it, on the path every byte of a migration takes). The same CSPRNG's bytes are taken
 * from a pool filled 64 KiB at a time instead, each byte used once. ssh2 also allocates every packet as a Buffer of
 * its own (an ArrayBuffer with its backing store: ~3 µs each, and garbage the collector chases, 0.1 s per 542 MB);
 * packets are cut from 1 MiB slabs instead, as Node cuts small Buffers from its pool. The encrypted packets of a
 * slab that follow one another go to the socket as one write (a run) instead of one each, and a slab is cut again
 * once every write of its packets has completed: the socket no longer holds its memory. (Reusing a slab only
 * when the socket happened to be empty left most of them to the GC: 0.05-0.07 s of page faults per 542 MB.)
 *
 * Only ssh2's AES-GCM cipher with its native binding (what it negotiates with OpenSSH where AES-NI exists), or
 * godwit's in its place (transport/ssh-seal.ts, whose sealed channel data is cut from the same slabs), is
 * changed, and only when it has the shape this was written against (ssh2 1.17): its allocPacket is replaced by
 * one that lays out the packet exactly as ssh2 does (RFC 4253 §6 with RFC 5647's unpadded length, room for the
 * 16-byte tag). Any other cipher or ssh2 is left alone, which is merely slower. Rekeying installs a new cipher
 * object: the protocol's cipher slot is watched so that it is padded from the pool too.
 */
import { randomFillSync } from 'node:crypto';

/** Bytes per refill: ~3,500 packets' padding per CSPRNG call. */
const POOL_BYTES = 64 << 10;
/** Slab size: 31 packets of OpenSSH's 32 KiB; one socket write per slab at most, per tick at least. */
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

/** One slab: its memory, and how many socket writes of its packets are still in flight. */
interface Slab {
  buf: Buffer;
  inflight: number;
  /** No more packets are cut from it: free once its writes are done. */
  retired: boolean;
}

/**
 * Packets cut one after another from 1 MiB slabs, and written to the socket as runs: the packets of one slab that
 * ssh2 encrypted in a row (a channel write of 1 MiB is 32 of them) go out as one socket write instead of one each.
 * A slab serves again once every write of its packets has completed (the socket no longer holds its memory).
 */
export class PacketSlabs {
  private current: Slab = { buf: Buffer.alloc(0), inflight: 0, retired: false };
  private used = 0;
  /** Written-out slabs: fresh memory is slow to fault in here, and a stream would fault in all of it. */
  private readonly spare: Buffer[] = [];
  /** The run of encrypted packets not yet handed to the socket: [runStart, runEnd) of `runSlab`. */
  private runSlab: Slab | undefined;
  private runStart = 0;
  private runEnd = 0;
  private flushQueued = false;

  /**
   * `write(bytes, done)`: hands bytes to the socket and calls done once it no longer holds them (or never took
   * them). Without it packets are only cut from slabs, never gathered, and a slab is never reused (left to the GC).
   */
  constructor(private readonly write?: (bytes: Buffer, done: () => void) => void) {}

  take(n: number): Buffer {
    if (n > SLAB_BYTES / 4) return Buffer.allocUnsafe(n);
    if (this.used + n > this.current.buf.length) this.nextSlab();
    const b = this.current.buf.subarray(this.used, this.used + n);
    this.used += n;
    return b;
  }

  /** An encrypted packet, to be written in order: appended to the run when it follows it in the same slab. */
  send(packet: Buffer, direct: (packet: Buffer) => void): void {
    const slab = this.current;
    if (this.runSlab === slab && packet.buffer === slab.buf.buffer && packet.byteOffset === slab.buf.byteOffset + this.runEnd) {
      this.runEnd += packet.length;
      return;
    }
    this.flush();
    if (!this.write || packet.buffer !== slab.buf.buffer || packet.length === 0) {
      direct(packet);
      return;
    }
    this.runSlab = slab;
    this.runStart = packet.byteOffset - slab.buf.byteOffset;
    this.runEnd = this.runStart + packet.length;
    if (!this.flushQueued) {
      this.flushQueued = true;
      // The run goes out at the end of this tick: all that one channel write (or one window adjust) released.
      process.nextTick(() => {
        this.flushQueued = false;
        this.flush();
      });
    }
  }

  /** Hands the pending run to the socket now (before anything else is written or the socket is ended). */
  flush(): void {
    const slab = this.runSlab;
    if (!slab || !this.write) return;
    this.runSlab = undefined;
    slab.inflight++;
    this.write(slab.buf.subarray(this.runStart, this.runEnd), () => {
      slab.inflight--;
      if (slab.retired && slab.inflight === 0 && this.spare.length < SPARE_SLABS) this.spare.push(slab.buf);
    });
  }

  private nextSlab(): void {
    const old = this.current;
    if (this.runSlab === old) this.flush();
    old.retired = true;
    if (this.write && old.inflight === 0 && old.buf.length > 0 && this.spare.length < SPARE_SLABS) this.spare.push(old.buf);
    this.current = { buf: this.spare.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES), inflight: 0, retired: false };
    this.used = 0;
  }
}

interface Ssh2Cipher {
  allocPacket(payloadLen: number): Buffer;
  /** Where ssh2's cipher hands each encrypted packet (the client's socket write). */
  _onWrite?: (packet: Buffer) => void;
  /** godwit's cipher (transport/ssh-seal.ts): where the memory of its sealed channel data comes from. */
  useSlabs?: (take: (n: number) => Buffer) => void;
  [POOLED]?: true;
}

/** ssh2's AES-GCM cipher with its native binding, and godwit's that takes its place (transport/ssh-seal.ts). */
const GCM_CIPHERS = new Set(['AESGCMCipherBinding', 'SealingGcmCipher']);

/** The socket as ssh2's client writes to it. */
interface Ssh2Socket {
  writable: boolean;
  _readableState?: { ended: boolean };
  write(b: Buffer, cb: (err?: Error | null) => void): boolean;
  end(...args: unknown[]): unknown;
}

/** ssh2 checks this before each write (utils.isWritable): a socket whose peer ended is written no more. */
const writable = (sock: Ssh2Socket): boolean => sock.writable && sock._readableState?.ended === false;

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

function poolCipher(cipher: unknown, protocol: Record<string, unknown>, pool: RandomPool, slabs: PacketSlabs, gather: boolean): void {
  const c = cipher as Ssh2Cipher | undefined;
  if (!c || c[POOLED] || !GCM_CIPHERS.has(c.constructor?.name) || typeof c.allocPacket !== 'function' || c.allocPacket.length !== 1) return;
  // During a key exchange ssh2 queues the packets it allocates (utils.js sendPacket) until NEWKEYS, unencrypted and
  // unwritten: a slab knows nothing of them and would serve their memory again, so they get memory of their own.
  const take = (n: number) => (protocol._kexinit === undefined ? slabs.take(n) : Buffer.allocUnsafe(n));
  c.allocPacket = (payloadLen: number) => gcmPacket(payloadLen, (p, at, n) => pool.fill(p, at, n), take);
  const direct = c._onWrite;
  if (gather && typeof direct === 'function') c._onWrite = (packet: Buffer) => slabs.send(packet, direct);
  c.useSlabs?.((n) => slabs.take(n));
  c[POOLED] = true;
}

/**
 * Pad and allocate the packets of an ssh2 Client's connection from pools, and write them to its socket in runs,
 * now and after every rekey. Returns whether the current cipher's packets come from them (false for other ciphers
 * or an ssh2 of another shape).
 */
export function poolPackets(client: unknown): boolean {
  const protocol = (client as { _protocol?: Record<string, unknown> } | undefined)?._protocol;
  if (!protocol || !('_cipher' in protocol)) return false;
  const pool = new RandomPool();
  const sock = (client as { _sock?: Ssh2Socket })._sock;
  const gather = !!sock && typeof sock.write === 'function' && typeof sock.end === 'function';
  const slabs = new PacketSlabs(gather ? (bytes, done) => {
    if (!writable(sock)) return done();
    sock.write(bytes, () => done());
  } : undefined);
  if (gather) {
    // What ssh2 wrote just before ending the socket (its DISCONNECT) must not wait for the end of the tick.
    const end = sock.end;
    sock.end = function (this: Ssh2Socket, ...args: unknown[]) {
      slabs.flush();
      return end.apply(this, args);
    };
  }
  let current = protocol._cipher;
  poolCipher(current, protocol, pool, slabs, gather);
  const slot = Object.getOwnPropertyDescriptor(protocol, '_cipher');
  if (slot && slot.writable && slot.configurable) {
    Object.defineProperty(protocol, '_cipher', {
      configurable: true,
      enumerable: slot.enumerable ?? true,
      get: () => current,
      set: (next: unknown) => {
        // A rekey: the old cipher's packets go out before any of the new one's.
        slabs.flush();
        current = next;
        poolCipher(next, protocol, pool, slabs, gather);
      },
    });
  }
  return (current as Ssh2Cipher | undefined)?.[POOLED] === true;
}
