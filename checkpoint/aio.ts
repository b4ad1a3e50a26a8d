/**
 * AIO rings (io_setup): mm.aios gets one entry per ring, as CRIU writes them (id: the ring's address, which is
 * also the context id the process holds; nr_req: the ring's event slots; ring_len: its size), plus two fields of
 * godwit's: the ring's tail (restore must bring the kernel's own copy of it to the same place) and its id, the
 * context's slot in the process's table, which the kernel looks the context up by (in the ring's header). The ring's
 * pages are dumped like private memory (checkpoint/vma.ts), so its events and head come back with them.
 */
import * as fs from 'node:fs';
import { GodwitError } from '../util/errors';
import { procPath } from './proc/read';
import { Mapping, VMA_AREA_AIORING } from './vma';

/** struct aio_ring: id, nr, head, tail, magic, compat/incompat features, header_length (32 bytes). */
const AIO_RING_MAGIC = 0xa10a10a1;

export function aioRings(pid: number, mappings: Mapping[]): Record<string, unknown>[] {
  const rings = mappings.filter((m) => m.entry.status & VMA_AREA_AIORING);
  if (!rings.length) return [];
  const fd = fs.openSync(procPath(pid, 'mem'), 'r');
  try {
    return rings.map((m) => {
      const head = Buffer.alloc(32);
      if (fs.readSync(fd, head, 0, 32, m.entry.start) !== 32 || head.readUInt32LE(16) !== AIO_RING_MAGIC)
        throw new GodwitError(`pid ${pid}: AIO ring at 0x${m.entry.start.toString(16)} has no ring header`);
      return {
        id: m.entry.start,
        nr_req: head.readUInt32LE(4),
        ring_len: Number(m.entry.end - m.entry.start),
        tail: head.readUInt32LE(12),
        ring_id: head.readUInt32LE(0),
      };
    });
  } finally {
    fs.closeSync(fd);
  }
}
