/** State shared by the collection steps of one dump. */
import type { Helper } from '../native/helper';
import type { Tree } from './tree';
import { ImageSet } from './imageset';
import { FileTable } from './filetable';
import { SocketTables } from './fdkinds';
import { InetDumpState, newInetState } from './inet';
import { ShmemTable } from './shmem';
import { SeccompTable } from './seccomp';
import type { NamespaceIds } from './namespaces';

export interface CollectContext {
  helper: Helper;
  tree: Tree;
  images: ImageSet;
  files: FileTable;
  sockets: SocketTables;
  /** Pipe inodes whose data is already in pipes-data.img / fifo-data.img. */
  pipesSeen: Set<number>;
  /** Unix socket inodes already described in unixsk.img. */
  unixSeen: Map<number, number>;
  /** TCP/UDP sockets seen and connections in repair mode (checkpoint/inet.ts). */
  inet: InetDumpState;
  /**
   * fds seen per description key (same object, flags, position): kcmp tells separate opens with the same state
   * apart (files.ts describe).
   */
  holders: Map<string, { pid: number; fd: number; key: string }[]>;
  /** Ghost files written so far, by the deleted file's dev:ino -> ghost id. */
  ghosts: Map<string, number>;
  /** Largest deleted-file content carried in the image (bytes): bigger ones are refused with a clear error. */
  ghostLimit: number;
  /** Shared anonymous memory and memfds of the tree, each dumped once (shmem.ts). */
  shmem: ShmemTable;
  /** Seccomp filters of every thread, each distinct chain link once (seccomp.ts). */
  seccomp: SeccompTable;
  /** Link remaps this dump made (files.ts dumpLinkRemap), removed again if it fails. */
  linkRemaps: string[];
  /** The tree's namespaces (set by collectAll): namespace files held open name them (nsfiles.ts). */
  ns?: NamespaceIds;
}

export function newContext(helper: Helper, tree: Tree, ghostLimit: number): CollectContext {
  return {
    helper,
    tree,
    images: new ImageSet(),
    files: new FileTable(),
    sockets: new SocketTables(),
    pipesSeen: new Set(),
    unixSeen: new Map(),
    inet: newInetState(),
    holders: new Map(),
    ghosts: new Map(),
    ghostLimit,
    shmem: new ShmemTable(),
    seccomp: new SeccompTable(),
    linkRemaps: [],
  };
}
