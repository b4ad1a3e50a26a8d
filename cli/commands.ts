/**
 * The list of subcommands. Each entry names a command, gives the line `godwit --help` lists for it, and loads
 * its module (cli/<name>.ts, exporting `register(program)`) only when that command runs: a module pulls in its
 * whole library (ssh2, listr2, protobuf schemas...), and `godwit receive`, started over SSH on the target for
 * every transfer, should not pay for the others (cli/main.ts decides what to load).
 *
 * To add a command: one entry `{ name: 'x', summary: '...', load: () => import('./x') }`.
 */
import type { Command } from 'commander';

export type Register = (program: Command) => void;

export interface CommandEntry {
  /** The command's name as its module registers it (checked by test/cli.test.ts). */
  name: string;
  /** One line for the command list of `godwit --help`. */
  summary: string;
  load: () => Promise<{ register: Register }>;
}

export const commands: CommandEntry[] = [
  { name: 'decode', summary: 'print a CRIU image file as JSON (as `crit decode --pretty`)', load: () => import('./decode') },
  { name: 'encode', summary: 'turn crit-style JSON back into a byte-identical image file', load: () => import('./encode') },
  { name: 'verify', summary: 'check an image directory end to end', load: () => import('./verify') },
  { name: 'convert', summary: 'convert an image directory between CRIU pages-N.img and compressed pages-N.gwz', load: () => import('./convert') },
  { name: 'inspect', summary: 'show what an image holds: tree, threads, memory, files, namespaces, sizes', load: () => import('./inspect') },
  { name: 'dump', summary: 'checkpoint a process tree into an image directory (CRIU layout)', load: () => import('./dump') },
  { name: 'restore', summary: 'restore a dumped process tree from an image directory', load: () => import('./restore') },
  { name: 'receive', summary: 'receive an image stream on stdin into DIR (the target end of `godwit send`)', load: () => import('./receive') },
  { name: 'send', summary: 'stream an image directory to another host over SSH', load: () => import('./send') },
  { name: 'migrate', summary: 'move a running process tree to another host over SSH (dump, stream, restore there)', load: () => import('./migrate') },
];
