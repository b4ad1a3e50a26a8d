#!/usr/bin/env node
/**
 * The godwit command. Thin by design: each subcommand maps its flags to a typed options object and calls the
 * library. Exit codes: 0 ok, 1 failure, 2 bad usage.
 */
import { Command, CommanderError } from 'commander';
import { describeError, UsageError } from '../util/errors';
import { CommandEntry, commands } from './commands';

/**
 * The command this argv runs ("help X" counts as X), or undefined for `godwit --help`, `godwit` alone or an
 * unknown name. The program itself has only --help and --version, neither taking a value, so the first word
 * that is not an option is the command.
 */
export function commandToLoad(args: string[], list: CommandEntry[] = commands): CommandEntry | undefined {
  const words = args.filter((a) => !a.startsWith('-'));
  const name = words[0] === 'help' ? words[1] : words[0];
  return list.find((c) => c.name === name);
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command();
  program
    .name('godwit')
    .description('Checkpoint, restore and live-migrate Linux processes and containers (CRIU-compatible images)')
    .version(require('../../package.json').version)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  // Load only the command that runs; for the program's own help or an unknown name, list every command by
  // its summary without loading any (commander then suggests the closest name).
  const chosen = commandToLoad(argv.slice(2));
  if (chosen) (await chosen.load()).register(program);
  else for (const c of commands) program.command(c.name).summary(c.summary);
  program.showHelpAfterError('(run with --help for usage)');
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return 0;
      return 2;
    }
    process.stderr.write(`godwit: ${describeError(err)}\n`);
    if (process.env.GODWIT_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`godwit: internal error: ${describeError(err)}\n`);
      process.exitCode = 1;
    },
  );
}
