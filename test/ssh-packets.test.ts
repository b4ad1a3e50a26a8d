/**
 * transport/ssh-packets.ts replaces ssh2's AES-GCM packet allocation: the packets must be laid out exactly as ssh2
 * lays them out (a wrong length or padding length breaks the connection, or worse, only for some payload sizes),
 * and the padding must be fresh random bytes, never repeated. Checked on ssh2's own cipher object; the connection
 * over the bed's sshd is covered in test/ssh (32 MiB through sha256sum with pooled padding).
 */
import { randomBytes } from 'node:crypto';
import { POOLED, poolPackets } from '../transport/ssh-packets';

// ssh2's internals, as transport/ssh-packets.ts finds them on a connection.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { createCipher, CIPHER_INFO } = require('ssh2/lib/protocol/crypto.js') as {
  createCipher: (config: object) => { allocPacket(n: number): Buffer; constructor: { name: string } };
  CIPHER_INFO: Record<string, object>;
};

function gcmCipher(): { allocPacket(n: number): Buffer; constructor: { name: string } } {
  return createCipher({ outbound: { seqno: 0, onWrite: () => undefined, cipherInfo: CIPHER_INFO['aes128-gcm@openssh.com'],
    cipherKey: randomBytes(16), cipherIV: randomBytes(12), macInfo: {}, macKey: null } });
}

describe('pooled packet padding and slab allocation', () => {
  test('ssh2 has its AES-GCM binding here, so the pool applies', () => {
    expect(gcmCipher().constructor.name).toBe('AESGCMCipherBinding');
  });

  test('packets are laid out as ssh2 lays them out, for every payload length across two blocks and large ones', () => {
    const original = gcmCipher();
    const protocol: Record<string, unknown> = { _cipher: gcmCipher() };
    expect(poolPackets({ _protocol: protocol })).toBe(true);
    const pooled = protocol._cipher as { allocPacket(n: number): Buffer };
    for (const n of [...Array(64).keys(), 1000, 32768, 32777, 35000]) {
      const a = original.allocPacket(n);
      const b = pooled.allocPacket(n);
      expect({ n, length: b.length, header: b.subarray(0, 5).toString('hex') })
        .toEqual({ n, length: a.length, header: a.subarray(0, 5).toString('hex') });
    }
  });

  test('padding bytes are random and not reused across packets', () => {
    const protocol: Record<string, unknown> = { _cipher: gcmCipher() };
    poolPackets({ _protocol: protocol });
    const c = protocol._cipher as { allocPacket(n: number): Buffer };
    const seen = new Set<string>();
    // 20,000 packets go through several refills of the 64 KiB pool.
    for (let i = 0; i < 20_000; i++) {
      const p = c.allocPacket(15); // 1 + 15 = 16 bytes to pad: a whole block (16 bytes) of padding
      const pad = p.subarray(5 + 15, 5 + 15 + p[4]!).toString('hex');
      expect(pad.length).toBe(32);
      seen.add(pad);
    }
    expect(seen.size).toBe(20_000);
  });

  test('packets cut from one slab do not overlap, and a large one gets memory of its own', () => {
    const protocol: Record<string, unknown> = { _cipher: gcmCipher() };
    poolPackets({ _protocol: protocol });
    const c = protocol._cipher as { allocPacket(n: number): Buffer };
    const packets = Array.from({ length: 100 }, (_, i) => c.allocPacket(1000 + i));
    packets.forEach((p, i) => p.fill(i));
    packets.forEach((p, i) => expect(p.every((b) => b === i)).toBe(true));
    expect(new Set(packets.map((p) => p.buffer)).size).toBeLessThan(10);
    const big = c.allocPacket(400_000);
    expect(big.buffer).not.toBe(packets[packets.length - 1]!.buffer);
  });

  test('a cipher installed later (a rekey) is pooled too; other ciphers and shapes are left alone', () => {
    const protocol: Record<string, unknown> = { _cipher: { allocPacket: (n: number) => Buffer.alloc(n) } };
    expect(poolPackets({ _protocol: protocol })).toBe(false);
    const next = gcmCipher();
    protocol._cipher = next;
    expect((protocol._cipher as Record<symbol, unknown>)[POOLED]).toBe(true);
    expect(poolPackets({})).toBe(false);
    expect(poolPackets(undefined)).toBe(false);
  });
});

describe('packets gathered into socket writes', () => {
  /** A socket as ssh2's client sees it; write callbacks run when the test says the kernel took the bytes. */
  function fakeSocket() {
    const writes: Buffer[] = [];
    const pending: Array<() => void> = [];
    const sock = {
      writable: true,
      _readableState: { ended: false },
      ended: false,
      write(b: Buffer, cb: () => void) {
        writes.push(Buffer.from(b)); // what went out at this moment
        pending.push(cb);
        return true;
      },
      end() {
        sock.ended = true;
      },
    };
    return { sock, writes, complete: () => pending.splice(0).forEach((cb) => cb()) };
  }

  function connection() {
    const { sock, writes, complete } = fakeSocket();
    const direct: Buffer[] = [];
    const cipher = gcmCipher() as ReturnType<typeof gcmCipher> & { _onWrite: (p: Buffer) => void; encrypt(p: Buffer): void };
    cipher._onWrite = (p: Buffer) => direct.push(Buffer.from(p));
    const protocol: Record<string, unknown> = { _cipher: cipher };
    expect(poolPackets({ _protocol: protocol, _sock: sock })).toBe(true);
    const c = protocol._cipher as typeof cipher;
    const packet = (n: number, fill: number) => {
      const p = c.allocPacket(n);
      p.fill(fill, 5, 5 + n);
      return p;
    };
    return { sock, writes, complete, direct, c, packet, protocol };
  }

  test('packets encrypted in a row go out as one write at the end of the tick, in order', async () => {
    const { writes, c, packet } = connection();
    const sent: Buffer[] = [];
    for (let i = 0; i < 10; i++) {
      const p = packet(1000, i);
      c._onWrite(p);
      sent.push(Buffer.from(p));
    }
    expect(writes.length).toBe(0);
    await new Promise((r) => process.nextTick(r));
    expect(writes.length).toBe(1);
    expect(writes[0]!.equals(Buffer.concat(sent))).toBe(true);
  });

  test('a packet from elsewhere, a rekey and the end of the socket each send what is gathered first', async () => {
    const { writes, direct, c, packet, sock, protocol } = connection();
    const a = packet(100, 1);
    c._onWrite(a);
    const big = Buffer.alloc(400_000, 7); // not from a slab: written as ssh2 would, after the run
    c._onWrite(big);
    expect(writes.length).toBe(1);
    expect(direct.length).toBe(1);
    c._onWrite(packet(100, 2));
    protocol._cipher = gcmCipher(); // a rekey installs a new cipher
    expect(writes.length).toBe(2);
    (protocol._cipher as { allocPacket(n: number): Buffer }).allocPacket(10);
    c._onWrite(packet(100, 3));
    (sock as { end(): void }).end();
    expect(writes.length).toBe(3);
    expect(sock.ended).toBe(true);
  });

  test('a slab is cut again only once every write of its packets has completed', async () => {
    const { writes, complete, c, packet } = connection();
    // 32 KiB packets: a 1 MiB slab holds 31; 100 of them fill four slabs.
    const seen = new Set<ArrayBufferLike>();
    const sent: Buffer[] = [];
    for (let i = 0; i < 100; i++) {
      const p = packet(32 * 1024, i & 0xff);
      seen.add(p.buffer);
      sent.push(Buffer.from(p));
      c._onWrite(p);
    }
    await new Promise((r) => process.nextTick(r));
    expect(seen.size).toBe(4); // no write completed: fresh memory each time
    // Four slabs, four writes, every packet in order.
    expect(writes.length).toBe(4);
    expect(Buffer.concat(writes).equals(Buffer.concat(sent))).toBe(true);
    complete();
    const again = new Set<ArrayBufferLike>();
    for (let i = 0; i < 100; i++) again.add(packet(32 * 1024, 0).buffer);
    expect([...again].some((b) => seen.has(b))).toBe(true);
  });

  test('packets ssh2 queues during a key exchange keep their memory until they are sent after it', async () => {
    const { complete, c, packet, protocol } = connection();
    // Before the exchange: a few packets written and completed, so the slab has spares to serve.
    for (let i = 0; i < 40; i++) c._onWrite(packet(32 * 1024, 0));
    await new Promise((r) => process.nextTick(r));
    complete();
    // ssh2 queues what it allocates while _kexinit is set (2 MiB: a remote window's worth), unwritten.
    protocol._kexinit = {};
    const queued = Array.from({ length: 64 }, (_, i) => packet(32 * 1024, i));
    const copies = queued.map((p) => Buffer.from(p));
    // ... and once NEWKEYS is in, the connection goes on cutting packets from its slabs before the queue drains.
    protocol._kexinit = undefined;
    for (let i = 0; i < 100; i++) {
      c._onWrite(packet(32 * 1024, 0xee));
      await new Promise((r) => process.nextTick(r));
      complete();
    }
    expect(queued.map((p, i) => p.equals(copies[i]!))).toEqual(queued.map(() => true));
  });
});
