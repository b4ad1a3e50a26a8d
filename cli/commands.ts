/**
 * The list of subcommands. Each module exports a `register(program)` that adds one commander command
 * whose action builds a typed options object and calls the library.
 */
import type { Command } from 'commander';
import { register as convert } from './convert';
import { register as decode } from './decode';
import { register as dump } from './dump';
import { register as encode } from './encode';
import { register as inspect } from './inspect';
import { register as receive } from './receive';
import { register as restore } from './restore';
import { register as send } from './send';
import { register as verify } from './verify';

export type Register = (program: Command) => void;

export const commands: Register[] = [decode, encode, verify, convert, inspect, dump, restore, receive, send];
