/**
 * The GNU build-id of an ELF file (NT_GNU_BUILD_ID note), as CRIU stores it in reg_file_entry.build_id:
 * the note's bytes as little-endian 32-bit words. Restore compares it to detect a changed binary.
 */
import * as fs from 'node:fs';

const NT_GNU_BUILD_ID = 3;
const PT_NOTE = 4;
/** Program headers and notes live in the first pages of an ELF file; never read more than this. */
const MAX_HEADER_READ = 64 * 1024;

export function readBuildId(path: string): number[] | undefined {
  let fd = -1;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    const head = Buffer.alloc(MAX_HEADER_READ);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return undefined; // ELF64 LE only
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    for (let i = 0; i < phnum; i++) {
      const ph = phoff + i * phentsize;
      if (ph + 56 > n) break;
      if (head.readUInt32LE(ph) !== PT_NOTE) continue;
      const off = Number(head.readBigUInt64LE(ph + 8));
      const size = Number(head.readBigUInt64LE(ph + 32));
      if (size > MAX_HEADER_READ) continue;
      const note = Buffer.alloc(size);
      if (fs.readSync(fd, note, 0, size, off) !== size) continue;
      for (let p = 0; p + 12 <= size; ) {
        const namesz = note.readUInt32LE(p);
        const descsz = note.readUInt32LE(p + 4);
        const type = note.readUInt32LE(p + 8);
        const name = p + 12;
        const desc = name + ((namesz + 3) & ~3);
        if (desc + descsz > size) break;
        if (type === NT_GNU_BUILD_ID && note.toString('latin1', name, name + namesz).startsWith('GNU')) {
          const words: number[] = [];
          for (let w = 0; w + 4 <= descsz; w += 4) words.push(note.readUInt32LE(desc + w));
          return words;
        }
        p = desc + ((descsz + 3) & ~3);
      }
    }
    return undefined;
  } catch {
    return undefined; // unreadable or not a regular file: no build-id, as CRIU does
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
