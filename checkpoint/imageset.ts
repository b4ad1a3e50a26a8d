/**
 * Everything a dump will write except page contents: image files by kind, each a list of entries (plain
 * objects in the field names of the .proto files) with optional raw payloads. Collected in memory while the
 * tree is frozen (a few hundred KiB even for large trees), written once the pages are safe.
 */
import type { Extra } from '../images/entry';

export type Msg = Record<string, unknown>;

export interface CollectedEntry {
  msg: Msg;
  /** Raw bytes after the entry (pipe data, socket queue packets, ghost file content, TCP queues). */
  extra?: Extra;
}

export interface CollectedImage {
  /** Registry kind, e.g. 'CORE'. */
  kind: string;
  /** The file name argument (pid, id), if the kind's template has one. */
  arg?: number | bigint | string;
  entries: CollectedEntry[];
}

export class ImageSet {
  readonly images: CollectedImage[] = [];
  private byName = new Map<string, CollectedImage>();

  private image(kind: string, arg?: number | bigint | string): CollectedImage {
    const key = `${kind}/${arg ?? ''}`;
    let img = this.byName.get(key);
    if (!img) {
      img = { kind, entries: [] };
      if (arg !== undefined) img.arg = arg;
      this.byName.set(key, img);
      this.images.push(img);
    }
    return img;
  }

  add(kind: string, arg: number | bigint | string | undefined, msg: Msg, extra?: Extra): void {
    const e: CollectedEntry = { msg };
    if (extra) e.extra = extra;
    this.image(kind, arg).entries.push(e);
  }

  /** Replaces the entries of an image (for tables built elsewhere, such as files.img). */
  put(kind: string, arg: number | bigint | string | undefined, msgs: Msg[]): void {
    this.image(kind, arg).entries = msgs.map((msg) => ({ msg }));
  }

  /** Creates the image even with no entries (CRIU writes some kinds empty). */
  touch(kind: string, arg?: number | bigint | string): void {
    this.image(kind, arg);
  }

  get(kind: string, arg?: number | bigint | string): CollectedImage | undefined {
    return this.byName.get(`${kind}/${arg ?? ''}`);
  }
}
