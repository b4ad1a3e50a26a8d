/**
 * iproute2's save format, which CRIU keeps as-is in ifaddr-N.img, route-N.img, route6-N.img and rule-N.img
 * (`ip addr save`, `ip route save`, `ip -6 route save`, `ip rule save`; read back by `ip ... restore`):
 * a u32 magic, then the rtnetlink messages the kernel sent for the dump, each an nlmsghdr (u32 length
 * including itself, u16 type, u16 flags, u32 seq, u32 pid) and its body, 4-byte aligned, host byte order.
 *
 * godwit reads it to describe and check what a dump holds (addresses, routes) and to clear the route flags
 * the kernel refuses on input (a route saved while its link was down carries RTNH_F_LINKDOWN).
 */
import { ImageError } from '../util/errors';

/** The magic `ip` writes first, one per kind of dump (ipaddress.c, iproute.c, iprule.c). */
export const IP_DUMP_MAGIC = { addr: 0x47361222, route: 0x45311224, rule: 0x71706986 } as const;
export type IpDumpKind = keyof typeof IP_DUMP_MAGIC;

const NLMSG_HDRLEN = 16;
const RTM_NEWADDR = 20;
const RTM_NEWROUTE = 24;
const RTM_NEWRULE = 32;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_LABEL = 3;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_MULTIPATH = 9;
const RTA_TABLE = 15;
/** Next-hop flags the kernel refuses in a new route ("can not contain DEAD or LINKDOWN"). */
const RTNH_F_DEAD = 0x1;
const RTNH_F_LINKDOWN = 0x10;
/** Upper bound of one message: rtnetlink messages of a dump fit a 32 KiB receive buffer in iproute2. */
const MAX_MESSAGE = 1 << 20;

export interface IpDumpMessage {
  type: number;
  flags: number;
  /** Offset of the nlmsghdr in the file. */
  offset: number;
  /** The message after its nlmsghdr (a view into the file's buffer). */
  body: Buffer;
}

const align4 = (n: number): number => (n + 3) & ~3;

/** Splits an iproute2 save file into its messages; any defect is an ImageError naming file and offset. */
export function parseIpDump(buf: Buffer, file: string, kind: IpDumpKind): IpDumpMessage[] {
  if (buf.length < 4) throw new ImageError(file, 0, `iproute2 dump too short (${buf.length} bytes, the 4-byte magic is missing)`);
  const magic = buf.readUInt32LE(0);
  if (magic !== IP_DUMP_MAGIC[kind]) {
    const other = (Object.keys(IP_DUMP_MAGIC) as IpDumpKind[]).find((k) => IP_DUMP_MAGIC[k] === magic);
    throw new ImageError(file, 0, `not an iproute2 ${kind} dump: magic 0x${magic.toString(16)}${other ? ` (an ${other} dump)` : ''}, expected 0x${IP_DUMP_MAGIC[kind].toString(16)}`);
  }
  const out: IpDumpMessage[] = [];
  let off = 4;
  while (off < buf.length) {
    if (buf.length - off < NLMSG_HDRLEN) throw new ImageError(file, off, `truncated netlink header (${buf.length - off} bytes left)`);
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || len > MAX_MESSAGE || off + len > buf.length)
      throw new ImageError(file, off, `netlink message length ${len} does not fit (${buf.length - off} bytes left)`);
    out.push({ type: buf.readUInt16LE(off + 4), flags: buf.readUInt16LE(off + 6), offset: off, body: buf.subarray(off + NLMSG_HDRLEN, off + len) });
    off += Math.min(align4(len), buf.length - off);
  }
  return out;
}

/** rtattrs of a message body after its fixed header: type -> payload (first occurrence). */
function attrs(body: Buffer, start: number, file: string, at: number): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  let off = start;
  while (off + 4 <= body.length) {
    const len = body.readUInt16LE(off);
    const type = body.readUInt16LE(off + 2) & 0x3fff; // NLA_F_NESTED / NLA_F_NET_BYTEORDER off
    if (len < 4 || off + len > body.length) throw new ImageError(file, at + NLMSG_HDRLEN + off, `bad rtattr length ${len}`);
    if (!m.has(type)) m.set(type, body.subarray(off + 4, off + len));
    off += align4(len);
  }
  return m;
}

function ipText(family: number, b: Buffer | undefined): string | undefined {
  if (!b) return undefined;
  if (family === 2 && b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (family === 10 && b.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
    // Longest run of zero groups (>= 2) becomes "::", as inet_ntop writes it.
    let best = -1;
    let bestLen = 1;
    for (let i = 0; i < 8; ) {
      if (groups[i] !== '0') {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && groups[j] === '0') j++;
      if (j - i > bestLen) [best, bestLen] = [i, j - i];
      i = j;
    }
    if (best < 0) return groups.join(':');
    return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
  }
  return b.toString('hex');
}

export interface SavedAddress {
  family: 'inet' | 'inet6';
  ifindex: number;
  /** The address as `ip` prints it (IFA_LOCAL, else IFA_ADDRESS). */
  local: string;
  prefixlen: number;
  scope: number;
  label?: string;
}

/** The addresses in an `ip addr save` dump. */
export function savedAddresses(buf: Buffer, file: string): SavedAddress[] {
  const out: SavedAddress[] = [];
  for (const m of parseIpDump(buf, file, 'addr')) {
    if (m.type !== RTM_NEWADDR) throw new ImageError(file, m.offset, `netlink message type ${m.type} in an address dump (expected RTM_NEWADDR ${RTM_NEWADDR})`);
    if (m.body.length < 8) throw new ImageError(file, m.offset, 'ifaddrmsg truncated');
    const family = m.body[0];
    if (family !== 2 && family !== 10) throw new ImageError(file, m.offset, `address family ${family} (only inet 2 and inet6 10)`);
    const a = attrs(m.body, 8, file, m.offset);
    const local = ipText(family, a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS));
    if (!local) throw new ImageError(file, m.offset, 'address message without IFA_LOCAL/IFA_ADDRESS');
    const label = a.get(IFA_LABEL);
    const e: SavedAddress = { family: family === 2 ? 'inet' : 'inet6', ifindex: m.body.readUInt32LE(4), local, prefixlen: m.body[1], scope: m.body[3] };
    if (label) e.label = label.toString('latin1').replace(/\0.*$/s, '');
    out.push(e);
  }
  return out;
}

export interface SavedRoute {
  family: 'inet' | 'inet6';
  /** `default` or address/len. */
  dst: string;
  table: number;
  protocol: number;
  type: number;
  oif?: number;
  gateway?: string;
  multipath: boolean;
}

/** The routes in an `ip route save` / `ip -6 route save` dump. */
export function savedRoutes(buf: Buffer, file: string): SavedRoute[] {
  const out: SavedRoute[] = [];
  for (const m of parseIpDump(buf, file, 'route')) {
    if (m.type !== RTM_NEWROUTE) throw new ImageError(file, m.offset, `netlink message type ${m.type} in a route dump (expected RTM_NEWROUTE ${RTM_NEWROUTE})`);
    if (m.body.length < 12) throw new ImageError(file, m.offset, 'rtmsg truncated');
    const family = m.body[0];
    if (family !== 2 && family !== 10) throw new ImageError(file, m.offset, `route family ${family} (only inet 2 and inet6 10)`);
    const a = attrs(m.body, 12, file, m.offset);
    const dstLen = m.body[1];
    const dst = dstLen === 0 && !a.get(RTA_DST) ? 'default' : `${ipText(family, a.get(RTA_DST)) ?? (family === 2 ? '0.0.0.0' : '::')}/${dstLen}`;
    const tableAttr = a.get(RTA_TABLE);
    if (tableAttr && tableAttr.length !== 4) throw new ImageError(file, m.offset, `RTA_TABLE of ${tableAttr.length} bytes (4 expected)`);
    const table = tableAttr?.readUInt32LE(0) ?? m.body[4];
    const r: SavedRoute = { family: family === 2 ? 'inet' : 'inet6', dst, table, protocol: m.body[5], type: m.body[7], multipath: a.has(RTA_MULTIPATH) };
    const oif = a.get(RTA_OIF);
    if (oif && oif.length !== 4) throw new ImageError(file, m.offset, `RTA_OIF of ${oif.length} bytes (4 expected)`);
    if (oif) r.oif = oif.readUInt32LE(0);
    const gw = ipText(family, a.get(RTA_GATEWAY));
    if (gw) r.gateway = gw;
    out.push(r);
  }
  return out;
}

/** Checks that a `ip rule save` dump holds only rule messages. */
export function savedRuleCount(buf: Buffer, file: string): number {
  const msgs = parseIpDump(buf, file, 'rule');
  for (const m of msgs) if (m.type !== RTM_NEWRULE) throw new ImageError(file, m.offset, `netlink message type ${m.type} in a rule dump (expected RTM_NEWRULE ${RTM_NEWRULE})`);
  return msgs.length;
}

/**
 * A copy of a route dump with RTNH_F_DEAD / RTNH_F_LINKDOWN cleared in every route and next hop: the kernel
 * reports them for a link that was down at dump time but refuses them in RTM_NEWROUTE.
 */
export function routesForRestore(buf: Buffer, file: string): Buffer {
  const out = Buffer.from(buf);
  const clear = RTNH_F_DEAD | RTNH_F_LINKDOWN;
  for (const m of parseIpDump(out, file, 'route')) {
    if (m.type !== RTM_NEWROUTE || m.body.length < 12) continue;
    m.body.writeUInt32LE((m.body.readUInt32LE(8) & ~clear) >>> 0, 8);
    const mp = attrs(m.body, 12, file, m.offset).get(RTA_MULTIPATH);
    if (!mp) continue;
    // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } followed by its attributes.
    for (let off = 0; off + 8 <= mp.length; ) {
      const len = mp.readUInt16LE(off);
      if (len < 8) break;
      mp[off + 2] &= ~clear & 0xff;
      off += align4(len);
    }
  }
  return out;
}
