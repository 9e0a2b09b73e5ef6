#!/usr/bin/env bash
# Measures the resident memory of `hw-agent run` over time: the real agent,
# leading a fake cluster (fake-kube's `serve` example, NODES Nodes) and
# registering it on the AIoD mock, with this machine's / as its node's root.
# Run from the repository root after
#   cargo build --release -p hw-agent -p aiod-mock --example serve
# Everything stays on 127.0.0.1. Samples VmRSS of the agent once a second
# for DURATION seconds with collections every INTERVAL, and prints the
# median and maximum after the first WARMUP seconds.
set -euo pipefail
agent=${AGENT:-target/release/hw-agent}
mock=${MOCK:-target/release/aiod-mock}
fake=${FAKE_KUBE:-target/release/examples/serve}
duration=${DURATION:-180}
warmup=${WARMUP:-60}
interval=${INTERVAL:-10s}
nodes=${NODES:-100}
allocator=${ALLOCATOR:-on-demand}
mock_port=${MOCK_PORT:-18643}
listen=${LISTEN:-127.0.0.1:18680}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$mock" serve --listen "127.0.0.1:$mock_port" --state-dir "$work/mock" \
  --client bench:bench-secret:platform_lab --platform lab > "$work/mock.log" 2>&1 &
pids+=($!)
"$fake" "$work/kubeconfig" "$nodes" > "$work/fake.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ -f "$work/mock/ca.pem" ] && grep -q ready "$work/fake.log" && break
  sleep 0.1
done
echo -n bench-secret > "$work/secret"

"$agent" run --kubeconfig "$work/kubeconfig" --node-name node-00000 --cache-dir "${CACHE:-$work/cache}" \
  --interval "$interval" --listen "$listen" --allocator "$allocator" \
  --api-server-url https://k8s.example.org:6443 --cluster-name bench \
  --api-url "https://127.0.0.1:$mock_port" --token-url "https://127.0.0.1:$mock_port/realms/aiod/protocol/openid-connect/token" \
  --ca-cert "$work/mock/ca.pem" --client-id bench --client-secret-file "$work/secret" --platform lab \
  > /dev/null 2> "$work/agent.log" &
agent_pid=$!
pids+=("$agent_pid")

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "agent: $("$agent" --version), allocator $allocator, interval $interval, $nodes nodes, $duration s${MALLOC_ARENA_MAX:+, MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX}"
samples=()
for second in $(seq "$duration"); do
  sleep 1
  kill -0 "$agent_pid" 2> /dev/null || { echo "hw-agent exited; log:" >&2; cat "$work/agent.log" >&2; exit 1; }
  kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status")
  [ "$second" -gt "$warmup" ] && samples+=("$kib")
done
printf '%s\n' "${samples[@]}" | sort -n | awk '
  { value[NR] = $1 }
  END { printf "steady RSS after warm-up: median %.1f MiB, max %.1f MiB (%d samples)\n", value[int((NR + 1) / 2)] / 1024, value[NR] / 1024, NR }'
grep -E "^(Rss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean)" "/proc/$agent_pid/smaps_rollup"
echo "largest mappings by RSS:"
awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anonymous]" : $6) } /^Rss:/ { rss[name] += $2 }
     END { for (name in rss) printf "%8.1f MiB  %s\n", rss[name] / 1024, name }' "/proc/$agent_pid/smaps" | sort -rn | head -8
echo "peak RSS over the whole run (VmHWM): $(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$agent_pid/status")"
metrics=$(curl -s "http://$listen/metrics")
echo "$metrics" | grep -E '^(hw_agent_leader|hw_agent_node_report_publishes_total|hw_agent_collection_duration_seconds_(sum|count)|hw_agent_leader_rounds_total|process_resident_memory_bytes|process_threads)[ {]'
