#!/usr/bin/env bash
# The main job on a demo workload, from a fresh clone: set-up, then a live migration between two test hosts made on
# this machine (own namespaces, a veth pair with 198.18.x addresses, sshd on the target): a process with 128 MiB of
# memory and a busy counter is moved from host A to host B with `godwit migrate` over SSH, then checks its own
# memory and counter there (GODWIT_DEMO_MIB=N for another size). Everything it sets up is removed afterwards.
# Runs under godwit's subreaper so that whatever ends is reaped at once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec scenarios/build/subreaper node dist/scenarios/demo.js
