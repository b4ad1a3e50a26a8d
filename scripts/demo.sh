#!/usr/bin/env bash
# The main job on a demo workload, from a fresh clone: set-up, then dump -> inspect -> verify -> kill ->
# restore of a process with 128 MiB of memory, which then checks its own memory (GODWIT_DEMO_MIB=N for another
# size). Runs under godwit's subreaper so the restored process is reaped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec scenarios/build/subreaper node dist/scenarios/demo.js
