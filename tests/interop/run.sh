#!/usr/bin/env bash
# make interop: fal's own JS client, unchanged, against `fluxi2i simulate`,
# then through `fluxi2i proxy` in front of it (proxyUrl, no credentials in
# the client). Needs Node.js 18+ and the npm registry.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
npm install --no-audit --no-fund --silent
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
(cd "$root" && go build -o "$tmp/fluxi2i" ./cmd/fluxi2i)

# shellcheck source=../lib.sh
. ../lib.sh # the cd above made this script's folder the current one

"$tmp/fluxi2i" simulate --addr 127.0.0.1:0 --api-key interop-key --queue-time 300ms --run-time 600ms 2>"$tmp/sim.log" &
pids+=($!)
sim=$(addr "$tmp/sim.log")
SIM="$sim" KEY=interop-key IMG="$root/cmd/fluxi2i/testdata/sample.png" node fal-js.mjs

# The proxy holds the key; the JS client has none. A quicker simulator
# behind it, so the proxy's CPU is measured over requests, not idle time.
"$tmp/fluxi2i" simulate --addr 127.0.0.1:0 --api-key interop-key --queue-time 50ms --run-time 100ms 2>"$tmp/sim2.log" &
pids+=($!)
sim2=$(addr "$tmp/sim2.log")
"$tmp/fluxi2i" proxy --addr 127.0.0.1:0 --base-url "$sim2" --api-key interop-key 2>"$tmp/proxy.log" &
proxy_pid=$!
pids+=($proxy_pid)
proxy=$(addr "$tmp/proxy.log")
cpu() { awk '{print $14 + $15}' "/proc/$proxy_pid/stat"; }
# The proxy's CPU while idle, to tell the requests' cost from the runtime's.
idle0=$(cpu); sleep 5; idle1=$(cpu)
before=$(cpu); t0=$(date +%s%N)
ROUNDS="${ROUNDS:-1}" PROXY="$proxy" IMG="$root/cmd/fluxi2i/testdata/sample.png" node fal-js-proxy.mjs
after=$(cpu); t1=$(date +%s%N)
forwarded=$(grep -c 'fluxi2i proxy: forwarded' "$tmp/proxy.log" || true)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$proxy_pid/status")
hz=$(getconf CLK_TCK)
ms=$(( (after - before) * 1000 / hz ))
idle_ms=$(( (idle1 - idle0) * 1000 / hz * (t1 - t0) / 5000000000 ))
echo "proxy: $forwarded requests forwarded in $(( (t1 - t0) / 1000000 )) ms, $ms ms of CPU ($(( ms * 1000 / (forwarded > 0 ? forwarded : 1) )) us each; idle runtime over the same time about $idle_ms ms), peak RSS $(( rss / 1024 )) MB"
! grep -q 'interop-key' "$tmp/proxy.log" || { echo "the key reached the proxy's log" >&2; exit 1; }
