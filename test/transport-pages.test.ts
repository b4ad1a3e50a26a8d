import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pageData } from '../bench/pagedata';
import { ContainerReader } from '../images/container-reader';
import { createSinkPageWriter } from '../images/container-writer';
import { closeAllLocal, spawnLocal } from '../transport/local';
import { streamPageSink } from '../transport/page-sink';
import { ImageSender } from '../transport/send';
import { tempDir } from './transport-helpers';

let work: string;
beforeAll(() => {
  work = tempDir('pages');
});
afterEach(async () => {
  await closeAllLocal();
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('streaming a dump\'s pages', () => {
  test('the container page writer streams straight into the sender; pages pass through, not recompressed', async () => {
    const dst = path.join(work, 'img');
    const ch = spawnLocal({ args: ['receive', '--dir', dst] });
    const sender = await ImageSender.open(ch);
    const pages = pageData(24 << 20, true);
    const writer = createSinkPageWriter(streamPageSink(sender, 'pages-1.gwz'), { workers: 1 });
    for (let o = 0; o < pages.length; o += 4 << 20) await writer.write(pages.subarray(o, o + (4 << 20)));
    const rec = await writer.finish();
    const r = await sender.finish();
    await sender.close();
    const onDisk = fs.statSync(path.join(dst, 'pages-1.gwz')).size;
    expect(rec.size).toBe(onDisk);
    // Half the pages are random: the container is about half the data, and the wire carries it as is
    // (no second zstd pass: framing overhead only).
    expect(onDisk).toBeLessThan(pages.length * 0.6);
    expect(r.wireBytes).toBeGreaterThanOrEqual(onDisk);
    expect(r.wireBytes).toBeLessThan(onDisk * 1.01);
    // Announced without a size (compressed as it is sent), and large: written around the page cache (O_DIRECT).
    const cached = Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path.join(dst, 'pages-1.gwz')], { encoding: 'utf8' }).trim());
    expect(cached).toBeLessThan(onDisk / 2);
    const reader = await ContainerReader.open(path.join(dst, 'pages-1.gwz'));
    try {
      expect(reader.size).toBe(pages.length);
      expect((await reader.read(0, pages.length)).equals(pages)).toBe(true);
    } finally {
      await reader.close();
    }
  });
  test('a receiver that dies while the connection holds the writer\'s buffers fails the writer, never leaves it waiting', async () => {
    const ch = spawnLocal({ args: ['receive', '--dir', path.join(work, 'img-dies')] });
    const sender = await ImageSender.open(ch);
    const writer = createSinkPageWriter(streamPageSink(sender, 'pages-1.gwz'), { workers: 1 });
    const pages = pageData(4 << 20, true);
    // Stopped, the receiver leaves the pipe full: the writer's buffers stay queued on the connection.
    process.kill(ch.pid, 'SIGSTOP');
    let killed = false;
    const t0 = Date.now();
    const run = (async () => {
      for (let i = 0; i < 64; i++) await writer.write(pages);
      await writer.finish();
    })();
    setTimeout(() => {
      killed = true;
      process.kill(ch.pid, 'SIGKILL');
    }, 1500);
    await expect(run).rejects.toThrow(/receiver|closed|connection|EPIPE/i);
    expect(killed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(20_000);
    await writer.abort();
    sender.abort('test over');
  }, 60_000);
  test('unlessFailed: a wait that would never end (buffers an SSH channel never releases) ends with the stream\'s failure', async () => {
    const ch = spawnLocal({ args: ['receive', '--dir', path.join(work, 'img-never')] });
    const sender = await ImageSender.open(ch);
    const waiting = sender.unlessFailed(new Promise<void>(() => undefined));
    process.kill(ch.pid, 'SIGKILL');
    await expect(waiting).rejects.toThrow(/receiver/);
    expect(await sender.unlessFailed(Promise.resolve(7)).catch((e: Error) => e.message)).toMatch(/receiver/);
  }, 30_000);
});
