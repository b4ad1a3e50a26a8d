/**
 * Types shared by the image reader and writer, and the byte-request protocol between the one image
 * parser (a generator) and its two drivers: a Buffer (sync) and a file or stream (async).
 */
import type { Msg } from './wire';

/** One message of an ipc-msg queue and its text. */
export interface IpcMsgItem {
  msg: Msg;
  data: Buffer;
}

/** The raw payload after an entry: its shape depends on the kind (registry PayloadKind). */
export type Extra =
  | Buffer // pipe-data, sk-queue, ghost-file, ipc-shm, bpfmap-data
  | { inq: Buffer; outq: Buffer } // tcp-stream
  | number[] // ipc-sem: u16 values
  | IpcMsgItem[]; // ipc-msg

export interface ImageEntry {
  /** Message type name, e.g. 'core_entry', 'pagemap_head'. */
  type: string;
  msg: Msg;
  extra?: Extra;
}

/** What the parser asks its driver for. */
export type Need =
  | { op: 'read'; n: number; what: string } // exactly n bytes (driver fails clearly if the file is shorter)
  | { op: 'eof' } // answer true if no byte is left
  | { op: 'rest'; what: string } // every remaining byte
  | { op: 'entry'; entry: ImageEntry }; // an entry is complete (answer ignored)

/** A parser: yields Needs; the driver answers read/rest with a Buffer and eof with a boolean. */
export type Parser = Generator<Need, void, unknown>;

/**
 * The largest protobuf entry accepted. CRIU's biggest messages (mm with thousands of VMAs, cgroup
 * trees) stay in the low megabytes; a larger length field is corruption, and refusing it keeps a
 * damaged file from making us allocate gigabytes.
 */
export const MAX_ENTRY_SIZE = 64 * 1024 * 1024;
