#!/usr/bin/env bash
# Runs casgate and nginx side by side in front of the same origin and prints the ratio.
# Installs nginx, HAProxy and wrk from Debian when they are missing. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
[ -f dist/src/cli.js ] || npm run build --silent
node bench/run.mjs "$@"
node bench/passthrough.mjs
node bench/held.mjs
node --expose-gc bench/affinity.mjs
