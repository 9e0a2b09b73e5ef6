#!/usr/bin/env bash
# Runs every benchmark of docs/BENCHMARKS.md one after the other, so all
# figures come from one machine in one sitting, and writes their output to
# ${OUT:-target/bench-all}. Run from the repository root on an otherwise
# idle machine; needs hyperfine, lshw, hwinfo, pciutils, time, wrk and curl
# (Debian packages). Takes about 20 minutes on 2 vCPUs.
set -euo pipefail
target=${CARGO_TARGET_DIR:-target}
out=${OUT:-$target/bench-all}
mkdir -p "$out"
export AGENT=$target/release/hw-agent MOCK=$target/release/aiod-mock FAKE_KUBE=$target/release/examples/serve

cargo build --release -p hw-agent -p aiod-mock
cargo build --release -p fake-kube --example serve

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "toolchain: $(rustc --version)"
} | tee "$out/machine.txt"

OUT="$out/collect" bench/collect.sh | tee "$out/collect.txt"

# `run` on a first start (it compiles the collectors in the process), with
# glibc's default malloc arenas and with MALLOC_ARENA_MAX=2 as the image
# and DaemonSet set it; then restarts with the compiled collectors in the
# cache, with the on-demand and the pooling allocator.
first=$(mktemp -d)
cache=$(mktemp -d)
trap 'rm -rf "$first" "$cache"' EXIT
export DURATION=${DURATION:-120} WARMUP=${WARMUP:-60}
CACHE=$first ALLOCATOR=on-demand bench/run-memory.sh | tee "$out/run-memory-first-start-default-arenas.txt"
CACHE=$cache ALLOCATOR=on-demand MALLOC_ARENA_MAX=2 bench/run-memory.sh | tee "$out/run-memory-first-start.txt"
CACHE=$cache ALLOCATOR=on-demand MALLOC_ARENA_MAX=2 bench/run-memory.sh | tee "$out/run-memory-restart.txt"
CACHE=$cache ALLOCATOR=pooling MALLOC_ARENA_MAX=2 bench/run-memory.sh | tee "$out/run-memory-restart-pooling.txt"
unset DURATION WARMUP

cargo bench -p hw-agent --bench collectors | tee "$out/criterion-collectors.txt"
cargo bench -p hw-agent --bench aggregate | tee "$out/criterion-aggregate.txt"
# Criterion's median of each benchmark, from its estimates.
python3 - "$target/criterion" << 'PY' | tee "$out/criterion-medians.txt"
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for estimates in sorted(root.glob("**/new/estimates.json")):
    name = "/".join(estimates.parent.parent.relative_to(root).parts)
    median = json.loads(estimates.read_text())["median"]["point_estimate"] / 1e6
    print(f"{name}\t{median:.3f} ms")
PY

DURATION=10s bench/mock.sh | tee "$out/mock.txt"
