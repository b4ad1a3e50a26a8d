import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FrameType, MARKER_NAME } from '../transport/frames';
import { localEndpoint, sendImageDir } from '../transport/endpoint';
import { GODWIT_CLI, closeAllLocal, spawnLocal } from '../transport/local';
import { ImageReceiver, discardStale, processStartTime } from '../transport/receive';
import { ImageSender } from '../transport/send';
import { describeError } from '../util/errors';
import { corruptingChannel, makeTree, rawSession, readTree, sleep, tempDir } from './transport-helpers';

let work: string;
let src: string;
let files: Record<string, Buffer>;

beforeAll(() => {
  work = tempDir('send');
  src = path.join(work, 'src');
  fs.mkdirSync(src);
  files = makeTree(src);
});

afterEach(async () => {
  await closeAllLocal();
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** Buffers compared with equals(): jest's deep equality walks them byte by byte (minutes for megabytes). */
function expectSameTree(got: Record<string, Buffer>, want: Record<string, Buffer>): void {
  expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
  for (const [name, data] of Object.entries(want)) expect([name, got[name]!.equals(data)]).toEqual([name, true]);
}

describe('godwit send/receive over a local child process', () => {
  test('a directory round-trips byte for byte, 0600 files in 0700 directories, compressed on the wire', async () => {
    const dst = path.join(work, 'rt');
    const r = await sendImageDir(localEndpoint(), src, dst);
    expectSameTree(readTree(dst), files);
    expect(r.files).toBe(Object.keys(files).length);
    const raw = Object.values(files).reduce((n, b) => n + b.length, 0);
    expect(r.rawBytes).toBe(raw);
    // pages-1.img is half zeros: it must shrink; pages-2.gwz is already zstd: it passes through.
    expect(r.wireBytes).toBeLessThan(raw * 0.75);
    expect(r.wireBytes).toBeGreaterThan((files['pages-1.img']!.length / 2) + files['pages-2.gwz']!.length);
    for (const name of Object.keys(files)) expect(fs.statSync(path.join(dst, name)).mode & 0o777).toBe(0o600);
    for (const d of ['', 'sub', 'sub/deeper']) expect(fs.statSync(path.join(dst, d)).mode & 0o777).toBe(0o700);
    expect(fs.existsSync(path.join(dst, MARKER_NAME))).toBe(false);
  });

  test('the receiver fsyncs every file and directory before Complete; not durable (a migration target that discards its images), none', async () => {
    // The real FileHandle's own sync and datasync, counted (the receiver's only ways to sync).
    const probe = await fs.promises.open(path.join(src, 'core-1.img'), 'r');
    const proto = Object.getPrototypeOf(probe) as { sync: () => Promise<void>; datasync: () => Promise<void> };
    await probe.close();
    const sync = jest.spyOn(proto, 'sync');
    const datasync = jest.spyOn(proto, 'datasync');
    try {
      for (const durable of [true, false]) {
        sync.mockClear();
        datasync.mockClear();
        const dst = path.join(work, `durable-${durable}`);
        const toReceiver = new PassThrough();
        const toSender = new PassThrough();
        const receiver = new ImageReceiver({ dir: dst, durable, channel: { label: 'sender', toPeer: toSender, fromPeer: toReceiver, close() {} } });
        const received = receiver.receive();
        const sender = await ImageSender.open({ label: 'receiver', toPeer: toReceiver, fromPeer: toSender, close() {} });
        await sender.sendDirectory(src);
        const r = await sender.finish();
        await received;
        expectSameTree(readTree(dst), files);
        expect(r.files).toBe(Object.keys(files).length);
        // Each file once, then the directory and the two it made ('sub', 'sub/deeper').
        expect([durable, sync.mock.calls.length + datasync.mock.calls.length]).toEqual([durable, durable ? Object.keys(files).length + 3 : 0]);
      }
    } finally {
      sync.mockRestore();
      datasync.mockRestore();
    }
  });

  test('the streaming producer API: files written while they are produced, two at once', async () => {
    const dst = path.join(work, 'stream');
    const ch = spawnLocal({ args: ['receive', '--dir', dst] });
    const sender = await ImageSender.open(ch);
    const a = randomBytes(3 << 20);
    const b = Buffer.alloc(5 << 20, 0x5a);
    // Uneven pieces, as a dump writes them.
    const pieces = (buf: Buffer) => Readable.from((function* () {
      for (let o = 0; o < buf.length;) {
        const n = 1 + ((o * 7919) % 300_000);
        yield buf.subarray(o, o + n);
        o += n;
      }
    })());
    await Promise.all([
      pipeline(pieces(a), sender.beginFile('pages-1.img')),
      pipeline(pieces(b), sender.beginFile('dir/pages-2.img')),
    ]);
    await pipeline(Readable.from([Buffer.from('manifest')]), sender.beginFile('manifest'));
    const r = await sender.finish();
    await sender.close();
    expect(r.files).toBe(3);
    expect(fs.readFileSync(path.join(dst, 'pages-1.img')).equals(a)).toBe(true);
    expect(fs.readFileSync(path.join(dst, 'dir/pages-2.img')).equals(b)).toBe(true);
  });

  test('a corrupted chunk on the link is detected: the sender gets a clear error, the target dir is gone', async () => {
    const dst = path.join(work, 'corrupt');
    const inner = spawnLocal({ args: ['receive', '--dir', dst] });
    // Well inside pages-1.img's data (the first file sent is core-1.img, 777 bytes).
    const ch = corruptingChannel(inner, 2 << 20);
    const sender = await ImageSender.open(ch);
    let err: unknown;
    try {
      await sender.sendDirectory(src);
      await sender.finish();
    } catch (e) {
      err = e;
    }
    expect(describeError(err)).toMatch(/checksum mismatch \(the stream is corrupted\)/);
    expect(describeError(err)).toMatch(/at offset \d+: frame \d+/);
    await inner.exited;
    expect(fs.existsSync(dst)).toBe(false);
  });

  test.each([
    ['../x'],
    ['/etc/passwd'],
    ['a/../../b'],
    ['.godwit-receiving'],
  ])('a hostile name %j is refused and nothing is written anywhere', async (name) => {
    const dst = path.join(work, 'hostile');
    const s = await rawSession(dst);
    expect(s.hello?.type).toBe(FrameType.Hello);
    await s.writer.send({ type: FrameType.FileBegin, id: 1, mode: 0o644, name });
    await s.writer.send({ type: FrameType.Data, id: 1, rawLength: 4, zstd: false, data: Buffer.from('evil') });
    const answers = await s.drain();
    const e = answers.find((m) => m.type === FrameType.Error);
    expect(e).toBeDefined();
    expect((e as { message: string }).message).toMatch(/is refused/);
    expect((await s.ch.exited).code).toBe(1);
    expect(fs.existsSync(dst)).toBe(false);
    expect(fs.existsSync(path.join(work, 'x'))).toBe(false);
    expect(fs.existsSync(path.join(work, 'b'))).toBe(false);
  });

  test('the target directory may not be a symlink', async () => {
    const real = path.join(work, 'real');
    fs.mkdirSync(real);
    const link = path.join(work, 'link');
    fs.symlinkSync(real, link);
    let err: unknown;
    await sendImageDir(localEndpoint(), src, link).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/is a symlink: refusing to follow it/);
    expect(fs.readdirSync(real)).toEqual([]);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
  });

  test('a symlink planted where a file or directory will go is never followed', async () => {
    const victim = path.join(work, 'victim');
    fs.mkdirSync(victim);
    for (const [planted, name] of [['pages-1.img', 'pages-1.img'], ['sub', 'sub/x.img']] as const) {
      const dst = path.join(work, `plant-${planted}`);
      const ch = spawnLocal({ args: ['receive', '--dir', dst] });
      const sender = await ImageSender.open(ch);
      // The receiver makes dst right after the handshake; plant the link before the file is begun.
      for (let i = 0; i < 200 && !fs.existsSync(dst); i++) await sleep(10);
      fs.symlinkSync(path.join(victim, planted), path.join(dst, planted));
      const w = sender.beginFile(name);
      let err: unknown;
      try {
        await pipeline(Readable.from([Buffer.alloc(10_000, 1)]), w);
        await sender.finish();
      } catch (e) {
        err = e;
      }
      expect(describeError(err)).toMatch(/already exists|exists already/);
      await ch.exited;
      expect(fs.existsSync(dst)).toBe(false);
      expect(fs.readdirSync(victim)).toEqual([]);
    }
  });

  test('a non-empty target directory is refused before anything is written', async () => {
    const dst = path.join(work, 'full');
    fs.mkdirSync(dst);
    fs.writeFileSync(path.join(dst, 'keep'), 'mine');
    let err: unknown;
    await sendImageDir(localEndpoint(), src, dst).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/is not empty/);
    expect(fs.readdirSync(dst)).toEqual(['keep']);
  });

  test('an empty existing target directory is used, and emptied again on failure', async () => {
    const dst = path.join(work, 'empty-existing');
    fs.mkdirSync(dst);
    const s = await rawSession(dst);
    await s.writer.send({ type: FrameType.FileBegin, id: 1, mode: 0o600, name: 'sub/a.img' });
    await s.writer.send({ type: FrameType.Data, id: 1, rawLength: 3, zstd: false, data: Buffer.from('abc') });
    await s.writer.send({ type: FrameType.FileEnd, id: 1, size: 3, crc: 1234 }); // wrong crc
    const answers = await s.drain();
    expect(answers.some((m) => m.type === FrameType.Error && /checksum mismatch/.test(m.message))).toBe(true);
    await s.ch.exited;
    expect(fs.readdirSync(dst)).toEqual([]);
  });

  test('a missing godwit on the target is a clear error', async () => {
    let err: unknown;
    await sendImageDir(localEndpoint({ command: ['/nonexistent/bin/godwit'] }), src, path.join(work, 'nogodwit')).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/godwit: command not found on local — install godwit on it/);
  });

  test('an old godwit without `receive` is a clear error', async () => {
    // The real CLI asked for a command it does not have, as an old godwit would be.
    let err: unknown;
    const old = localEndpoint({ command: [process.execPath, GODWIT_CLI, 'receive-from-the-future'] });
    await sendImageDir(old, src, path.join(work, 'old')).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/does not understand `receive`/);
  });

  test('a godwit speaking another protocol version is a clear error', async () => {
    // A peer that answers with protocol 0 (the preamble and a hello as an older release would write them).
    const script = `
      const { encodeMessage, PREAMBLE } = require(${JSON.stringify(path.resolve(__dirname, '../transport/frames'))});
      process.stdout.write(Buffer.concat([PREAMBLE, ...encodeMessage({ type: 1, hello: { protocol: 0, godwit: '0.0.9', role: 'receiver', caps: [], window: 16777216 } })]));
      process.stdin.resume(); process.stdin.on('end', () => process.exit(0));`;
    let err: unknown;
    await sendImageDir(localEndpoint({ command: [process.execPath, '-e', script, '--'] }), src, path.join(work, 'proto0')).catch((e) => (err = e));
    expect(describeError(err)).toMatch(/godwit on local is 0\.0\.9 \(protocol 0\), need protocol 1/);
  });

  test('the sweep removes only what a dead receiver left: never a live one\'s, never a complete image set', async () => {
    const mk = (name: string, entries: Record<string, string>) => {
      const d = path.join(work, name);
      fs.mkdirSync(d);
      for (const [n, c] of Object.entries(entries)) fs.writeFileSync(path.join(d, n), c);
      return d;
    };
    const dead = mk('sweep-dead', { [MARKER_NAME]: JSON.stringify({ pid: 999999999, start: 1, createdRoot: true }), '.godwit-part-3': 'x' });
    expect(await discardStale(dead)).toBe('removed');
    expect(fs.existsSync(dead)).toBe(false);
    const live = mk('sweep-live', { [MARKER_NAME]: JSON.stringify({ pid: process.pid, start: processStartTime(process.pid), createdRoot: true }) });
    expect(await discardStale(live)).toBe('busy');
    expect(fs.existsSync(live)).toBe(true);
    const complete = mk('sweep-complete', { 'core-1.img': 'x', manifest: '{}' });
    expect(await discardStale(complete)).toBe('none');
    expect(fs.readdirSync(complete).sort()).toEqual(['core-1.img', 'manifest']);
    const early = mk('sweep-early', { [MARKER_NAME]: '' }); // killed while writing its marker
    expect(await discardStale(early)).toBe('removed');
    const empty = mk('sweep-empty', {}); // killed right after mkdir
    expect(await discardStale(empty)).toBe('removed');
    expect(fs.existsSync(empty)).toBe(false);
  });
});
