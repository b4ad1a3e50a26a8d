import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FrameType, MAX_CHUNK_SIZE, PREAMBLE, PROTOCOL_VERSION, encodeMessage } from '../transport/frames';
import { closeAllLocal, spawnLocal } from '../transport/local';
import { DEFAULT_WINDOW, ImageReceiver } from '../transport/receive';
import { ImageSender } from '../transport/send';
import { describeError } from '../util/errors';
import { sleep, tempDir } from './transport-helpers';

let work: string;
const stopped = new Set<number>();

beforeAll(() => {
  work = tempDir('flow');
});

afterEach(async () => {
  // A receiver left stopped by a failed test must run again to clean up and exit.
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // already gone
    }
  }
  stopped.clear();
  await closeAllLocal();
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** An endless producer of incompressible bytes (a 4 MiB random block, cycled: beyond zstd level 1's window). */
function producer(limit: number) {
  const block = randomBytes(4 << 20);
  const state = { produced: 0 };
  const stream = new Readable({
    highWaterMark: 256 << 10,
    read() {
      if (state.produced >= limit) {
        this.push(null);
        return;
      }
      const off = state.produced % block.length;
      const n = Math.min(256 << 10, block.length - off, limit - state.produced);
      state.produced += n;
      this.push(block.subarray(off, off + n));
    },
  });
  return { stream, state };
}

function sizeOnDisk(dir: string): number {
  let n = 0;
  if (!fs.existsSync(dir)) return 0; // not made yet: the receiver makes it right after the handshake
  for (const e of fs.readdirSync(dir)) {
    // The file under its temporary name, or under its own once complete.
    if (e.startsWith('.godwit-part-') || e === 'pages-1.img') n += fs.statSync(path.join(dir, e), { throwIfNoEntry: false })?.size ?? 0;
  }
  return n;
}

describe('transport flow control', () => {
  test('a stopped receiver stops the sender: what the producer made beyond the disk stays within the window', async () => {
    const dst = path.join(work, 'stopped');
    const ch = spawnLocal({ args: ['receive', '--dir', dst] });
    const sender = await ImageSender.open(ch);
    const total = 96 << 20;
    const { stream, state } = producer(total);
    const done = pipeline(stream, sender.beginFile('pages-1.img'));
    done.catch(() => undefined);
    while (state.produced < 8 << 20) await sleep(10);
    process.kill(ch.pid, 'SIGSTOP');
    stopped.add(ch.pid);
    const rss0 = process.memoryUsage().rss;
    // Wait until the sender has stalled: production does not move for half a second.
    let last = -1;
    for (let i = 0; i < 100 && state.produced !== last; i++) {
      last = state.produced;
      await sleep(500);
    }
    expect(state.produced).toBe(last);
    expect(state.produced).toBeLessThan(total);
    const onDisk = sizeOnDisk(dst);
    // In flight at most: the window, one chunk being assembled, the stream buffers and the pipe.
    const slack = 4 << 20;
    expect(state.produced - onDisk).toBeLessThanOrEqual(DEFAULT_WINDOW + MAX_CHUNK_SIZE + slack);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 << 20);
    process.kill(ch.pid, 'SIGCONT');
    stopped.delete(ch.pid);
    await done;
    const r = await sender.finish();
    await sender.close();
    expect(r.rawBytes).toBe(total);
    expect(fs.statSync(path.join(dst, 'pages-1.img')).size).toBe(total);
  });

  test('a slow receiver (stopped two thirds of the time) keeps the sender\'s memory flat', async () => {
    const dst = path.join(work, 'slow');
    const ch = spawnLocal({ args: ['receive', '--dir', dst] });
    const sender = await ImageSender.open(ch);
    const total = 64 << 20;
    const { stream, state } = producer(total);
    let maxAhead = 0;
    let maxRss = 0;
    const rss0 = process.memoryUsage().rss;
    let running = true;
    const throttle = (async () => {
      while (running) {
        process.kill(ch.pid, 'SIGSTOP');
        stopped.add(ch.pid);
        await sleep(30);
        const disk = sizeOnDisk(dst);
        maxAhead = Math.max(maxAhead, state.produced - disk);
        maxRss = Math.max(maxRss, process.memoryUsage().rss - rss0);
        process.kill(ch.pid, 'SIGCONT');
        stopped.delete(ch.pid);
        await sleep(15);
      }
    })();
    try {
      await pipeline(stream, sender.beginFile('pages-1.img'));
      await sender.finish();
    } finally {
      running = false;
      await throttle;
    }
    await sender.close();
    expect(fs.statSync(path.join(dst, 'pages-1.img')).size).toBe(total);
    expect(maxAhead).toBeLessThanOrEqual(DEFAULT_WINDOW + MAX_CHUNK_SIZE + (4 << 20));
    expect(maxRss).toBeLessThan(80 << 20);
  });

  test('a sender that ignores its credit is cut off, and nothing is left behind', async () => {
    const dst = path.join(work, 'greedy');
    const toReceiver = new PassThrough();
    const fromReceiver = new PassThrough();
    fromReceiver.resume();
    const receiver = new ImageReceiver({ dir: dst, channel: { label: 'greedy sender', toPeer: fromReceiver, fromPeer: toReceiver, close() {} } });
    // Everything at once, before the receiver can process (and credit) any of it: window + 1 chunk.
    const frames = [PREAMBLE, ...encodeMessage({ type: FrameType.Hello, hello: { protocol: PROTOCOL_VERSION, godwit: 't', role: 'sender', caps: [] } }),
      ...encodeMessage({ type: FrameType.FileBegin, id: 1, mode: 0o600, name: 'x' })];
    const chunk = Buffer.alloc(MAX_CHUNK_SIZE, 1);
    for (let sent = 0; sent <= DEFAULT_WINDOW; sent += chunk.length + 8) {
      frames.push(...encodeMessage({ type: FrameType.Data, id: 1, rawLength: chunk.length, zstd: false, data: chunk }));
    }
    toReceiver.write(Buffer.concat(frames));
    let err: unknown;
    try {
      await receiver.receive();
    } catch (e) {
      err = e;
    }
    await receiver.discard();
    expect(describeError(err)).toMatch(/exceeded its flow-control window/);
    expect(fs.existsSync(dst)).toBe(false);
  });
});
