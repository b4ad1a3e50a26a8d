/**
 * crit's form of (criu).ipadd fields: repeated u32 words holding the address in network byte order
 * (as they sit in memory on a little-endian host). One word: IPv4; four: IPv6, printed compressed.
 */
import { EncodeError } from './wire';
import { isIPv4, isIPv6 } from 'node:net';

function ntohl(x: number): number {
  return (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}

function ipv6Compressed(words: number[]): string {
  const h: number[] = [];
  for (const w of words) h.push(w >>> 16, w & 0xffff);
  // IPv4-mapped addresses print in dotted form, as Python's ipaddress (3.13+) does.
  if (h.slice(0, 5).every((x) => x === 0) && h[5] === 0xffff) {
    return `::ffff:${h[6] >>> 8}.${h[6] & 0xff}.${h[7] >>> 8}.${h[7] & 0xff}`;
  }
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (h[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && h[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = h.map((x) => x.toString(16));
  if (bestLen < 2) return hex.join(':');
  const left = hex.slice(0, best).join(':');
  const right = hex.slice(best + bestLen).join(':');
  return `${left}::${right}`;
}

export function critIpAddress(words: number[]): string {
  const w = words.map(ntohl);
  if (w.length === 1) return `${w[0] >>> 24}.${(w[0] >>> 16) & 0xff}.${(w[0] >>> 8) & 0xff}.${w[0] & 0xff}`;
  return ipv6Compressed(w);
}

function parseV4(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

/** Inverse of critIpAddress: the words to store. */
export function parseIpAddress(s: string, where: string): number[] {
  if (isIPv4(s)) return [ntohl(parseV4(s))];
  if (!isIPv6(s)) throw new EncodeError(`${where}: ${JSON.stringify(s)} is not an IP address`);
  let text = s;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const n = parseV4(v4[1]);
    tail.push(n >>> 16, n & 0xffff);
    text = text.slice(0, -v4[1].length) + (text.endsWith(':' + v4[1]) && text.slice(0, -v4[1].length).endsWith('::') ? '' : '0');
    if (text.endsWith(':0')) text = text.slice(0, -2);
  }
  const [l, r] = text.includes('::') ? text.split('::') : [text, undefined];
  const parse = (x: string | undefined): number[] => (x ? x.split(':').filter((y) => y !== '').map((y) => parseInt(y, 16)) : []);
  const left = parse(l);
  const right = parse(r);
  const fill = 8 - tail.length - left.length - right.length;
  const groups = r === undefined ? [...left, ...tail] : [...left, ...new Array(fill).fill(0), ...right, ...tail];
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2) words.push(ntohl(((groups[i] << 16) | groups[i + 1]) >>> 0));
  return words;
}
