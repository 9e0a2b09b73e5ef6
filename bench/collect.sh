#!/usr/bin/env bash
# Times `hw-agent collect` side by side with lshw, hwinfo and lscpu + lspci
# on this machine, with hyperfine, and records each command's peak memory
# with GNU time. Run from the repository root after
# `cargo build --release -p hw-agent`; needs hyperfine, lshw, hwinfo,
# pciutils and time (Debian packages). lshw and hwinfo see more as root.
#
# Prints the machine, hyperfine's summary for each group, and a Markdown
# table of median, mean, standard deviation and peak RSS, written to
# ${OUT:-target/bench-collect}/summary.md with the raw JSON beside it.
set -euo pipefail
agent=${AGENT:-target/release/hw-agent}
runs=${RUNS:-30}
out=${OUT:-target/bench-collect}
mkdir -p "$out"
warm_cache=$(mktemp -d)
cold_cache=$(mktemp -d)
trap 'rm -rf "$warm_cache" "$cold_cache"' EXIT

for tool in hyperfine lshw hwinfo lscpu lspci /usr/bin/time; do
  command -v "$tool" > /dev/null || { echo "missing $tool: apt-get install hyperfine lshw hwinfo pciutils time" >&2; exit 1; }
done

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "agent: $("$agent" --version), lshw $(dpkg-query -W -f='${Version}' lshw 2>/dev/null), hwinfo $(hwinfo --version), $(lscpu --version), lspci $(lspci --version | awk '{print $3}')"

# Fill the warm cache once.
"$agent" collect --cache-dir "$warm_cache" > /dev/null

# Every command runs through hyperfine's shell, whose start-up cost it
# measures and subtracts, so the pipeline of the baseline and the single
# commands are timed alike. Output goes to /dev/null.
declare -A commands=(
  ["hw-agent collect (warm)"]="$agent collect --cache-dir $warm_cache"
  ["hw-agent collect (warm, pooling)"]="$agent collect --cache-dir $warm_cache --allocator pooling"
  ["lscpu -J + lspci -vmm"]="lscpu -J > /dev/null && lspci -vmm > /dev/null"
  ["lshw -json"]="lshw -json"
  ["hwinfo"]="hwinfo"
)
order=("hw-agent collect (warm)" "hw-agent collect (warm, pooling)" "lscpu -J + lspci -vmm" "lshw -json" "hwinfo")

args=()
for name in "${order[@]}"; do
  args+=(--command-name "$name" "${commands[$name]}")
done
hyperfine --warmup 3 --runs "$runs" --export-json "$out/warm.json" "${args[@]}"
hyperfine --runs 10 --prepare "rm -rf $cold_cache" --export-json "$out/cold.json" \
  --command-name "hw-agent collect (cold)" "$agent collect --cache-dir $cold_cache"

# Peak resident memory: the largest of five runs of each command.
peak_kib() {
  local best=0 kib
  for _ in 1 2 3 4 5; do
    [ -n "${2:-}" ] && eval "$2"
    kib=$(/usr/bin/time -v sh -c "$1" 2>&1 > /dev/null | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
    [ "$kib" -gt "$best" ] && best=$kib
  done
  echo "$best"
}

{
  echo "| command | median | mean ± σ | peak RSS |"
  echo "| --- | --- | --- | --- |"
  for file in warm cold; do
    python3 - "$out/$file.json" << 'PY'
import json, sys
for result in json.load(open(sys.argv[1]))["results"]:
    print(f'{result["command"]}\t{result["median"] * 1e3:.1f} ms\t{result["mean"] * 1e3:.1f} ms ± {result["stddev"] * 1e3:.1f} ms')
PY
  done | while IFS=$'\t' read -r name median mean; do
    if [ "$name" = "hw-agent collect (cold)" ]; then
      kib=$(peak_kib "$agent collect --cache-dir $cold_cache" "rm -rf $cold_cache")
    else
      kib=$(peak_kib "${commands[$name]}")
    fi
    echo "| $name | $median | $mean | $(awk -v k="$kib" 'BEGIN {printf "%.1f MiB", k / 1024}') |"
  done
} | tee "$out/summary.md"

python3 - "$out/warm.json" << 'PY'
import json, sys
median = {result["command"]: result["median"] for result in json.load(open(sys.argv[1]))["results"]}
agent = median["hw-agent collect (warm)"]
print(f'warm collect / lshw -json: {agent / median["lshw -json"]:.3f} (target at most 0.25)')
print(f'warm collect / (lscpu -J + lspci -vmm): {agent / median["lscpu -J + lspci -vmm"]:.2f} (target at most 1.2)')
PY
