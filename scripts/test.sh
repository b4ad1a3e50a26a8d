#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up (system packages, npm deps, native build), then every test.
# Tests restore process trees, so they run under godwit's subreaper: orphans are reaped at once
# (PID 1 on these machines reaps them late).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
npx tsc -p tsconfig.json

log=dist/jest-output.txt
runner=()
[ -x scenarios/build/subreaper ] && runner=(scenarios/build/subreaper)
set +e
"${runner[@]}" npx jest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One plain closing line, from jest's own summary ("Tests: 1 failed, 567 passed, 568 total").
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^Tests: ' | tail -1)
passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
