#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up (system packages, npm deps, native build), then every test.
# Tests restore process trees, so they run under godwit's subreaper: orphans are reaped at once
# (PID 1 on these machines reaps them late).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
npx tsc -p tsconfig.json

results=dist/jest-results.json
rm -f "$results"
runner=()
[ -x scenarios/build/subreaper ] && runner=(scenarios/build/subreaper)
status=0
"${runner[@]}" npx jest --json --outputFile="$results" "$@" || status=$?

# One plain closing line, whatever the runner printed above it.
if [ -f "$results" ]; then
  node -e 'const r=require(process.argv[1]); console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests + r.numRuntimeErrorTestSuites} failed`)' "$PWD/$results"
fi
exit $status
