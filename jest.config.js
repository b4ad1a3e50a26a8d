// Tests are compiled by tsc first (npm test), so jest runs plain JS with source maps:
// no transpiler in the loop and type errors fail the build, not a test.
module.exports = {
  roots: ['<rootDir>/dist/test'],
  testMatch: ['**/*.test.js'],
  testEnvironment: 'node',
  testTimeout: 60000,
  // Root-only tests touch processes, namespaces and cgroups: run files one at a time on 2 cores.
  maxWorkers: 1,
};
