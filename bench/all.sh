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

# `run` with a warm cache, as after a pod's first start.
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
"$AGENT" collect --cache-dir "$cache" > /dev/null
for allocator in on-demand pooling; do
  CACHE=$cache ALLOCATOR=$allocator bench/run-memory.sh | tee "$out/run-memory-$allocator.txt"
done

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
