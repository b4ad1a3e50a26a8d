/**
 * OpenSSH known_hosts files and host key fingerprints, for verifying the server in transport/ssh.ts.
 *
 * Line format (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): `[@marker] patterns keytype base64-key [comment]`.
 * patterns is a comma-separated list of host names with `*`/`?` wildcards and `!` negation, `[host]:port` for a
 * port other than 22, or one hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))` (ssh-keygen -H).
 * @revoked entries refuse a key; @cert-authority entries are ignored (godwit does not verify host certificates).
 */
import { createHash, createHmac } from 'node:crypto';

export interface KnownHostEntry {
  file: string;
  /** 1-based line number, for messages that tell the user which line to fix. */
  line: number;
  marker?: 'revoked' | 'cert-authority';
  patterns: string;
  keyType: string;
  key: Buffer;
}

/** `SHA256:` + unpadded base64 of the SHA-256 of the key blob, as `ssh-keygen -lf` prints it. */
export function fingerprintSha256(keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

/** The algorithm name at the start of an SSH public key blob (uint32 length + name). */
export function keyTypeOfBlob(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return undefined;
  return blob.toString('latin1', 4, 4 + len);
}

/** Parse an OpenSSH public key line (`ssh-ed25519 AAAA... comment`) into its blob. */
export function parsePublicKeyLine(line: string): { keyType: string; key: Buffer } | undefined {
  const [keyType, b64] = line.trim().split(/\s+/);
  if (!keyType || !b64) return undefined;
  const key = Buffer.from(b64, 'base64');
  return keyTypeOfBlob(key) === keyType ? { keyType, key } : undefined;
}

/** The name a host is recorded under: `host` for port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** A known_hosts line for a key (used by the test bed to write the client's file). */
export function knownHostsLine(host: string, port: number, keyType: string, key: Buffer): string {
  return `${knownHostsName(host, port)} ${keyType} ${key.toString('base64')}`;
}

/** Parse known_hosts text. Malformed lines are skipped, as OpenSSH does. */
export function parseKnownHosts(text: string, file: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '' || raw.startsWith('#')) continue;
    const fields = raw.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (fields[0]!.startsWith('@')) {
      const m = fields.shift()!;
      if (m === '@revoked') marker = 'revoked';
      else if (m === '@cert-authority') marker = 'cert-authority';
      else continue;
    }
    const [patterns, keyType, b64] = fields;
    if (!patterns || !keyType || !b64) continue;
    const key = Buffer.from(b64, 'base64');
    if (keyTypeOfBlob(key) !== keyType) continue;
    entries.push({ file, line: i + 1, ...(marker ? { marker } : {}), patterns, keyType, key });
  }
  return entries;
}

function wildcardMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    '^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$',
    'i',
  );
  return re.test(name);
}

function hashedMatch(pattern: string, name: string): boolean {
  // |1|salt|hash
  const parts = pattern.split('|');
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2]!, 'base64');
  const want = Buffer.from(parts[3]!, 'base64');
  const got = createHmac('sha1', salt).update(name).digest();
  return want.length === got.length && want.equals(got);
}

/** Does this entry's host pattern list cover host:port? */
export function entryMatchesHost(entry: KnownHostEntry, host: string, port: number): boolean {
  const name = knownHostsName(host, port);
  if (entry.patterns.startsWith('|')) return hashedMatch(entry.patterns, name);
  let positive = false;
  for (const p of entry.patterns.split(',')) {
    if (p.startsWith('!')) {
      if (wildcardMatch(p.slice(1), name)) return false;
    } else if (wildcardMatch(p, name)) {
      positive = true;
    }
  }
  return positive;
}

export type HostKeyVerdict =
  | { ok: true; entry: KnownHostEntry }
  | { ok: false; reason: 'unknown'; entries: KnownHostEntry[] }
  | { ok: false; reason: 'mismatch'; entries: KnownHostEntry[] }
  | { ok: false; reason: 'revoked'; entries: KnownHostEntry[] };

/**
 * Judge a server's host key against the known_hosts entries for host:port (as OpenSSH, which loads only the
 * lines whose patterns match the host): revoked wins, then an exact match, then a mismatch if
 * the host is known under any other key, else unknown.
 */
export function checkHostKey(entries: KnownHostEntry[], host: string, port: number, keyBlob: Buffer): HostKeyVerdict {
  const forHost = entries.filter((e) => e.marker !== 'cert-authority' && entryMatchesHost(e, host, port));
  const revoked = forHost.filter((e) => e.marker === 'revoked' && e.key.equals(keyBlob));
  if (revoked.length > 0) return { ok: false, reason: 'revoked', entries: revoked };
  const exact = forHost.find((e) => e.marker === undefined && e.key.equals(keyBlob));
  if (exact) return { ok: true, entry: exact };
  const others = forHost.filter((e) => e.marker === undefined);
  if (others.length > 0) return { ok: false, reason: 'mismatch', entries: others };
  return { ok: false, reason: 'unknown', entries: [] };
}

/** Key types recorded for host:port, to offer those first in the key exchange (as OpenSSH does). */
export function knownKeyTypes(entries: KnownHostEntry[], host: string, port: number): string[] {
  const types = entries
    .filter((e) => e.marker === undefined && entryMatchesHost(e, host, port))
    .map((e) => e.keyType);
  return [...new Set(types)];
}
