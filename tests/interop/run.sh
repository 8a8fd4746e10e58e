#!/usr/bin/env bash
# make interop: fal's own JS client against `fluxi2i simulate`.
# Needs Node.js 18+ and the npm registry.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
npm install --no-audit --no-fund --silent
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
(cd "$root" && go build -o "$tmp/fluxi2i" ./cmd/fluxi2i)
"$tmp/fluxi2i" simulate --addr 127.0.0.1:0 --api-key interop-key --queue-time 300ms --run-time 600ms 2>"$tmp/sim.log" &
pid=$!
for _ in $(seq 50); do
  addr=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/sim.log" | head -1 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/sim.log"; exit 1; }
SIM="$addr" KEY=interop-key IMG="$root/cmd/fluxi2i/testdata/sample.png" node fal-js.mjs
