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
    const reader = await ContainerReader.open(path.join(dst, 'pages-1.gwz'));
    try {
      expect(reader.size).toBe(pages.length);
      expect((await reader.read(0, pages.length)).equals(pages)).toBe(true);
    } finally {
      await reader.close();
    }
  });
});
