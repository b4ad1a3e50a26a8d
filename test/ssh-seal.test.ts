/**
 * transport/ssh-seal.ts and native/addon/seal.c: godwit's AES-GCM cipher in ssh2's place. Its packets must be
 * byte for byte what ssh2's own cipher makes of the same packet (same key, same nonce sequence), its sealed channel
 * data must decrypt (with Node's AES-GCM, nonces counted as RFC 5647 counts them) to CHANNEL_DATA packets that
 * carry the data in order, and both kinds must share one nonce sequence. A connection to OpenSSH's sshd is covered
 * in test/ssh (24 MiB through sha256sum, with a rekey half-way).
 */
import { createDecipheriv, randomBytes } from 'node:crypto';
import { loadAddon } from '../native/addon';

// ssh2's cipher factory as ssh2 has it, taken before transport/ssh-seal.ts wraps it (requires run in this order).
// eslint-disable-next-line @typescript-eslint/no-var-requires
const ssh2Crypto = require('ssh2/lib/protocol/crypto.js') as {
  createCipher: (config: object) => Ssh2Cipher;
  CIPHER_INFO: Record<string, object>;
};
const ssh2CreateCipher = ssh2Crypto.createCipher;
// eslint-disable-next-line @typescript-eslint/no-var-requires
const seal = require('../transport/ssh-seal') as typeof import('../transport/ssh-seal');

interface Ssh2Cipher {
  allocPacket(n: number): Buffer;
  encrypt(packet: Buffer): void;
  outSeqno: number;
  constructor: { name: string };
}

const GcmSeal = loadAddon()!.GcmSeal!;

function config(name: string, key: Buffer, iv: Buffer, onWrite: (p: Buffer) => void): object {
  return { outbound: { seqno: 5, onWrite, cipherInfo: ssh2Crypto.CIPHER_INFO[name], cipherKey: key, cipherIV: iv } };
}

/** Opens the sealed packets in `bytes` one after another, the first with nonce number `first`. */
function open(bytes: Buffer, key: Buffer, iv: Buffer, first: number): Buffer[] {
  const plain: Buffer[] = [];
  let counter = iv.readBigUInt64BE(4) + BigInt(first);
  for (let at = 0; at < bytes.length;) {
    const len = bytes.readUInt32BE(at);
    expect(len % 16).toBe(0);
    const nonce = Buffer.from(iv);
    nonce.writeBigUInt64BE(BigInt.asUintN(64, counter++), 4);
    const d = createDecipheriv(key.length === 16 ? 'aes-128-gcm' : 'aes-256-gcm', key, nonce);
    d.setAAD(bytes.subarray(at, at + 4));
    d.setAuthTag(bytes.subarray(at + 4 + len, at + 4 + len + 16));
    plain.push(Buffer.concat([d.update(bytes.subarray(at + 4, at + 4 + len)), d.final()]));
    at += 4 + len + 16;
  }
  return plain;
}

/** A decrypted CHANNEL_DATA packet's recipient and data, its padding checked. */
function channelData(p: Buffer): { recipient: number; data: Buffer; pad: Buffer } {
  const padLen = p[0]!;
  expect(padLen).toBeGreaterThanOrEqual(4);
  const payload = p.subarray(1, p.length - padLen);
  expect(payload[0]).toBe(94); // SSH_MSG_CHANNEL_DATA
  const n = payload.readUInt32BE(5);
  expect(payload.length).toBe(9 + n);
  return { recipient: payload.readUInt32BE(1), data: payload.subarray(9), pad: p.subarray(p.length - padLen) };
}

describe('GcmSeal and SealingGcmCipher', () => {
  test('ssh2 is the one these were written against, and AES-GCM now gets godwit\'s cipher', () => {
    expect(ssh2CreateCipher(config('aes128-gcm@openssh.com', randomBytes(16), randomBytes(12), () => undefined)).constructor.name)
      .toBe('AESGCMCipherBinding');
    expect(seal.sealingInstalled()).toBe(true);
    const ours = ssh2Crypto.createCipher(config('aes256-gcm@openssh.com', randomBytes(32), randomBytes(12), () => undefined));
    expect(ours).toBeInstanceOf(seal.SealingGcmCipher);
    // Other ciphers stay ssh2's.
    const chacha = ssh2Crypto.createCipher({ outbound: { seqno: 0, onWrite: () => undefined,
      cipherInfo: ssh2Crypto.CIPHER_INFO['chacha20-poly1305@openssh.com'], cipherKey: randomBytes(64) } });
    expect(chacha.constructor.name).not.toBe('SealingGcmCipher');
  });

  test.each(['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com'])('%s: encrypt() makes the bytes ssh2 makes, packet after packet', (name) => {
    const key = randomBytes(name.startsWith('aes128') ? 16 : 32);
    const iv = randomBytes(12);
    iv.writeUInt32BE(0xffffffff, 8); // the counter's low word wraps within the run
    const theirs: Buffer[] = [];
    const ours: Buffer[] = [];
    const a = ssh2CreateCipher(config(name, key, iv, (p) => theirs.push(Buffer.from(p))));
    const b = ssh2Crypto.createCipher(config(name, key, iv, (p) => ours.push(Buffer.from(p))));
    for (const n of [...Array(40).keys(), 1000, 32768, 32777]) {
      const p = a.allocPacket(n);
      randomBytes(n).copy(p, 5);
      const q = Buffer.from(p);
      a.encrypt(p);
      b.encrypt(q);
    }
    expect(ours.map((p) => p.toString('hex'))).toEqual(theirs.map((p) => p.toString('hex')));
    expect(b.outSeqno).toBe(a.outSeqno);
  });

  test('sendData(): CHANNEL_DATA packets of at most the packet size, data in order, padding random; one nonce sequence with encrypt()', () => {
    const key = randomBytes(16);
    const iv = randomBytes(12);
    const written: Buffer[] = [];
    const c = ssh2Crypto.createCipher(config('aes128-gcm@openssh.com', key, iv, (p) => written.push(Buffer.from(p)))) as unknown as
      InstanceType<typeof seal.SealingGcmCipher>;
    const first = c.allocPacket(3);
    first.set([1, 2, 3], 5);
    c.encrypt(first);
    // 600 KiB: more than one native call's piece, cut at a packet size that does not divide it.
    const data = randomBytes(600 << 10);
    c.sendData(42, data, 30000);
    c.sendData(42, data.subarray(0, 1), 30000);
    const last = c.allocPacket(1);
    last[5] = 9;
    c.encrypt(last);
    expect(c.outSeqno).toBe(5 + 1 + Math.ceil(data.length / 30000) + 1 + 1);
    const plain = open(Buffer.concat(written), key, iv, 0);
    expect(plain[0]!.subarray(1, 4)).toEqual(Buffer.from([1, 2, 3]));
    expect(plain.at(-1)!.subarray(1, 2)).toEqual(Buffer.from([9]));
    const chans = plain.slice(1, -1).map(channelData);
    expect(chans.every((p) => p.recipient === 42 && p.data.length <= 30000)).toBe(true);
    expect(Buffer.concat(chans.map((p) => p.data))).toEqual(Buffer.concat([data, data.subarray(0, 1)]));
    expect(new Set(chans.map((p) => p.pad.toString('hex'))).size).toBe(chans.length);
  });

  test('sealedSize is what seal() writes, for any length and packet size', () => {
    const s = new GcmSeal(randomBytes(16), randomBytes(12));
    for (const [len, ps] of [[0, 32768], [1, 32768], [6, 32768], [7, 32768], [32768, 32768], [32769, 32768], [99999, 4096], [5000, 7]]) {
      const want = GcmSeal.sealedSize(len!, ps!);
      // Each packet: length 4, padding length 1, 9 bytes of CHANNEL_DATA header, the data, 4-19 of padding, tag 16.
      const packets = Math.ceil(len! / ps!);
      expect(want - len! - packets * (4 + 1 + 9 + 16)).toBeGreaterThanOrEqual(packets * 4);
      expect(want - len! - packets * (4 + 1 + 9 + 16)).toBeLessThanOrEqual(packets * 19);
      expect(s.seal(7, randomBytes(len!), ps!, Buffer.alloc(want + 64))).toBe(want);
    }
    s.free();
  });

  test('bad arguments and use after free are errors, not crashes', () => {
    // (Errors from the addon are of Node's realm, not the test's: matched by message.)
    expect(() => new GcmSeal(randomBytes(24), randomBytes(12))).toThrow(/^new GcmSeal\(key: 16 or 32 bytes, iv: 12 bytes\)$/);
    expect(() => new GcmSeal(randomBytes(16), randomBytes(16))).toThrow(/^new GcmSeal\(key/);
    const s = new GcmSeal(randomBytes(16), randomBytes(12));
    expect(() => s.seal(1, randomBytes(100), 32768, Buffer.alloc(100))).toThrow(expect.objectContaining({ code: 'ENOBUFS' }));
    expect(() => s.seal(1, randomBytes(100), 0, Buffer.alloc(1000))).toThrow(/packetSize out of 1\.\.16 MiB/);
    const p = Buffer.alloc(64);
    p.writeUInt32BE(40, 0); // 40 is not what a 64-byte packet with its tag holds
    p[4] = 4;
    expect(() => s.encrypt(p)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    s.free();
    expect(() => s.seal(1, randomBytes(10), 32768, Buffer.alloc(1000))).toThrow(expect.objectContaining({ code: 'EBADF' }));
    s.free(); // twice is fine
  });
});
