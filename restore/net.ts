/**
 * A container's network namespace brought back from CRIU's images (checkpoint/net.ts writes them) into a fresh
 * net namespace: lo set as dumped, each veth recreated as a pair whose container end has the dumped name,
 * ifindex, MAC, MTU and flags and whose host end goes to the host's namespace, attached as the target host
 * wants it (a bridge, or an address of its own facing the container); then the addresses (`ip addr restore`),
 * routes (`ip route restore`, `ip -6 route restore`) and rules (`ip rule restore`).
 *
 * The container end keeps its ifindex because the iproute2 dumps name links by ifindex. Anything that fails
 * removes every veth made so far (deleting one end removes the pair) before the error is thrown; the caller
 * owns the namespace itself.
 */
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ND_LOOPBACK, ND_VETH, IFF_ALLMULTI, IFF_MULTICAST, IFF_NOARP, IFF_PROMISC, IFF_UP } from '../checkpoint/net';
import { NetnsRef, linksIn, ipIn, ipJson, netnsInode, netnsPath, setSysctlIn, sysctlIn } from '../checkpoint/net-ip';
import { readImageFile } from '../images';
import { routesForRestore, savedAddresses, savedRoutes, savedRuleCount } from '../images/ipdump';
import { GodwitError, UsageError } from '../util/errors';
import { settled } from '../util/settled';

export interface VethHostConfig {
  /** Name of the host end (default `gwv` + 8 hex digits). At most 15 bytes, no '/' or spaces. */
  hostName?: string;
  /** Enslave the host end to this bridge, which must exist in the host namespace. */
  bridge?: string;
  /** Give the host end this address (CIDR, e.g. the container's gateway `198.18.7.1/24`). */
  peerAddr?: string;
}

export interface RestoreNetnsOptions {
  /** The N of netdev-N.img (net_ns_id in the image set). */
  nsId: number;
  /** Where the host ends go (default: godwit's own net namespace). */
  hostNetns?: NetnsRef;
  /** Host side of the container's veth (when it has exactly one), or the default for every veth. */
  veth?: VethHostConfig;
  /** Host side per container interface name; overrides `veth`. */
  vethByName?: Record<string, VethHostConfig>;
  /** Fault injection for tests: fail right after this step. */
  failAfter?: 'links' | 'addresses' | 'routes';
}

export interface RestoredNetns {
  /** Host end of the first veth ('' when the namespace has none). */
  hostIfname: string;
  /** Container interface name -> host end name. */
  hostIfnames: Record<string, string>;
  /** Deletes the veth pairs (host ends included); idempotent. The namespace itself is the caller's. */
  cleanup(): Promise<void>;
}

interface NetdevEntry {
  type: number;
  ifindex: number;
  mtu: number;
  flags: number;
  name: string;
  address?: Buffer;
}

/** How long cleanup waits for a host end that is going away with its namespace (netns cleanup runs in a
 * kernel work queue: milliseconds normally, seconds on a loaded machine). */
const HOST_END_GONE_MS = 10_000;
const IFNAME_RE = /^[^\s/:]{1,15}$/;
const CIDR_RE = /^(\d{1,3}(\.\d{1,3}){3}\/\d{1,2}|[0-9a-fA-F:]+\/\d{1,3})$/;

function macText(b: Buffer | undefined): string | undefined {
  return b && b.length === 6 ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : undefined;
}

function readRaw(dir: string, name: string): Buffer | undefined {
  try {
    return fs.readFileSync(path.join(dir, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new GodwitError(`cannot read ${path.join(dir, name)}: ${(e as Error).message}`, { cause: e });
  }
}

/** An iproute2 dump with at least one message (the 4-byte magic alone is an empty dump). */
const hasMessages = (b: Buffer | undefined): b is Buffer => b !== undefined && b.length > 4;

/** Host route text as `ip -json` prints it: /32 and /128 dropped. */
const routeKey = (dst: string): string => dst.replace(/\/(32|128)$/, '');

/**
 * The host-end options of `godwit restore` (--veth-host-name NAME, --bridge NAME, --peer-addr CIDR) as a
 * VethHostConfig; bad combinations are a UsageError (exit code 2).
 */
export function vethConfigFromFlags(f: { vethHostName?: string; bridge?: string; peerAddr?: string }): VethHostConfig {
  if (f.bridge !== undefined && f.peerAddr !== undefined) throw new UsageError('--bridge and --peer-addr exclude each other: the host end joins a bridge or gets an address');
  if (f.vethHostName !== undefined && !IFNAME_RE.test(f.vethHostName)) throw new UsageError(`--veth-host-name ${JSON.stringify(f.vethHostName)}: 1-15 bytes, no '/', ':' or spaces`);
  if (f.bridge !== undefined && !IFNAME_RE.test(f.bridge)) throw new UsageError(`--bridge ${JSON.stringify(f.bridge)} is not an interface name`);
  if (f.peerAddr !== undefined && !CIDR_RE.test(f.peerAddr)) throw new UsageError(`--peer-addr ${JSON.stringify(f.peerAddr)}: give ADDRESS/PREFIX, e.g. 198.18.7.1/24`);
  const c: VethHostConfig = {};
  if (f.vethHostName !== undefined) c.hostName = f.vethHostName;
  if (f.bridge !== undefined) c.bridge = f.bridge;
  if (f.peerAddr !== undefined) c.peerAddr = f.peerAddr;
  return c;
}

/** `ip route restore` seeks in its stdin: it must be a file. A private temp file, removed afterwards. */
async function withTempFile<T>(data: Buffer, fn: (file: string) => Promise<T>): Promise<T> {
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'godwit-route-'));
  try {
    const file = path.join(dir, 'dump');
    await fs.promises.writeFile(file, data, { mode: 0o600 });
    return await fn(file);
  } finally {
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Restores the net namespace images `netdev-N.img` & co. of `imageDir` into the fresh net namespace `target`.
 */
export async function restoreNetns(target: NetnsRef, imageDir: string, opts: RestoreNetnsOptions): Promise<RestoredNetns> {
  const nsId = opts.nsId;
  if (!Number.isInteger(nsId) || nsId <= 0) throw new UsageError(`restoreNetns: nsId must be a positive integer, got ${nsId}`);
  const where = `net namespace ${netnsPath(target)}`;
  const netdevFile = path.join(imageDir, `netdev-${nsId}.img`);
  if (!fs.existsSync(netdevFile)) throw new GodwitError(`${netdevFile} is missing: the image set holds no net namespace with id ${nsId}`);
  const entries = (await readImageFile(netdevFile)).entries.map((e) => e.msg as unknown as NetdevEntry);
  const ifaddr = readRaw(imageDir, `ifaddr-${nsId}.img`);
  const route = readRaw(imageDir, `route-${nsId}.img`);
  const route6 = readRaw(imageDir, `route6-${nsId}.img`);
  const rule = readRaw(imageDir, `rule-${nsId}.img`);

  // Check everything before touching anything.
  const problems: string[] = [];
  const veths = entries.filter((e) => e.type === ND_VETH);
  const seen = new Set<string>();
  for (const e of entries) {
    if (e.type !== ND_LOOPBACK && e.type !== ND_VETH)
      problems.push(`link ${e.name} (ifindex ${e.ifindex}) has nd_type ${e.type}: godwit restores only loopback (1) and veth (2) links`);
    if (!IFNAME_RE.test(e.name)) problems.push(`link name ${JSON.stringify(e.name)} is not a valid interface name`);
    if (seen.has(e.name)) problems.push(`link name ${e.name} appears twice`);
    seen.add(e.name);
    if (e.type === ND_VETH && (e.mtu < 68 || e.mtu > 65535)) problems.push(`veth ${e.name}: mtu ${e.mtu} outside 68..65535`);
  }
  const hostCfg = new Map<string, Required<Pick<VethHostConfig, 'hostName'>> & VethHostConfig>();
  for (const v of veths) {
    const cfg = opts.vethByName?.[v.name] ?? opts.veth;
    if (!cfg && veths.length > 1 && opts.vethByName) problems.push(`veth ${v.name}: no host configuration (vethByName has no entry for it)`);
    const c = { ...(cfg ?? {}), hostName: cfg?.hostName ?? `gwv${randomBytes(4).toString('hex')}` };
    if (!IFNAME_RE.test(c.hostName)) problems.push(`host end name ${JSON.stringify(c.hostName)} for ${v.name}: 1-15 bytes, no '/', ':' or spaces`);
    if (c.bridge !== undefined && c.peerAddr !== undefined) problems.push(`veth ${v.name}: give either a bridge or a peer address for the host end, not both`);
    if (c.bridge !== undefined && !IFNAME_RE.test(c.bridge)) problems.push(`bridge name ${JSON.stringify(c.bridge)} is not a valid interface name`);
    if (c.peerAddr !== undefined && !CIDR_RE.test(c.peerAddr)) problems.push(`peer address ${JSON.stringify(c.peerAddr)} for ${v.name} is not ADDRESS/PREFIX`);
    hostCfg.set(v.name, c);
  }
  const hostNames = [...hostCfg.values()].map((c) => c.hostName);
  if (new Set(hostNames).size !== hostNames.length) problems.push(`host end names repeat: ${hostNames.join(', ')}`);
  // The dumps must parse before we rely on them.
  try {
    if (hasMessages(ifaddr)) savedAddresses(ifaddr, `ifaddr-${nsId}.img`);
    if (hasMessages(route)) savedRoutes(route, `route-${nsId}.img`);
    if (hasMessages(route6)) savedRoutes(route6, `route6-${nsId}.img`);
    if (hasMessages(rule)) savedRuleCount(rule, `rule-${nsId}.img`);
  } catch (e) {
    problems.push((e as Error).message);
  }
  if (problems.length > 0) throw new GodwitError(`cannot restore ${where} from ${imageDir}:\n  ${problems.join('\n  ')}`, { code: 'EUNSUPPORTED' });

  // Never configure the host's own namespace as if it were the container's.
  const hostNs = opts.hostNetns ?? `/proc/${process.pid}/ns/net`;
  const targetIno = netnsInode(target);
  if (targetIno === netnsInode(hostNs) || targetIno === fs.statSync('/proc/self/ns/net').ino)
    throw new GodwitError(`${where} is the host's own namespace: restore needs a fresh net namespace for the container`);
  const [targetLinks, hostLinks] = await Promise.all([linksIn(target), linksIn(hostNs)]);
  const present = targetLinks.filter((l) => l.link_type !== 'loopback' && !(l.flags.includes('UP') === false && l.linkinfo?.info_kind && /^(tunl0|gre0|gretap0|erspan0|ip_vti0|ip6_vti0|sit0|ip6tnl0|ip6gre0)$/.test(l.ifname)));
  if (present.length > 0)
    throw new GodwitError(`${where} is not fresh: it already has ${present.map((l) => l.ifname).join(', ')} (restore creates the container's links itself)`);
  for (const c of hostCfg.values()) {
    if (hostLinks.some((l) => l.ifname === c.hostName)) throw new GodwitError(`host end name ${c.hostName} is taken in ${netnsPath(hostNs)}: choose another (--veth-host-name)`);
    if (c.bridge !== undefined) {
      const br = hostLinks.find((l) => l.ifname === c.bridge);
      if (!br) throw new GodwitError(`bridge ${c.bridge} does not exist in ${netnsPath(hostNs)}: create it (ip link add ${c.bridge} type bridge) or pass --peer-addr`);
      if (br.linkinfo?.info_kind !== 'bridge') throw new GodwitError(`${c.bridge} in ${netnsPath(hostNs)} is a ${br.linkinfo?.info_kind ?? br.link_type} link, not a bridge`);
    }
  }

  const created: Array<{ name: string; hostName: string }> = [];
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    const errors: string[] = [];
    for (const v of created.splice(0).reverse()) {
      // Deleting the container end removes the pair; if the namespace is already gone, so is the pair.
      if (fs.existsSync(netnsPath(target))) await ipIn(target, ['link', 'del', 'dev', v.name]).catch(() => undefined);
      // A namespace that just ended takes its veths down asynchronously (the kernel's netns cleanup work): the
      // host end may still be listed and vanish under our `ip link del`. Repeat until it is gone.
      const deadline = Date.now() + HOST_END_GONE_MS;
      for (;;) {
        let left: boolean;
        try {
          left = (await linksIn(hostNs)).some((l) => l.ifname === v.hostName);
        } catch (e) {
          errors.push(`${v.hostName}: ${(e as Error).message}`);
          break;
        }
        if (!left) break;
        const del = await ipIn(hostNs, ['link', 'del', 'dev', v.hostName]).catch((e: Error) => e);
        if (del instanceof Error && Date.now() > deadline) {
          errors.push(`${v.hostName}: ${del.message}`);
          break;
        }
        if (del instanceof Error) await new Promise((r) => setTimeout(r, 20));
      }
    }
    cleaned = errors.length === 0;
    if (errors.length > 0) throw new GodwitError(`could not remove every veth of ${where}: ${errors.join('; ')}`);
  };

  let step = 'links';
  const dadRestore: Array<[string, string]> = [];
  try {
    // Commands that do not depend on each other run side by side (each is its own short `ip` process, and a
    // migration waits for all of them); settled() waits for every one before failing, so cleanup never races one.
    const lo = entries.filter((x) => x.type === ND_LOOPBACK);
    await settled(
      lo.map(async (e) => {
        if (e.mtu && e.mtu !== 65536) await ipIn(target, ['link', 'set', 'dev', e.name, 'mtu', String(e.mtu)]);
        if (e.flags & IFF_UP) await ipIn(target, ['link', 'set', 'dev', e.name, 'up']);
      }),
    );
    for (const v of veths) {
      const c = hostCfg.get(v.name)!;
      const mac = macText(v.address);
      const add = ['link', 'add', v.name, 'index', String(v.ifindex), ...(mac ? ['address', mac] : []), 'mtu', String(v.mtu)];
      try {
        await ipIn(target, [...add, 'type', 'veth', 'peer', 'name', c.hostName, 'netns', netnsPath(hostNs), 'mtu', String(v.mtu)]);
      } catch (e) {
        // An ip killed by its timeout may still have made the pair: then it is ours to remove.
        if ((await linksIn(target).catch(() => [])).some((l) => l.ifname === v.name)) created.push({ name: v.name, hostName: c.hostName });
        throw new GodwitError(`creating veth ${v.name} (ifindex ${v.ifindex}) with host end ${c.hostName}: ${(e as Error).message}`, { cause: e });
      }
      created.push({ name: v.name, hostName: c.hostName });
      const set = ['link', 'set', 'dev', v.name];
      if (v.flags & IFF_NOARP) set.push('arp', 'off');
      if (v.flags & IFF_PROMISC) set.push('promisc', 'on');
      if (v.flags & IFF_ALLMULTI) set.push('allmulticast', 'on');
      if (!(v.flags & IFF_MULTICAST)) set.push('multicast', 'off');
      await settled([
        (async () => {
          if (set.length > 4) await ipIn(target, set);
          // The addresses move with the container, they are not new on the link: skip IPv6 duplicate address
          // detection while they are put back, or they stay "tentative" (bind() refuses them) for a second or more.
          const dadKey = `net/ipv6/conf/${v.name}/accept_dad`;
          const dad = await sysctlIn(target, dadKey);
          if (dad !== undefined && dad !== '0') {
            await setSysctlIn(target, dadKey, '0');
            dadRestore.push([dadKey, dad]);
          }
          if (v.flags & IFF_UP) await ipIn(target, ['link', 'set', 'dev', v.name, 'up']);
        })(),
        (async () => {
          if (c.bridge !== undefined) await ipIn(hostNs, ['link', 'set', 'dev', c.hostName, 'master', c.bridge]);
          if (c.peerAddr !== undefined) await ipIn(hostNs, ['addr', 'add', c.peerAddr, 'dev', c.hostName]);
          await ipIn(hostNs, ['link', 'set', 'dev', c.hostName, 'up']);
        })(),
      ]);
    }
    if (opts.failAfter === 'links') throw new GodwitError('fault injected after links');

    step = 'addresses';
    if (hasMessages(ifaddr)) {
      await ipIn(target, ['addr', 'restore'], ifaddr);
      const have = new Set<string>();
      for (const l of await ipJson<{ ifindex: number; addr_info?: Array<{ local: string; prefixlen: number }> }>(target, ['addr', 'show']))
        for (const a of l.addr_info ?? []) have.add(`${l.ifindex} ${a.local}/${a.prefixlen}`);
      const missing = savedAddresses(ifaddr, `ifaddr-${nsId}.img`).filter((a) => !have.has(`${a.ifindex} ${a.local}/${a.prefixlen}`));
      if (missing.length > 0) throw new GodwitError(`addresses not restored: ${missing.map((a) => `${a.local}/${a.prefixlen} on ifindex ${a.ifindex}`).join(', ')}`);
    }
    if (opts.failAfter === 'addresses') throw new GodwitError('fault injected after addresses');

    step = 'routes';
    const routeJobs = ([
      [route, '-4', `route-${nsId}.img`],
      [route6, '-6', `route6-${nsId}.img`],
    ] as const).map(async ([buf, fam, file]) => {
      if (!hasMessages(buf)) return;
      await withTempFile(routesForRestore(buf, file), (f) => ipIn(target, [fam, 'route', 'restore'], { file: f }));
      const have = new Set((await ipJson<{ dst: string }>(target, [fam, 'route', 'show', 'table', 'main'])).map((r) => routeKey(r.dst)));
      const missing = savedRoutes(buf, file).filter((r) => r.table === 254 && !have.has(routeKey(r.dst)));
      if (missing.length > 0) throw new GodwitError(`routes not restored: ${missing.map((r) => r.dst).join(', ')}`);
    });
    // DAD back to what the namespace had, now that the addresses are in.
    const dadJob = settled(dadRestore.splice(0).map(([key, value]) => setSysctlIn(target, key, value)));
    await settled([...routeJobs, dadJob]);
    // Rules last and alone: between the flush and the restore there are no rules, and a route added meanwhile
    // would fail its gateway lookup ("Nexthop has invalid gateway").
    if (hasMessages(rule)) {
      // A new namespace starts with the three default rules; the dump has them too: clear them first.
      await ipIn(target, ['-4', 'rule', 'flush']);
      await ipIn(target, ['-4', 'rule', 'del', 'table', 'local']);
      await ipIn(target, ['rule', 'restore'], rule);
      const n = (await ipJson(target, ['-4', 'rule', 'show'])).length;
      const want = savedRuleCount(rule, `rule-${nsId}.img`);
      if (n !== want) throw new GodwitError(`${want} IPv4 rules dumped, ${n} present after ip rule restore`);
    }
    if (opts.failAfter === 'routes') throw new GodwitError('fault injected after routes');
  } catch (e) {
    try {
      await cleanup();
    } catch (ce) {
      throw new GodwitError(`restoring ${where} failed while restoring ${step} (${(e as Error).message}); cleanup failed too`, { cause: ce });
    }
    throw new GodwitError(`restoring ${where} failed while restoring ${step}: ${(e as Error).message}`, { cause: e });
  }
  const hostIfnames: Record<string, string> = {};
  for (const v of veths) hostIfnames[v.name] = hostCfg.get(v.name)!.hostName;
  return { hostIfname: veths.length > 0 ? hostIfnames[veths[0].name] : '', hostIfnames, cleanup };
}
