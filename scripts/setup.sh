#!/usr/bin/env bash
# Installs what godwit needs on a fresh Debian machine (root): system packages that are missing, then the npm
# dependencies, which also builds the native helper and the scenario workloads from source.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: compiler for the native helper, iproute2 + openssh for the test hosts, zstd/busybox/runc/crun
# for images and containers, libzstd-dev + zlib1g-dev for godwit-restorer (it decompresses and checks page
# containers itself). Add a package here, never install one by hand.
packages=(gcc make libc6-dev libzstd-dev zlib1g-dev iproute2 openssh-server openssh-client zstd busybox-static runc crun procps util-linux)

if [ "$(id -u)" != 0 ]; then
  echo "godwit setup: must run as root (checkpoint/restore needs ptrace, namespaces and cgroups)" >&2
  exit 1
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "godwit setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Only a checkout without node_modules gets `npm ci` (it deletes node_modules first, so never run it over an
# install that others share, e.g. a symlinked node_modules in a git worktree).
if [ ! -e node_modules ]; then
  npm ci --no-audit --no-fund
else
  # Dependencies are there; still (re)build the native parts and the TypeScript.
  npm run install --silent && npm run build --silent
fi
