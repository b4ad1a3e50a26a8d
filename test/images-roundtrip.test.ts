/**
 * Every image kind in the registry: representative entries -> encode -> decode -> encode gives the
 * same bytes and the same objects, also through crit's JSON text and through the streaming reader.
 */
import { Readable } from 'node:stream';
import { imageFromCrit, imageToCrit } from '../images/critjson';
import { decodeImage, encodeImage } from '../images/framing';
import { ImageReader } from '../images/io';
import { parseJson, pyDumps } from '../images/pyjson';
import { fileNameFor, IMAGE_KINDS, kindByFileName, kindByMagic } from '../images/registry';
import { entryKinds, kindSamples } from './image-samples';

function chunked(b: Buffer, size: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) parts.push(b.subarray(i, i + size));
  return Readable.from(parts);
}

describe('registry', () => {
  test('every kind is found by its name template and (unless an alias or raw) by its magic', () => {
    for (const k of IMAGE_KINDS) {
      const name = fileNameFor(k.kind, k.template.includes('%s') ? 'dump' : 12);
      expect(kindByFileName(name)?.kind).toBe(k.kind);
      expect(kindByFileName(`/some/dir/${name}`)?.kind).toBe(k.kind);
      if (k.magic !== 0 && !k.sameAs) expect(kindByMagic(k.magic)?.kind).toBe(k.kind);
    }
    expect(kindByFileName('pagemap-shmem-77.img')?.kind).toBe('SHMEM_PAGEMAP');
    expect(kindByFileName('tcp-stream-1a2b.img')?.kind).toBe('TCP_STREAM');
    expect(kindByFileName('stats-dump')?.kind).toBe('STATS');
    expect(kindByFileName('core.img')).toBeUndefined();
  });

  test('the protobuf kinds cover what checkpoint and restore need', () => {
    const names = new Set(entryKinds().map((k) => k.kind));
    for (const k of ['INVENTORY', 'PSTREE', 'CORE', 'IDS', 'MM', 'PAGEMAP', 'FDINFO', 'FILES', 'PIPES_DATA', 'FIFO_DATA',
      'SK_QUEUES', 'TCP_STREAM', 'FS', 'CREDS', 'SIGACT', 'ITIMERS', 'POSIX_TIMERS', 'RLIMIT', 'SIGNAL', 'SECCOMP', 'UTSNS',
      'IPC_VAR', 'IPCNS_SHM', 'IPCNS_SEM', 'IPCNS_MSG', 'NETDEV', 'NETNS', 'MNTS', 'CGROUP', 'TIMENS', 'USERNS',
      'GHOST_FILE', 'REMAP_FPATH', 'MEMFD_INODE', 'STATS', 'TTY_INFO']) {
      expect(names.has(k)).toBe(true);
    }
  });
});

describe('round trip of every image kind', () => {
  for (const k of entryKinds()) {
    test(`${k.kind}`, async () => {
      const file = fileNameFor(k.kind, k.template.includes('%s') ? 'dump' : 1);
      for (const entries of kindSamples(k)) {
        const bytes = encodeImage(k, entries, file);
        const img = decodeImage(bytes, file);
        expect(img.kind.kind).toBe(k.kind);
        expect(img.entries).toEqual(entries);
        expect(encodeImage(img.kind, img.entries, file).equals(bytes)).toBe(true);

        // through crit's JSON text
        const text = pyDumps(imageToCrit(img));
        const back = imageFromCrit(parseJson(text), `${file}.json`);
        expect(encodeImage(back.kind, back.entries, file).equals(bytes)).toBe(true);

        // through the streaming reader, fed in awkward 7-byte pieces
        const r = await ImageReader.open(chunked(bytes, 7), { name: file });
        expect(r.kind.kind).toBe(k.kind);
        expect(await r.readAll()).toEqual(entries);
      }
    });
  }
});

describe('fields from a newer CRIU', () => {
  test('unknown fields survive decode/encode in field-number order, and crit JSON leaves them out', () => {
    // creds_entry as a newer CRIU writes it: field 20 (unknown here) between 19 and 21, and 100 at the end
    const body = Buffer.from([
      0x08, 0x00, 0x10, 0x00, 0x18, 0x00, 0x20, 0x00, 0x28, 0x00, 0x30, 0x00, 0x38, 0x00, 0x40, 0x00, 0x68, 0x00, // required 1-8, 13
      0x82, 0x01, 0x01, 0x78, //                   16 lsm_sockcreate "x"
      0x8a, 0x01, 0x03, 0x61, 0x62, 0x63, //      17 apparmor_data "abc"
      0x90, 0x01, 0x01, //                         18 no_new_privs 1
      0x98, 0x01, 0x07, //                         19 cap_amb [7]
      0xa0, 0x01, 0x2a, //                         20: varint 42 (unknown)
      0xa2, 0x06, 0x02, 0x68, 0x69, //            100: "hi" (unknown)
    ]);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length);
    const file = Buffer.concat([encodeImage('CREDS', []), len, body]);
    const img = decodeImage(file, 'creds-1.img');
    expect(img.entries[0].msg).toEqual({ uid: 0, gid: 0, euid: 0, egid: 0, suid: 0, sgid: 0, fsuid: 0, fsgid: 0, secbits: 0, lsm_sockcreate: 'x', apparmor_data: Buffer.from('abc'), no_new_privs: 1, cap_amb: [7] });
    expect(encodeImage(img.kind, img.entries).equals(file)).toBe(true);
    expect(Object.keys(imageToCrit(img).entries as object[])).toHaveLength(1);
    expect((imageToCrit(img).entries as Array<Record<string, unknown>>)[0].cap_amb).toEqual([7]);
  });
});
