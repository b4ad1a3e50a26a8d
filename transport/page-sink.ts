/**
 * A PageSink (images/container-writer.ts) that streams into an ImageSender: the dump's page writer compresses
 * pages into godwit's container and its bytes go straight onto the wire (already zstd: passed through, not
 * recompressed), with no local copy of the image. createSinkPageWriter(streamPageSink(sender, name)) is all a
 * streaming dump needs for its pages.
 */
import type { FileRecord } from '../images/atomic-file';
import type { PageSink } from '../images/container-writer';
import type { FileOptions, ImageSender, StreamFile } from './send';

export function streamPageSink(sender: ImageSender, name: string, opts: FileOptions = {}): PageSink {
  let file: StreamFile | undefined;
  const open = () => (file ??= sender.openFile(name, { compressed: name.endsWith('.gwz'), ...opts }));
  return {
    name,
    async writev(bufs: Uint8Array[]): Promise<void> {
      // The page writer reuses its buffers once this resolves, and the connection may still hold what was
      // written: copy (memcpy is ~10x faster than the link).
      const f = open();
      for (const b of bufs) await f.write(Buffer.from(b));
    },
    async commit(): Promise<FileRecord> {
      const f = open();
      const r = await f.end();
      return { name, size: r.size, crc32: (r.crc >>> 0).toString(16).padStart(8, '0') };
    },
    async abort(): Promise<void> {
      sender.abort(`the writer of "${name}" gave up`);
    },
  };
}
