/**
 * Fuzz: thousands of mutated image files (bit flips, truncations, inserted bytes, tampered length
 * fields, spliced headers) through every decoder. Only ImageError may come out; whatever decodes must
 * also convert to crit JSON and encode again.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { imageFromCrit, imageToCrit } from '../images/critjson';
import { JsonSyntaxError, parseJson, pyDumps } from '../images/pyjson';
import { EncodeError } from '../images/wire';
import { decodeImage, encodeImage } from '../images/framing';
import { ImageReader } from '../images/io';
import { Pagemap } from '../images/pagemap';
import { fileNameFor } from '../images/registry';
import { ImageError } from '../util/errors';
import { entryKinds, kindSamples } from './image-samples';
import { fixturesDir } from './shared-dir';

/** xorshift32: the same mutations on every run, so a failure can be reproduced. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

interface Seed {
  name: string;
  bytes: Buffer;
}

function seeds(): Seed[] {
  const out: Seed[] = [];
  const base = path.join(fixturesDir(), 'criu-4.2');
  for (const dump of ['sleep', 'pipeline']) {
    for (const f of fs.readdirSync(path.join(base, dump))) {
      if (f.startsWith('pages-')) continue;
      out.push({ name: f, bytes: fs.readFileSync(path.join(base, dump, f)) });
    }
  }
  for (const k of entryKinds()) {
    const name = fileNameFor(k.kind, k.template.includes('%s') ? 'dump' : 1);
    for (const entries of kindSamples(k)) out.push({ name, bytes: encodeImage(k, entries, name) });
  }
  return out;
}

function mutate(src: Buffer, next: () => number): Buffer {
  const b = Buffer.from(src);
  const pick = (n: number): number => (n <= 0 ? 0 : next() % n);
  switch (next() % 6) {
    case 0: { // flip a few bits
      for (let i = 0, n = 1 + pick(4); i < n && b.length > 0; i++) b[pick(b.length)] ^= 1 << pick(8);
      return b;
    }
    case 1: // truncate
      return b.subarray(0, pick(b.length));
    case 2: { // insert random bytes
      const at = pick(b.length + 1);
      const ins = Buffer.from(Array.from({ length: 1 + pick(16) }, () => next() & 0xff));
      return Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
    }
    case 3: { // tamper with a length field: the first entry's, or a random aligned u32
      const at = b.length >= 12 && next() % 2 === 0 ? 8 : pick(Math.max(1, b.length - 3));
      if (at + 4 <= b.length) {
        const choices = [0, 1, 0x7f, 0xffffffff, 0x80000000, b.length, b.readUInt32LE(at) + 1, b.readUInt32LE(at) - 1];
        b.writeUInt32LE(choices[pick(choices.length)] >>> 0, at);
      }
      return b;
    }
    case 4: { // overwrite a run with random bytes
      const at = pick(b.length);
      for (let i = at, n = Math.min(b.length, at + 1 + pick(32)); i < n; i++) b[i] = next() & 0xff;
      return b;
    }
    default: { // duplicate a slice (repeated entries, repeated fields)
      const at = pick(b.length);
      const len = pick(Math.min(64, b.length - at) + 1);
      return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
    }
  }
}

function check(name: string, bytes: Buffer, stats: { ok: number; rejected: number }): void {
  let img;
  try {
    img = decodeImage(bytes, name);
  } catch (e) {
    if (!(e instanceof ImageError)) throw new Error(`${name} (${bytes.toString('hex').slice(0, 200)}): ${String((e as Error)?.stack ?? e)}`);
    stats.rejected++;
    return;
  }
  stats.ok++;
  // what decodes must convert and re-encode: the decoded objects are always well-formed
  imageToCrit(img);
  const again = encodeImage(img.kind, img.entries, name);
  const twice = decodeImage(again, name);
  if (!encodeImage(twice.kind, twice.entries, name).equals(again)) throw new Error(`${name}: re-encoding is not stable`);
  if (img.kind.firstMessage === 'pagemap_head') {
    try {
      Pagemap.fromEntries(img.entries, name);
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
    }
  }
}

describe('fuzzing the decoders', () => {
  test('10000 mutated images through the Buffer decoder', () => {
    const all = seeds();
    const next = rng(0x60d1);
    const stats = { ok: 0, rejected: 0 };
    const t0 = Date.now();
    for (let i = 0; i < 10000; i++) {
      const s = all[next() % all.length];
      check(s.name, mutate(s.bytes, next), stats);
    }
    const ms = Date.now() - t0;
    process.stdout.write(`fuzz: 10000 images in ${ms} ms, ${stats.ok} decoded, ${stats.rejected} rejected with ImageError\n`);
    // both outcomes must be common, or the mutations are not exercising the decoder
    expect(stats.rejected).toBeGreaterThan(1000);
    expect(stats.ok).toBeGreaterThan(500);
    expect(ms).toBeLessThan(30000);
  });

  test('2000 mutated images through the streaming reader', async () => {
    const all = seeds();
    const next = rng(0xbeef);
    for (let i = 0; i < 2000; i++) {
      const s = all[next() % all.length];
      const b = mutate(s.bytes, next);
      const pieces: Buffer[] = [];
      for (let p = 0; p < b.length; p += 1 + (next() % 64)) pieces.push(b.subarray(p, p + 1 + (next() % 64)));
      try {
        const r = await ImageReader.open(Readable.from(pieces), { name: s.name });
        await r.readAll();
      } catch (e) {
        if (!(e instanceof ImageError)) throw new Error(`${s.name}: ${String((e as Error)?.stack ?? e)}`);
      }
    }
  });

  test('3000 mutated crit JSON documents through godwit encode\'s path', () => {
    const next = rng(0x15011);
    const docs = seeds()
      .filter((_, i) => i % 3 === 0)
      .map((s) => pyDumps(imageToCrit(decodeImage(s.bytes, s.name))))
      .filter((t) => t.length < 200000);
    const alphabet = '{}[]",:0123456789abcdefx-| .ABCDEFZtrue';
    let encoded = 0;
    for (let i = 0; i < 3000; i++) {
      let t = docs[next() % docs.length];
      for (let k = 0, n = 1 + (next() % 3); k < n; k++) {
        const at = next() % (t.length + 1);
        const op = next() % 3;
        const ch = alphabet[next() % alphabet.length];
        t = op === 0 ? t.slice(0, at) + t.slice(at + 1) : op === 1 ? t.slice(0, at) + ch + t.slice(at) : t.slice(0, at) + ch + t.slice(at + 1);
      }
      try {
        const img = imageFromCrit(parseJson(t), 'fuzz.json');
        encodeImage(img.kind, img.entries, 'fuzz.img');
        encoded++;
      } catch (e) {
        if (!(e instanceof JsonSyntaxError || e instanceof ImageError || e instanceof EncodeError)) {
          throw new Error(`unexpected ${String((e as Error)?.stack ?? e)}\n--- input:\n${t.slice(0, 2000)}`);
        }
      }
    }
    expect(encoded).toBeGreaterThan(100);
  });
});
