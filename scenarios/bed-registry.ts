/**
 * Bookkeeping shared by every test bed on the machine: which /24 of 198.18.0.0/15 each bed uses, and the
 * cleanup that must run when this process ends without destroying its beds.
 *
 * Slots: a bed owns `/tmp/godwit-hosts/bed-<k>` (mode 0700) and with it the subnet number k, so beds of
 * parallel test processes never share addresses. The directory holds an `owner` file (pid + start time). A slot
 * whose owner is gone is stale (its processes died with it, see hosts.ts) and is reclaimed. Claiming runs under a
 * lock directory so that two processes never reclaim the same stale slot.
 *
 * Exit: beds register a synchronous cleanup; it runs on process 'exit' and on SIGINT/SIGTERM/SIGHUP. The signal
 * handlers are installed only while beds are alive; after cleaning up they re-raise the signal when nobody else
 * listens, so the process still dies of it as it would have.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { GodwitError } from '../util/errors';
import { sleepSync } from '../util/sleep';

// Fixed, not os.tmpdir(): subnets and veth names are machine-wide, so two test runs with different TMPDIRs must
// still see each other's slots.
export const BEDS_ROOT = '/tmp/godwit-hosts';
/** 198.18.0.0/15 holds 512 subnets of /24: one per bed. */
export const MAX_BEDS = 512;
const LOCK_WAIT_MS = 5000;
// A slot directory without an owner file yet is being created by someone: leave it alone for this long.
const FRESH_SLOT_GRACE_MS = 60_000;

export interface BedSlot {
  index: number;
  dir: string;
  /** Contents of the slot's owner file: this process plus a nonce, unique to this claim. */
  owner: string;
}

function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return 'unknown';
  }
}

const selfPidns = pidNamespace();
const selfIdentity = `${process.pid} ${startTime(process.pid)} ${selfPidns}`;

/**
 * Is the process recorded in an owner file ("pid starttime pidns") gone? A pid means nothing in another PID
 * namespace (a process inside a test host shares /tmp): such an owner is never judged gone from here.
 */
function ownerGone(ownerText: string): boolean {
  const [pid, start, pidns] = ownerText.trim().split(' ');
  if (pidns !== selfPidns) return false;
  const n = Number(pid);
  if (!Number.isInteger(n) || n <= 0) return true;
  return startTime(n) !== start;
}

function ensureRoot(): void {
  mkdirSync(BEDS_ROOT, { recursive: true, mode: 0o700 });
  // The root sits in a world-writable /tmp: refuse one that someone else made or that is not a plain directory.
  const st = lstatSync(BEDS_ROOT);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw new GodwitError(`${BEDS_ROOT} must be a directory owned by uid ${uid} with mode 0700; ` +
      'it is not (remove it and retry)', { code: 'EBEDROOT' });
  }
}

function isStale(dir: string): boolean {
  try {
    return ownerGone(readFileSync(join(dir, 'owner'), 'utf8'));
  } catch {
    try {
      return Date.now() - lstatSync(dir).mtimeMs > FRESH_SLOT_GRACE_MS;
    } catch {
      return false;
    }
  }
}

function withClaimLock<T>(fn: () => T): T {
  const lock = join(BEDS_ROOT, '.claim-lock');
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(lock, { mode: 0o700 });
      writeFileSync(join(lock, 'owner'), selfIdentity);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (isStale(lock)) {
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new GodwitError(`test-bed lock ${lock} held for over ${LOCK_WAIT_MS} ms by another process`, { code: 'EBEDLOCK' });
      }
      sleepSync(5);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** Remove a stale slot directory: moved aside first, so the slot is free at once. */
function reclaim(dir: string, index: number): void {
  const trash = join(BEDS_ROOT, `stale-${index}-${process.pid}-${Date.now()}`);
  renameSync(dir, trash);
  rmSync(trash, { recursive: true, force: true });
}

/** Take the lowest free slot, after removing every stale one (left by killed processes). */
export function claimSlot(): BedSlot {
  ensureRoot();
  return withClaimLock(() => {
    for (const name of readdirSync(BEDS_ROOT)) {
      const m = /^bed-(\d+)$/.exec(name);
      if (m && isStale(join(BEDS_ROOT, name))) reclaim(join(BEDS_ROOT, name), Number(m[1]));
      // Leftovers of a reclaim that was itself interrupted.
      else if (name.startsWith('stale-')) rmSync(join(BEDS_ROOT, name), { recursive: true, force: true });
    }
    for (let index = 0; index < MAX_BEDS; index++) {
      const dir = join(BEDS_ROOT, `bed-${index}`);
      try {
        mkdirSync(dir, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (!isStale(dir)) continue;
        reclaim(dir, index);
        mkdirSync(dir, { mode: 0o700 });
      }
      // The nonce tells this claim from a later one of the same slot (by this or another process).
      const owner = `${selfIdentity} ${randomBytes(8).toString('hex')}`;
      writeFileSync(join(dir, 'owner'), owner, { mode: 0o600 });
      return { index, dir, owner };
    }
    throw new GodwitError(`all ${MAX_BEDS} test-bed slots under ${BEDS_ROOT} are in use by live processes`, { code: 'EBEDFULL' });
  });
}

/** Does `dir` still hold this claim (and not a later bed's that reuses the slot)? */
export function slotStillClaimed(dir: string, owner: string | undefined): boolean {
  try {
    const text = readFileSync(join(dir, 'owner'), 'utf8');
    return owner === undefined || text === owner;
  } catch {
    // No owner file: either gone, or a claim being made right now (not ours if we know our owner).
    return owner === undefined && existsSync(dir);
  }
}

export function releaseSlot(slot: BedSlot): void {
  rmSync(slot.dir, { recursive: true, force: true });
}

export interface LiveBed {
  /** Synchronous last-resort cleanup: kill what the bed started, remove its directory. */
  cleanupSync(): void;
}

const live = new Set<LiveBed>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function cleanupAll(): void {
  for (const bed of [...live]) {
    try {
      bed.cleanupSync();
    } catch {
      // Last resort on the way out: carry on with the other beds.
    }
  }
  live.clear();
}

function onExit(): void {
  cleanupAll();
}

function onSignal(signal: NodeJS.Signals): void {
  cleanupAll();
  uninstall();
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function install(): void {
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  process.removeListener('exit', onExit);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}

export function trackBed(bed: LiveBed): void {
  if (live.size === 0) install();
  live.add(bed);
}

export function untrackBed(bed: LiveBed): void {
  if (live.delete(bed) && live.size === 0) uninstall();
}
