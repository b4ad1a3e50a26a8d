#!/usr/bin/env node
/**
 * The godwit command. Thin by design: each subcommand maps its flags to a typed options object and calls the
 * library. Exit codes: 0 ok, 1 failure, 2 bad usage.
 */
import { Command, CommanderError } from 'commander';
import { describeError, UsageError } from '../util/errors';
import { commands } from './commands';

export async function main(argv: string[]): Promise<number> {
  const program = new Command();
  program
    .name('godwit')
    .description('Checkpoint, restore and live-migrate Linux processes and containers (CRIU-compatible images)')
    .version(require('../../package.json').version)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const register of commands) register(program);
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
