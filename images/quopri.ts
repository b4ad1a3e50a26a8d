/**
 * Quoted-printable as Python's binascii.b2a_qp / a2b_qp do it (crit shows unix socket names so):
 * '=', bytes above '~', and control bytes other than tab/space/CR/LF become =XX; a tab or space at the
 * end of the data, and a '.' alone on a line, are encoded too; lines are kept under 76 characters with
 * soft breaks ("=\n").
 */
const MAXLINE = 76;

export function qpEncode(data: Buffer): string {
  const out: string[] = [];
  let linelen = 0;
  const crlf = (() => {
    const i = data.indexOf(0x0a);
    return i > 0 && data[i - 1] === 0x0d;
  })();
  const hex = (b: number): string => '=' + b.toString(16).toUpperCase().padStart(2, '0');
  for (let i = 0; i < data.length; ) {
    const c = data[i];
    const next = i + 1 < data.length ? data[i + 1] : -1;
    const encode =
      c > 126 ||
      c === 0x3d ||
      (c === 0x2e && linelen === 0 && (next === -1 || next === 0x0a || next === 0x0d || next === 0)) ||
      ((c === 0x09 || c === 0x20) && i + 1 === data.length) ||
      (c < 33 && c !== 0x0d && c !== 0x0a && c !== 0x09 && c !== 0x20);
    if (encode) {
      if (linelen + 3 >= MAXLINE) {
        out.push(crlf ? '=\r\n' : '=\n');
        linelen = 0;
      }
      out.push(hex(c));
      linelen += 3;
      i++;
    } else if (c === 0x0a || (c === 0x0d && next === 0x0a)) {
      linelen = 0;
      // whitespace at the end of a line is protected by encoding it
      if (out.length > 0) {
        const last = out[out.length - 1];
        if (last === ' ' || last === '\t') out[out.length - 1] = hex(last.charCodeAt(0));
      }
      if (c === 0x0d) { out.push(crlf ? '\r\n' : '\n'); i += 2; }
      else { out.push(crlf ? '\r\n' : '\n'); i++; }
    } else {
      if (i + 1 !== data.length && next !== 0x0a && linelen + 1 >= MAXLINE) {
        out.push(crlf ? '=\r\n' : '=\n');
        linelen = 0;
      }
      out.push(String.fromCharCode(c));
      linelen++;
      i++;
    }
  }
  return out.join('');
}

export function qpDecode(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; ) {
    const c = s[i];
    if (c === '=') {
      if (s[i + 1] === '\n') { i += 2; continue; }
      if (s[i + 1] === '\r' && s[i + 2] === '\n') { i += 3; continue; }
      const h = s.slice(i + 1, i + 3);
      if (/^[0-9A-Fa-f]{2}$/.test(h)) { out.push(parseInt(h, 16)); i += 3; continue; }
      out.push(0x3d);
      i++;
      continue;
    }
    out.push(s.charCodeAt(i) & 0xff);
    i++;
  }
  return Buffer.from(out);
}
