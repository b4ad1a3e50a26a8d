/**
 * Channel data sealed natively: ssh2's outgoing AES-GCM cipher replaced by godwit's (native/addon/seal.c), and a
 * stream channel whose writes become SSH packets in native calls of up to 224 KiB each, not one packet at a time.
 *
 * ssh2 sends a channel write as one SSH_MSG_CHANNEL_DATA packet per 32 KiB (OpenSSH's packet size for a session
 * channel), each one a dozen JavaScript calls, an allocation and a copy of the data into the packet before it is
 * encrypted: ~0.3 s of the sending process's CPU per 538 MB here, on the path every page of a migration takes.
 * GcmSeal.seal() lays out and encrypts up to 224 KiB of them per call, straight from the caller's bytes into slab
 * memory (transport/ssh-packets.ts), where consecutive runs go to the socket as one write.
 *
 * How it is wired into ssh2 1.17, and what keeps it safe where ssh2 differs:
 * - ssh2's key exchange creates each outgoing cipher with crypto.js's createCipher, which kex.js takes at load:
 *   it is wrapped here before ssh2 is first loaded (transport/ssh.ts imports this module first). For AES-GCM it
 *   returns a SealingGcmCipher, an object with ssh2's cipher interface (allocPacket, encrypt, free, outSeqno)
 *   whose one OpenSSL context seals ssh2's own packets (encrypt) and the channel's (seal), so both share one
 *   invocation counter in the order they are sent. Any other cipher is ssh2's own.
 * - A channel's writes are sealed only while its connection's current cipher is a SealingGcmCipher, no key
 *   exchange is in progress (ssh2 then queues packets until NEWKEYS: the write goes through ssh2's own path) and
 *   ssh2 does not compress; the window is consumed and waited for exactly as ssh2's Channel._write does.
 * - If ssh2 was loaded before this module (no cipher is replaced), or the addon is not built, nothing changes:
 *   `sealingInstalled()` says so, and the stream is merely slower. GODWIT_SSH_SEAL=0 in the environment leaves
 *   ssh2 as it is (to compare the two).
 */
import { randomFillSync } from 'node:crypto';
import { loadAddon, type GcmSealClass, type NativeGcmSeal } from '../native/addon';
import { gcmPacket } from './ssh-packets';

const CRYPTO_MODULE = 'ssh2/lib/protocol/crypto.js';
const KEX_MODULE = 'ssh2/lib/protocol/kex.js';
/** Data bytes sealed per native call at most: its packets fit the 1 MiB slabs transport/ssh-packets.ts cuts. */
const PIECE_BYTES = 224 << 10;

/** ssh2's outbound cipher config (kex.js), as far as it is read here. */
interface OutboundConfig {
  seqno: number;
  onWrite: (packet: Buffer) => void;
  cipherInfo?: { sslName?: string };
  cipherKey?: unknown;
  cipherIV?: unknown;
  forceNative?: boolean;
}

/** ssh2's outgoing AES-GCM cipher, with godwit's native context: ssh2's packets one by one, a channel's in runs. */
export class SealingGcmCipher {
  outSeqno: number;
  _onWrite: (packet: Buffer) => void;
  _dead = false;
  private readonly seal: NativeGcmSeal;
  private readonly sealedSize: (dataLength: number, packetSize: number) => number;
  /** Memory for sealed packets (transport/ssh-packets.ts's slabs, whose consecutive packets go out as one write). */
  private take: (n: number) => Buffer = Buffer.allocUnsafe;

  constructor(enc: OutboundConfig, Seal: GcmSealClass) {
    this.outSeqno = enc.seqno;
    this._onWrite = enc.onWrite;
    this.seal = new Seal(enc.cipherKey as Buffer, enc.cipherIV as Buffer);
    this.sealedSize = Seal.sealedSize;
  }

  free(): void {
    this._dead = true;
    this.seal.free();
  }

  /** ssh2's AES-GCM layout with a CSPRNG call for the padding (transport/ssh-packets.ts pads from a pool instead). */
  allocPacket(payloadLen: number): Buffer {
    return gcmPacket(payloadLen, (p, at, n) => randomFillSync(p, at, n));
  }

  /** One packet ssh2 laid out: sealed in place and written, as ssh2's cipher does. */
  encrypt(packet: Buffer): void {
    if (this._dead) return;
    this.seal.encrypt(packet);
    this._onWrite(packet);
    this.outSeqno = (this.outSeqno + 1) >>> 0;
  }

  /** Where the memory of sealed packets comes from (packets written one after another from one slab are gathered). */
  useSlabs(take: (n: number) => Buffer): void {
    this.take = take;
  }

  /** `data` as CHANNEL_DATA packets to `recipient`, at most packetSize data bytes each, sealed and written. */
  sendData(recipient: number, data: Uint8Array, packetSize: number): void {
    const piece = Math.max(1, Math.floor(PIECE_BYTES / packetSize)) * packetSize;
    for (let at = 0; at < data.length && !this._dead; at += piece) {
      const part = at === 0 && data.length <= piece ? data : data.subarray(at, Math.min(at + piece, data.length));
      const out = this.take(this.sealedSize(part.length, packetSize));
      const bytes = this.seal.seal(recipient, part, packetSize, out);
      this.outSeqno = (this.outSeqno + Math.ceil(part.length / packetSize)) >>> 0;
      this._onWrite(bytes === out.length ? out : out.subarray(0, bytes));
    }
  }
}

let installed = false;

/**
 * Wraps ssh2's createCipher so that AES-GCM gets a SealingGcmCipher. Must run before ssh2's kex.js is loaded (it
 * keeps the function it found then); returns whether it did. Idempotent.
 */
export function installSealingCipher(): boolean {
  if (installed) return true;
  if (process.env.GODWIT_SSH_SEAL === '0') return false;
  const Seal = loadAddon()?.GcmSeal;
  if (!Seal) return false;
  let crypto: { createCipher?: (config: { outbound?: OutboundConfig }) => unknown };
  try {
    if (require.cache[require.resolve(KEX_MODULE)]) return false;
    crypto = require(CRYPTO_MODULE);
  } catch {
    return false; // another ssh2 layout: left alone
  }
  const original = crypto.createCipher;
  if (typeof original !== 'function') return false;
  crypto.createCipher = function createCipher(config: { outbound?: OutboundConfig }): unknown {
    const enc = config?.outbound;
    const name = enc?.cipherInfo?.sslName;
    if (enc && (name === 'aes-128-gcm' || name === 'aes-256-gcm') && !enc.forceNative && typeof enc.onWrite === 'function' &&
      typeof enc.seqno === 'number' && Buffer.isBuffer(enc.cipherKey) && Buffer.isBuffer(enc.cipherIV) && enc.cipherIV.length === 12) {
      return new SealingGcmCipher(enc, Seal);
    }
    return original(config);
  };
  installed = true;
  return true;
}

/** Whether ssh2's AES-GCM ciphers are godwit's in this process. */
export function sealingInstalled(): boolean {
  return installed;
}

/** The parts of ssh2's Channel and Protocol that a sealed write reads and updates (ssh2 1.17's Channel._write). */
interface Ssh2Channel {
  _client: { _protocol: { _cipher: unknown; _kexinit: unknown; _packetRW?: { write?: { allocStart?: number } } } };
  outgoing: { id: number; window: number; packetSize: number; state: string };
  _waitWindow: boolean;
  _chunk: Uint8Array | undefined;
  _chunkcb: (() => void) | undefined;
  _write(data: Uint8Array, encoding: unknown, cb: () => void): void;
}

/**
 * A channel's writes sealed natively whenever its connection allows (see the top of this file); otherwise, and for
 * any channel of another shape, ssh2's own _write. Returns whether the channel has the shape this was written for.
 */
export function sealChannelWrites(channel: unknown): boolean {
  const ch = channel as Ssh2Channel;
  const original = ch?._write;
  if (typeof original !== 'function' || typeof ch.outgoing !== 'object' || !ch._client?._protocol) return false;
  ch._write = function sealedWrite(this: Ssh2Channel, data: Uint8Array, encoding: unknown, cb: () => void): void {
    const protocol = this._client._protocol;
    const cipher = protocol._cipher;
    if (!(cipher instanceof SealingGcmCipher) || protocol._kexinit !== undefined || protocol._packetRW?.write?.allocStart !== 5 ||
      !(data instanceof Uint8Array)) {
      original.call(this, data, encoding, cb);
      return;
    }
    const out = this.outgoing;
    if (out.state !== 'open') return; // as ssh2: the channel is closing, and its close fails the stream
    const n = Math.min(data.length, out.window);
    if (n > 0) {
      cipher.sendData(out.id, n === data.length ? data : data.subarray(0, n), out.packetSize);
      out.window -= n;
    }
    if (n < data.length) {
      // ssh2's WINDOW_ADJUST handler calls _write (this one) with the rest once the peer makes room.
      if (out.window === 0) this._waitWindow = true;
      this._chunk = n > 0 ? data.subarray(n) : data;
      this._chunkcb = cb;
      return;
    }
    cb();
  };
  return true;
}

// At load: transport/ssh.ts imports this module before ssh2.
installSealingCipher();
