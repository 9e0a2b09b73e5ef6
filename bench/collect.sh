#!/usr/bin/env bash
# Times a warm and a cold `hw-agent collect` with hyperfine and records peak
# memory with GNU time. Run from the repository root after
# `cargo build --release -p hw-agent`; needs hyperfine (Debian package).
set -euo pipefail
agent=${AGENT:-target/release/hw-agent}
warm_cache=$(mktemp -d)
cold_cache=$(mktemp -d)
trap 'rm -rf "$warm_cache" "$cold_cache"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"

hyperfine -N --warmup 3 --runs 30 "$agent collect --cache-dir $warm_cache"
hyperfine -N --runs 10 --prepare "rm -rf $cold_cache" "$agent collect --cache-dir $cold_cache"

echo "peak RSS, warm:"
/usr/bin/time -f "%M KiB" "$agent" collect --cache-dir "$warm_cache" > /dev/null
echo "peak RSS, cold:"
rm -rf "$cold_cache"
/usr/bin/time -f "%M KiB" "$agent" collect --cache-dir "$cold_cache" > /dev/null
