/**
 * /proc/PID/smaps: every mapping with its VmFlags (maps alone lacks them: growsdown, locked, madvise bits,
 * VM_IO/VM_PFNMAP that mark mappings whose pages cannot be read).
 */
import { readProcText } from './read';

export interface ProcVma {
  start: bigint;
  end: bigint;
  /** 'r','w','x' present or '-' */
  read: boolean;
  write: boolean;
  exec: boolean;
  shared: boolean;
  /** File offset in bytes. */
  offset: bigint;
  devMajor: number;
  devMinor: number;
  inode: number;
  /** Path or pseudo name ([heap], [stack], [vdso], [vvar], [vvar_vclock], [vsyscall], [anon:...]), '' if none. */
  path: string;
  /** The two-letter VmFlags (rd wr ex sh mr mw me ms gd pf dw lo io sr rr dc de ac nr ht sf ar dd sd mm hg nh mg um uw ...). */
  vmFlags: Set<string>;
  /** Kilobytes from smaps (Rss, Swap, Anonymous), for statistics and preflight. */
  rssKb: number;
  swapKb: number;
  anonKb: number;
}

const HEADER = /^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([sp]) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$/;

/** Parses smaps (or plain maps: then vmFlags stays empty). */
export function parseSmaps(text: string): ProcVma[] {
  const vmas: ProcVma[] = [];
  let cur: ProcVma | undefined;
  for (const line of text.split('\n')) {
    if (!line) continue;
    const h = HEADER.exec(line);
    if (h) {
      cur = {
        start: BigInt('0x' + h[1]),
        end: BigInt('0x' + h[2]),
        read: h[3] === 'r',
        write: h[4] === 'w',
        exec: h[5] === 'x',
        shared: h[6] === 's',
        offset: BigInt('0x' + h[7]),
        devMajor: parseInt(h[8]!, 16),
        devMinor: parseInt(h[9]!, 16),
        inode: Number(h[10]),
        path: h[11] ?? '',
        vmFlags: new Set(),
        rssKb: 0,
        swapKb: 0,
        anonKb: 0,
      };
      vmas.push(cur);
      continue;
    }
    if (!cur) continue;
    if (line.startsWith('VmFlags:')) {
      for (const f of line.slice(8).trim().split(/\s+/)) if (f) cur.vmFlags.add(f);
    } else if (line.startsWith('Rss:')) cur.rssKb = parseInt(line.slice(4), 10);
    else if (line.startsWith('Swap:')) cur.swapKb = parseInt(line.slice(5), 10);
    else if (line.startsWith('Anonymous:')) cur.anonKb = parseInt(line.slice(10), 10);
  }
  return vmas;
}

export function readSmaps(pid: number): ProcVma[] {
  return parseSmaps(readProcText(pid, 'smaps'));
}

/** The name of a map_files entry for a mapping: "start-end" in lowercase hex without 0x. */
export function mapFilesName(v: { start: bigint; end: bigint }): string {
  return `${v.start.toString(16)}-${v.end.toString(16)}`;
}
