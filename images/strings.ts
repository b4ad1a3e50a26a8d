/**
 * Protobuf strings for CRIU images. CRIU copies kernel strings (file names!) verbatim, and those need
 * not be UTF-8. Invalid bytes are kept the way Python's "surrogateescape" does (byte 0xXY -> U+DCXY),
 * so they survive a round trip through a JS string and through JSON.
 */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeString(buf: Buffer): string {
  try {
    return strictUtf8.decode(buf);
  } catch {
    return decodeUtf8Escaped(buf);
  }
}

function decodeUtf8Escaped(buf: Buffer): string {
  let out = '';
  let i = 0;
  while (i < buf.length) {
    const b = buf[i];
    const len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len > 0 && i + len <= buf.length) {
      try {
        out += strictUtf8.decode(buf.subarray(i, i + len));
        i += len;
        continue;
      } catch {
        /* fall through: escape this byte */
      }
    }
    out += String.fromCharCode(0xdc00 + b);
    i++;
  }
  return out;
}

const LONE_ESCAPE = /[\udc80-\udcff]/;

export function encodeString(s: string): Buffer {
  if (!LONE_ESCAPE.test(s)) return Buffer.from(s, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xdc80 && c <= 0xdcff && !(i > 0 && s.charCodeAt(i - 1) >= 0xd800 && s.charCodeAt(i - 1) <= 0xdbff)) {
      parts.push(Buffer.from(s.slice(start, i), 'utf8'), Buffer.from([c - 0xdc00]));
      start = i + 1;
    }
  }
  parts.push(Buffer.from(s.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

