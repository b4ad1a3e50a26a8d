/**
 * The registry of CRIU image kinds: ONE table from kind to file name template, magic, message type(s)
 * and the raw payload that follows entries. Kind names are the ones crit prints as "magic".
 *
 * File layout (CRIU images v1.1): u32 IMG_COMMON_MAGIC (IMG_SERVICE_MAGIC for stats and irmap-cache),
 * u32 kind magic, then entries: u32 little-endian length + message, each optionally followed by a raw
 * payload. inventory.img has only its own magic; pages-*.img and the other "raw" kinds have none.
 */

export const IMG_COMMON_MAGIC = 0x54564319;
export const IMG_SERVICE_MAGIC = 0x55105940;

/** What sits after a kind's entries (see payloads.ts for the formats). */
export type PayloadKind =
  | 'pipe-data'     // pipe_data_entry.bytes raw bytes
  | 'sk-queue'      // sk_packet_entry.length raw bytes
  | 'tcp-stream'    // inq_len bytes, then outq_len bytes
  | 'ghost-file'    // whole-file content after the header, or one chunk after each ghost_chunk_entry
  | 'ipc-shm'       // size bytes padded to 4 (absent when in_pagemaps)
  | 'ipc-sem'       // nsems u16 values padded to 8 bytes
  | 'ipc-msg'       // qnum length-prefixed ipc_msg headers, each with msize bytes padded to 8
  | 'bpfmap-data';  // keys_bytes + values_bytes raw bytes

export type Prefix = 'common' | 'service' | 'none';

export interface ImageKind {
  /** crit's name for the magic, e.g. 'CORE', 'PIPES_DATA'. */
  kind: string;
  /** CRIU's printf template, e.g. 'core-%u.img'. */
  template: string;
  /** 0 for raw kinds (no header, not protobuf). */
  magic: number;
  prefix: Prefix;
  /** Message type of every entry (absent for raw kinds). */
  message?: string;
  /** Message type of the first entry when it differs (pagemap_head; ghost_file_entry). */
  firstMessage?: string;
  payload?: PayloadKind;
  /** Another kind with the same magic and format (e.g. SHMEM_PAGEMAP is written with PAGEMAP's magic). */
  sameAs?: string;
}

// prettier-ignore
const TABLE: ImageKind[] = [
  { kind: 'INVENTORY',      template: 'inventory.img',            magic: 0x58313116, prefix: 'none',    message: 'inventory_entry' },
  { kind: 'PSTREE',         template: 'pstree.img',               magic: 0x50273030, prefix: 'common',  message: 'pstree_entry' },
  { kind: 'CORE',           template: 'core-%u.img',              magic: 0x55053847, prefix: 'common',  message: 'core_entry' },
  { kind: 'IDS',            template: 'ids-%u.img',               magic: 0x54432030, prefix: 'common',  message: 'task_kobj_ids_entry' },
  { kind: 'CREDS',          template: 'creds-%u.img',             magic: 0x54023547, prefix: 'common',  message: 'creds_entry' },
  { kind: 'MM',             template: 'mm-%u.img',                magic: 0x57492820, prefix: 'common',  message: 'mm_entry' },
  { kind: 'VMAS',           template: 'vmas-%u.img',              magic: 0x54123737, prefix: 'common',  message: 'vma_entry' },
  { kind: 'PAGEMAP',        template: 'pagemap-%lu.img',          magic: 0x56084025, prefix: 'common',  message: 'pagemap_entry', firstMessage: 'pagemap_head' },
  { kind: 'SHMEM_PAGEMAP',  template: 'pagemap-shmem-%lu.img',    magic: 0x56084025, prefix: 'common',  message: 'pagemap_entry', firstMessage: 'pagemap_head', sameAs: 'PAGEMAP' },
  { kind: 'SECRETMEM_PAGEMAP', template: 'pagemap-secretmem-%lu.img', magic: 0x56084025, prefix: 'common', message: 'pagemap_entry', firstMessage: 'pagemap_head', sameAs: 'PAGEMAP' },
  { kind: 'PAGES',          template: 'pages-%u.img',             magic: 0,          prefix: 'none' },
  // godwit's compressed, checksummed form of pages-%u.img (images/container-format.ts); own magic inside.
  { kind: 'PAGES_GWZ',      template: 'pages-%u.gwz',             magic: 0,          prefix: 'none' },
  { kind: 'FDINFO',         template: 'fdinfo-%u.img',            magic: 0x56213732, prefix: 'common',  message: 'fdinfo_entry' },
  { kind: 'FILES',          template: 'files.img',                magic: 0x56303138, prefix: 'common',  message: 'file_entry' },
  { kind: 'REG_FILES',      template: 'reg-files.img',            magic: 0x50363636, prefix: 'common',  message: 'reg_file_entry' },
  { kind: 'EXT_FILES',      template: 'ext-files.img',            magic: 0x59255641, prefix: 'common',  message: 'ext_file_entry' },
  { kind: 'NS_FILES',       template: 'ns-files.img',             magic: 0x61394011, prefix: 'common',  message: 'ns_file_entry' },
  { kind: 'EVENTFD_FILE',   template: 'eventfd.img',              magic: 0x44523722, prefix: 'common',  message: 'eventfd_file_entry' },
  { kind: 'EVENTPOLL_FILE', template: 'eventpoll.img',            magic: 0x45023858, prefix: 'common',  message: 'eventpoll_file_entry' },
  { kind: 'EVENTPOLL_TFD',  template: 'eventpoll-tfd.img',        magic: 0x44433746, prefix: 'common',  message: 'eventpoll_tfd_entry' },
  { kind: 'SIGNALFD',       template: 'signalfd.img',             magic: 0x57323820, prefix: 'common',  message: 'signalfd_entry' },
  { kind: 'TIMERFD',        template: 'timerfd.img',              magic: 0x50493712, prefix: 'common',  message: 'timerfd_entry' },
  { kind: 'INOTIFY_FILE',   template: 'inotify.img',              magic: 0x48424431, prefix: 'common',  message: 'inotify_file_entry' },
  { kind: 'INOTIFY_WD',     template: 'inotify-wd.img',           magic: 0x54562009, prefix: 'common',  message: 'inotify_wd_entry' },
  { kind: 'FANOTIFY_FILE',  template: 'fanotify.img',             magic: 0x55096122, prefix: 'common',  message: 'fanotify_file_entry' },
  { kind: 'FANOTIFY_MARK',  template: 'fanotify-mark.img',        magic: 0x56506035, prefix: 'common',  message: 'fanotify_mark_entry' },
  { kind: 'PIPES',          template: 'pipes.img',                magic: 0x56513555, prefix: 'common',  message: 'pipe_entry' },
  { kind: 'PIPES_DATA',     template: 'pipes-data.img',           magic: 0x56453709, prefix: 'common',  message: 'pipe_data_entry', payload: 'pipe-data' },
  { kind: 'FIFO',           template: 'fifo.img',                 magic: 0x58364939, prefix: 'common',  message: 'fifo_entry' },
  { kind: 'FIFO_DATA',      template: 'fifo-data.img',            magic: 0x59333054, prefix: 'common',  message: 'pipe_data_entry', payload: 'pipe-data' },
  { kind: 'SIGACT',         template: 'sigacts-%u.img',           magic: 0x55344201, prefix: 'common',  message: 'sa_entry' },
  { kind: 'UNIXSK',         template: 'unixsk.img',               magic: 0x54373943, prefix: 'common',  message: 'unix_sk_entry' },
  { kind: 'INETSK',         template: 'inetsk.img',               magic: 0x56443851, prefix: 'common',  message: 'inet_sk_entry' },
  { kind: 'PACKETSK',       template: 'packetsk.img',             magic: 0x60454618, prefix: 'common',  message: 'packet_sock_entry' },
  { kind: 'NETLINK_SK',     template: 'netlinksk.img',            magic: 0x58005614, prefix: 'common',  message: 'netlink_sk_entry' },
  { kind: 'SK_QUEUES',      template: 'sk-queues.img',            magic: 0x56264026, prefix: 'common',  message: 'sk_packet_entry', payload: 'sk-queue' },
  { kind: 'TCP_STREAM',     template: 'tcp-stream-%x.img',        magic: 0x51465506, prefix: 'common',  message: 'tcp_stream_entry', payload: 'tcp-stream' },
  { kind: 'ITIMERS',        template: 'itimers-%u.img',           magic: 0x57464056, prefix: 'common',  message: 'itimer_entry' },
  { kind: 'POSIX_TIMERS',   template: 'posix-timers-%u.img',      magic: 0x52603957, prefix: 'common',  message: 'posix_timer_entry' },
  { kind: 'UTSNS',          template: 'utsns-%u.img',             magic: 0x54473203, prefix: 'common',  message: 'utsns_entry' },
  { kind: 'IPC_VAR',        template: 'ipcns-var-%u.img',         magic: 0x53115007, prefix: 'common',  message: 'ipc_var_entry' },
  { kind: 'IPCNS_SHM',      template: 'ipcns-shm-%u.img',         magic: 0x46283044, prefix: 'common',  message: 'ipc_shm_entry', payload: 'ipc-shm' },
  { kind: 'IPCNS_MSG',      template: 'ipcns-msg-%u.img',         magic: 0x55453737, prefix: 'common',  message: 'ipc_msg_entry', payload: 'ipc-msg' },
  { kind: 'IPCNS_SEM',      template: 'ipcns-sem-%u.img',         magic: 0x59573019, prefix: 'common',  message: 'ipc_sem_entry', payload: 'ipc-sem' },
  { kind: 'FS',             template: 'fs-%u.img',                magic: 0x51403912, prefix: 'common',  message: 'fs_entry' },
  { kind: 'REMAP_FPATH',    template: 'remap-fpath.img',          magic: 0x59133954, prefix: 'common',  message: 'remap_file_path_entry' },
  { kind: 'GHOST_FILE',     template: 'ghost-file-%x.img',        magic: 0x52583605, prefix: 'common',  message: 'ghost_chunk_entry', firstMessage: 'ghost_file_entry', payload: 'ghost-file' },
  { kind: 'MEMFD_INODE',    template: 'memfd.img',                magic: 0x48453499, prefix: 'common',  message: 'memfd_inode_entry' },
  { kind: 'MNTS',           template: 'mountpoints-%u.img',       magic: 0x55563928, prefix: 'common',  message: 'mnt_entry' },
  { kind: 'NETDEV',         template: 'netdev-%u.img',            magic: 0x57373951, prefix: 'common',  message: 'net_device_entry' },
  { kind: 'NETNS',          template: 'netns-%u.img',             magic: 0x55933752, prefix: 'common',  message: 'netns_entry' },
  { kind: 'TTY_FILES',      template: 'tty.img',                  magic: 0x59433025, prefix: 'common',  message: 'tty_file_entry' },
  { kind: 'TTY_INFO',       template: 'tty-info.img',             magic: 0x59453036, prefix: 'common',  message: 'tty_info_entry' },
  { kind: 'TTY_DATA',       template: 'tty-data.img',             magic: 0x59413026, prefix: 'common',  message: 'tty_data_entry' },
  { kind: 'FILE_LOCKS',     template: 'filelocks.img',            magic: 0x54323616, prefix: 'common',  message: 'file_lock_entry' },
  { kind: 'RLIMIT',         template: 'rlimit-%u.img',            magic: 0x57113925, prefix: 'common',  message: 'rlimit_entry' },
  { kind: 'SIGNAL',         template: 'signal-s-%u.img',          magic: 0x59255647, prefix: 'common',  message: 'siginfo_entry' },
  { kind: 'PSIGNAL',        template: 'signal-p-%u.img',          magic: 0x59255647, prefix: 'common',  message: 'siginfo_entry', sameAs: 'SIGNAL' },
  { kind: 'TUNFILE',        template: 'tunfile.img',              magic: 0x57143751, prefix: 'common',  message: 'tunfile_entry' },
  { kind: 'CGROUP',         template: 'cgroup.img',               magic: 0x59383330, prefix: 'common',  message: 'cgroup_entry' },
  { kind: 'CPUINFO',        template: 'cpuinfo.img',              magic: 0x61404013, prefix: 'common',  message: 'cpuinfo_entry' },
  { kind: 'SECCOMP',        template: 'seccomp.img',              magic: 0x64413049, prefix: 'common',  message: 'seccomp_entry' },
  { kind: 'USERNS',         template: 'userns-%u.img',            magic: 0x55474906, prefix: 'common',  message: 'userns_entry' },
  { kind: 'BINFMT_MISC',    template: 'binfmt-misc.img',          magic: 0x67343323, prefix: 'common',  message: 'binfmt_misc_entry' },
  { kind: 'BINFMT_MISC_OLD', template: 'binfmt-misc-%u.img',      magic: 0x67343323, prefix: 'common',  message: 'binfmt_misc_entry', sameAs: 'BINFMT_MISC' },
  { kind: 'AUTOFS',         template: 'autofs-%u.img',            magic: 0x49353943, prefix: 'common',  message: 'autofs_entry' },
  { kind: 'TIMENS',         template: 'timens-%u.img',            magic: 0x43114433, prefix: 'common',  message: 'timens_entry' },
  { kind: 'PIDNS',          template: 'pidns-%u.img',             magic: 0x61157326, prefix: 'common',  message: 'pidns_entry' },
  { kind: 'BPFMAP_FILE',    template: 'bpfmap-file.img',          magic: 0x57506142, prefix: 'common',  message: 'bpfmap_file_entry' },
  { kind: 'BPFMAP_DATA',    template: 'bpfmap-data.img',          magic: 0x64324033, prefix: 'common',  message: 'bpfmap_data_entry', payload: 'bpfmap-data' },
  { kind: 'APPARMOR',       template: 'apparmor.img',             magic: 0x59423047, prefix: 'common',  message: 'apparmor_entry' },
  { kind: 'STATS',          template: 'stats-%s',                 magic: 0x57093306, prefix: 'service', message: 'stats_entry' },
  { kind: 'IRMAP_CACHE',    template: 'irmap-cache',              magic: 0x57004059, prefix: 'service', message: 'irmap_cache_entry' },
  // Raw kinds: other tools' formats (ip, iptables, tar), kept beside the protobuf images.
  { kind: 'IFADDR',         template: 'ifaddr-%u.img',            magic: 0,          prefix: 'none' },
  { kind: 'ROUTE',          template: 'route-%u.img',             magic: 0,          prefix: 'none' },
  { kind: 'ROUTE6',         template: 'route6-%u.img',            magic: 0,          prefix: 'none' },
  { kind: 'RULE',           template: 'rule-%u.img',              magic: 0,          prefix: 'none' },
  { kind: 'IPTABLES',       template: 'iptables-%u.img',          magic: 0,          prefix: 'none' },
  { kind: 'IP6TABLES',      template: 'ip6tables-%u.img',         magic: 0,          prefix: 'none' },
  { kind: 'NFTABLES',       template: 'nftables-%u.img',          magic: 0,          prefix: 'none' },
  { kind: 'NETNF_CT',       template: 'netns-ct-%u.img',          magic: 0,          prefix: 'none' },
  { kind: 'NETNF_EXP',      template: 'netns-exp-%u.img',         magic: 0,          prefix: 'none' },
  { kind: 'TMPFS_IMG',      template: 'tmpfs-%u.tar.gz',          magic: 0,          prefix: 'none' },
  { kind: 'TMPFS_DEV',      template: 'tmpfs-dev-%u.tar.gz',      magic: 0,          prefix: 'none' },
];

export const IMAGE_KINDS: readonly ImageKind[] = TABLE;

const byKind = new Map(TABLE.map((k) => [k.kind, k]));
/** Magic -> the canonical kind (the one without sameAs). Raw kinds have no magic to look up. */
const byMagic = new Map(TABLE.filter((k) => k.magic !== 0 && !k.sameAs).map((k) => [k.magic, k]));

function templateRegex(template: string): RegExp {
  const parts = template.split(/(%lu|%ld|%u|%d|%x|%s)/);
  const re = parts
    .map((p) => {
      switch (p) {
        case '%u': case '%lu': return '(\\d+)';
        case '%d': case '%ld': return '(-?\\d+)';
        case '%x': return '([0-9a-f]+)';
        case '%s': return '([^/]+)';
        default: return p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      }
    })
    .join('');
  return new RegExp(`^${re}$`);
}

const nameRules = TABLE.map((k) => ({ kind: k, re: templateRegex(k.template) }));

export function kindByName(kind: string): ImageKind | undefined {
  return byKind.get(kind);
}

export function kindByMagic(magic: number): ImageKind | undefined {
  return byMagic.get(magic >>> 0);
}

/** The kind a file name belongs to (base name only; directories are ignored). */
export function kindByFileName(fileName: string): ImageKind | undefined {
  const base = fileName.split('/').pop() ?? fileName;
  for (const { kind, re } of nameRules) if (re.test(base)) return kind;
  return undefined;
}

/** A file name for `kind` with the template's one argument filled in, e.g. fileNameFor('CORE', 42). */
export function fileNameFor(kind: string, arg?: number | bigint | string): string {
  const k = byKind.get(kind);
  if (!k) throw new Error(`unknown image kind '${kind}'`);
  return k.template.replace(/%lu|%ld|%u|%d|%x|%s/, (spec) => {
    if (arg === undefined) throw new Error(`image kind ${kind} needs an argument for ${spec}`);
    if (spec === '%x') return BigInt(arg).toString(16);
    return String(arg);
  });
}

/** The magic numbers as the header of a file of this kind carries them. */
export function headerMagics(k: ImageKind): number[] {
  if (k.magic === 0) return [];
  if (k.prefix === 'common') return [IMG_COMMON_MAGIC, k.magic];
  if (k.prefix === 'service') return [IMG_SERVICE_MAGIC, k.magic];
  return [k.magic];
}

/** The name crit prints for a kind (aliases print as the kind whose magic they share). */
export function critMagicName(k: ImageKind): string {
  return k.sameAs ?? k.kind;
}
