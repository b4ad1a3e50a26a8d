/** Shared pieces of the transport tests: real files to send, a raw (hostile) sender, a corrupting link. */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { compress } from 'zstd-napi';
import { FrameType, Message, PREAMBLE, PROTOCOL_VERSION } from '../transport/frames';
import { spawnLocal } from '../transport/local';
import { Channel, MessageReader, MessageWriter } from '../transport/wire';

export function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `godwit-${tag}-`));
}

/** A directory like an image set: compressible and random data, a precompressed file, nesting, an empty file. */
export function makeTree(dir: string, bigMiB = 6): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  const half = Buffer.alloc(bigMiB << 20);
  const rnd = randomBytes(half.length / 2);
  for (let o = 0; o < half.length; o += 8192) rnd.copy(half, o, o / 2, o / 2 + 4096); // half random, half zero
  files['pages-1.img'] = half;
  files['pages-2.gwz'] = compress(randomBytes(1 << 20));
  files['core-1.img'] = randomBytes(777);
  files['sub/deeper/mm-1.img'] = Buffer.from('x'.repeat(100_000));
  files['empty.img'] = Buffer.alloc(0);
  files['manifest'] = Buffer.from('{"complete":true}\n');
  for (const [name, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), data);
  }
  return files;
}

/** Every regular file under dir, relative name -> content. */
export function readTree(dir: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out[r] = fs.readFileSync(path.join(dir, r));
    }
  };
  walk('');
  return out;
}

/** A local receiver driven by hand: the test writes whatever frames it likes (a hostile or broken sender). */
export async function rawSession(dir: string, extra: string[] = []) {
  const ch = spawnLocal({ args: ['receive', '--dir', dir, '--quiet', ...extra] });
  const reader = new MessageReader(ch.fromPeer, 'stream from receiver', 'receiver');
  const writer = new MessageWriter(ch.toPeer, 'receiver');
  let stderr = '';
  ch.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  writer.writePreamble();
  await writer.send({ type: FrameType.Hello, hello: { protocol: PROTOCOL_VERSION, godwit: 'test', role: 'sender', caps: [] } });
  const hello = await reader.next();
  return {
    ch,
    reader,
    writer,
    hello,
    get stderr() {
      return stderr;
    },
    /** Every message until the receiver closes. */
    async drain(): Promise<Message[]> {
      const out: Message[] = [];
      for (;;) {
        const m = await reader.next().catch(() => undefined);
        if (!m) return out;
        out.push(m);
      }
    },
  };
}

export { PREAMBLE };

/**
 * A channel whose bytes to the peer pass through `edit` first (at `seen`: the offset of chunk in the stream): it
 * returns the bytes to send on, or undefined to hold them, and every later byte, for good (a link that stopped
 * carrying anything). A write completes only once the channel has taken its bytes, as on the channel itself: the
 * sender reuses a buffer once its write completes, and the SSH channel may still hold it while it waits for window.
 */
export function tappedChannel(inner: Channel, edit: (chunk: Buffer, seen: number) => Buffer | undefined): Channel {
  let seen = 0;
  let held = false;
  const tap = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const out = held ? undefined : edit(chunk, seen);
      seen += chunk.length;
      if (out === undefined) {
        held = true; // never calls cb: the writer stays blocked
        return;
      }
      inner.toPeer.write(out, (err) => cb(err ?? null));
    },
    final(cb) {
      inner.toPeer.end();
      cb();
    },
  });
  inner.toPeer.on('error', () => tap.destroy());
  // A writer blocked on the tap must see the connection go, as it would without the tap.
  inner.toPeer.on('close', () => tap.destroy());
  return { ...inner, toPeer: tap };
}

/** A channel that flips one byte of the stream to the peer at `offset` (a corrupted link). */
export function corruptingChannel(inner: Channel, offset: number): Channel {
  return tappedChannel(inner, (chunk, seen) => {
    if (offset < seen || offset >= seen + chunk.length) return chunk;
    const copy = Buffer.from(chunk);
    copy[offset - seen] ^= 0x20;
    return copy;
  });
}

export function passThrough(): PassThrough {
  return new PassThrough();
}

/** Resolve after ms. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
