/**
 * A PageSink (images/container-writer.ts) that streams into an ImageSender: the dump's page writer compresses
 * pages into godwit's container and its bytes go straight onto the wire (already zstd: passed through, not
 * recompressed), with no local copy of the image. createSinkPageWriter(streamPageSink(sender, name)) is all a
 * streaming dump needs for its pages.
 */
import type { FileRecord } from '../images/atomic-file';
import { crc32, crc32Combine, crc32Hex } from '../images/crc32';
import type { PageSink } from '../images/container-writer';
import type { FileOptions, ImageSender, StreamFile } from './send';

export function streamPageSink(sender: ImageSender, name: string, opts: FileOptions = {}): PageSink {
  let file: StreamFile | undefined;
  const open = () => (file ??= sender.openFile(name, { compressed: name.endsWith('.gwz'), ...opts }));
  return {
    name,
    async writev(bufs: Uint8Array[], crcs?: Array<number | undefined>): Promise<void> {
      // The page writer reuses its buffers once this resolves, while the connection may still hold them (the SSH
      // channel seals a write into its packets at once, unless its window is full). So they go out as they are
      // and this resolves once the connection has released every one: copying them first would be one more pass
      // over every compressed byte on the source's main thread, into fresh buffers to fault in. The writer packs a
      // job's chunks, each after its header, one after another: a run of adjacent buffers goes out as one Data
      // frame (up to the stream's chunk size), its crc combined from theirs rather than the bytes hashed again.
      const f = open();
      let held = 1;
      let allReleased!: () => void;
      const released = new Promise<void>((r) => (allReleased = r));
      const release = () => {
        if (--held === 0) allReleased();
      };
      let run: { buffer: ArrayBufferLike; start: number; end: number; crc: number } | undefined;
      const send = async () => {
        if (!run) return;
        const r = run;
        run = undefined;
        held++;
        await f.write(Buffer.from(r.buffer, r.start, r.end - r.start), r.crc, release);
      };
      for (let i = 0; i < bufs.length; i++) {
        const b = bufs[i]!;
        if (b.byteLength === 0) continue;
        const crc = crcs?.[i] ?? crc32(b);
        if (run && run.buffer === b.buffer && run.end === b.byteOffset && run.end - run.start + b.byteLength <= sender.maxChunk) {
          run.crc = crc32Combine(run.crc, crc, b.byteLength);
          run.end += b.byteLength;
          continue;
        }
        await send();
        run = { buffer: b.buffer, start: b.byteOffset, end: b.byteOffset + b.byteLength, crc };
      }
      await send();
      release();
      await sender.unlessFailed(released);
    },
    async commit(): Promise<FileRecord> {
      const f = open();
      const r = await f.end();
      return { name, size: r.size, crc32: crc32Hex(r.crc) };
    },
    async abort(): Promise<void> {
      sender.abort(`the writer of "${name}" gave up`);
    },
  };
}
