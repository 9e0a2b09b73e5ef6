#!/usr/bin/env bash
# Measures aiod-mock's throughput over TLS with wrk: GET of one asset, and
# POST of new assets (each POST is a SQLite commit with a synchronous flush).
# Run from the repository root after `cargo build --release -p aiod-mock`;
# needs wrk and curl (Debian packages). Everything stays on 127.0.0.1.
set -euo pipefail
mock=${MOCK:-target/release/aiod-mock}
port=${PORT:-18543}
duration=${DURATION:-10s}
state=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$state"' EXIT

"$mock" serve --listen "127.0.0.1:$port" --state-dir "$state" \
  --client bench:bench-secret:platform_lab --platform lab > "$state/mock.log" 2>&1 &
pid=$!
for _ in $(seq 50); do [ -f "$state/ca.pem" ] && curl -s --cacert "$state/ca.pem" "https://127.0.0.1:$port/counts" > /dev/null && break; sleep 0.1; done

base="https://127.0.0.1:$port"
token=$(curl -s --cacert "$state/ca.pem" -d grant_type=client_credentials -d client_id=bench \
  -d client_secret=bench-secret "$base/realms/aiod/protocol/openid-connect/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
id=$(curl -s --cacert "$state/ca.pem" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"platform":"lab","platform_resource_identifier":"bench-get","name":"bench node"}' \
  "$base/computational_assets" | python3 -c 'import json,sys; print(json.load(sys.stdin)["identifier"])')

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "== GET /computational_assets/{id}"
wrk -t2 -c32 -d"$duration" --latency "$base/computational_assets/$id"
echo "== POST /computational_assets"
TOKEN=$token wrk -t2 -c32 -d"$duration" --latency -s bench/mock-post.lua "$base/computational_assets"
echo "assets stored: $(curl -s --cacert "$state/ca.pem" "$base/counts/computational_assets")"
