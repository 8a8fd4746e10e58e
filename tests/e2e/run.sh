#!/usr/bin/env bash
# make e2e: fal's own JS client (@fal-ai/client 1.10.1, bundled with
# esbuild) in headless Chromium, through wrapper/proxy beside the page
# (same origin) and through `fluxi2i proxy --cors` (the page on another
# loopback port), in front of `fluxi2i simulate`. Installs what it needs:
# Debian's chromium when missing, the npm packages of package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
root=../..

if ! command -v chromium >/dev/null 2>&1; then
  echo "e2e: installing Debian's chromium" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) ||
    sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'
fi
npm ci --no-audit --no-fund --silent
npx esbuild page/main.js --bundle --format=esm --platform=browser --target=es2020 --outfile=page/bundle.js --log-level=warning

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
(cd "$root" && go build -o "$tmp/fluxi2i" ./cmd/fluxi2i && go build -o "$tmp/server" ./tests/e2e/server)

# shellcheck source=../lib.sh
. ../lib.sh # the cd above made this script's folder the current one

"$tmp/fluxi2i" simulate --addr 127.0.0.1:0 --api-key e2e-key --queue-time 100ms --run-time 200ms 2>"$tmp/sim.log" &
pids+=($!)
sim=$(addr "$tmp/sim.log")
"$tmp/server" -page page -base-url "$sim" -api-key e2e-key 2>"$tmp/same.log" &
pids+=($!)
same=$(addr "$tmp/same.log")
"$tmp/server" -page page 2>"$tmp/static.log" &
pids+=($!)
static=$(addr "$tmp/static.log")
"$tmp/fluxi2i" proxy --addr 127.0.0.1:0 --base-url "$sim" --api-key e2e-key --cors "$static" 2>"$tmp/proxy.log" &
pids+=($!)
proxy=$(addr "$tmp/proxy.log")

status=0
SAME="$same" STATIC="$static" PROXY="$proxy" OUT="$PWD/out" timeout 300 node run.mjs || status=$?
if [ "$status" -ne 0 ]; then
  for log in sim same static proxy; do echo "--- $log log (last 20 lines)" >&2; tail -20 "$tmp/$log.log" >&2; done
fi
! grep -q 'e2e-key' "$tmp/proxy.log" "$tmp/same.log" || { echo "the key reached a proxy's log" >&2; exit 1; }
exit "$status"
