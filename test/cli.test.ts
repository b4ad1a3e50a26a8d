import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Command } from 'commander';
import { SysError, GodwitError, describeError } from '../util/errors';
import { commands } from '../cli/commands';
import { commandToLoad } from '../cli/main';

const cli = path.resolve(__dirname, '..', 'cli', 'main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('godwit CLI', () => {
  test('--help lists the program and exits 0', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Usage: godwit/);
  });

  test('an unknown command is bad usage: exit 2 with a hint', () => {
    const r = run('no-such-command');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown command|too many arguments/);
  });

  test('--help lists every command by name', () => {
    const r = run('--help');
    for (const c of commands) expect(r.stdout).toMatch(new RegExp(`^  ${c.name} `, 'm'));
  });

  test('each command list entry loads a module that registers exactly that command', async () => {
    for (const c of commands) {
      const program = new Command();
      (await c.load()).register(program);
      expect(program.commands.map((x) => x.name())).toEqual([c.name]);
    }
    expect(new Set(commands.map((c) => c.name)).size).toBe(commands.length);
  });

  test('the command to load is the first word that is not an option ("help X" is X)', () => {
    expect(commandToLoad(['receive', '--dir', '/x'])?.name).toBe('receive');
    expect(commandToLoad(['help', 'send'])?.name).toBe('send');
    expect(commandToLoad(['--help'])).toBeUndefined();
    expect(commandToLoad(['nope'])).toBeUndefined();
  });

  test('`godwit receive` loads only what receiving needs (no ssh2, listr2, checkpoint or restore code)', () => {
    // Run in a child so that this test's own imports do not pollute the module cache.
    const script = `require(${JSON.stringify(cli)}).main(['node', 'godwit', 'receive', '--help']).then(() => {
      process.stderr.write(JSON.stringify(Object.keys(require.cache)));
    });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const loaded: string[] = JSON.parse(r.stderr);
    expect(loaded.some((f) => f.endsWith(path.join('cli', 'receive.js')))).toBe(true);
    const heavy = loaded.filter((f) => /node_modules\/(ssh2|listr2)\/|dist\/(checkpoint|restore)\/|cli\/(dump|send|decode)\.js/.test(f));
    expect(heavy).toEqual([]);
  });

  test('an unknown option is bad usage: exit 2', () => {
    const r = run('--no-such-flag');
    expect(r.status).toBe(2);
  });

  test('dump and migrate refuse the same bad choice of tree (one parser), exit 2 before touching anything', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--pid', '1', '--cgroup', '/x'], /exactly one of --pid PID, --container ID, --cgroup PATH/],
      [['--pid', 'abc'], /--pid must be a process id/],
      [['--pid', '1', '--runtime', 'runc'], /--runtime goes with --container/],
      [['--container', 'x', '--runtime', 'docker'], /--runtime must be runc or crun/],
      [['--container', 'x', '--rootfs', 'diff'], /--rootfs diff needs --rootfs-base/],
      [['--container', 'x', '--rootfs-base', '/b'], /--rootfs-base goes with --rootfs diff/],
    ];
    for (const [flags, why] of cases) {
      for (const cmd of [['dump', '--dir', '/nonexistent/godwit-cli-test'], ['migrate', '--to', 'local']]) {
        const r = run(...cmd, ...flags);
        expect({ cmd: cmd[0], flags, status: r.status }).toEqual({ cmd: cmd[0], flags, status: 2 });
        expect(r.stderr).toMatch(why);
      }
    }
  });
});

describe('errors', () => {
  test('SysError is shaped like a Node errno error', () => {
    const e = new SysError({ errno: 3, syscall: 'ptrace', pid: 42, what: 'seize thread' });
    expect(e.code).toBe('ESRCH');
    expect(e.errno).toBe(3);
    expect(e.syscall).toBe('ptrace');
    expect(e.pid).toBe(42);
    expect(e.message).toBe('seize thread: ptrace failed: ESRCH (pid 42)');
  });

  test('context travels up as a cause chain', () => {
    const inner = new SysError({ errno: 1, syscall: 'open', path: '/x' });
    const outer = new GodwitError('dump of pid 7 failed', { cause: inner });
    expect(describeError(outer)).toBe('dump of pid 7 failed\n  caused by: open failed: EPERM (/x)');
  });
});
