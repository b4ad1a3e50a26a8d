import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { SysError, GodwitError, describeError } from '../util/errors';

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

  test('an unknown option is bad usage: exit 2', () => {
    const r = run('--no-such-flag');
    expect(r.status).toBe(2);
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
