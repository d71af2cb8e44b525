#!/usr/bin/env bash
# Runs casgate and nginx side by side in front of the same origin and prints the ratio.
# Installs nginx (with its stream module), HAProxy and wrk from Debian when they are missing. Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# nginx's stream module: nginx as the passthrough proxy (ssl_preread) in run.mjs.
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
[ -f dist/src/cli.js ] || npm run build --silent
node bench/run.mjs "$@"
node bench/passthrough.mjs
node bench/held.mjs
node --expose-gc bench/affinity.mjs
