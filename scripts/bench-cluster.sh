#!/usr/bin/env bash
# Fan-out across several nodes (release conformance servers) on Redis:
#
#   ./scripts/bench-cluster.sh single    # one node, no Redis: the baseline
#   ./scripts/bench-cluster.sh redis     # NODES nodes on one redis-server
#   ./scripts/bench-cluster.sh sharded   # NODES nodes on a 3-master Redis
#                                        # Cluster with REDIS_SHARDED=$SHARDS
#
# Environment: NODES (4), PER_NODE subscribers (5000), TOPICS (1000), RATE
# messages/s (200), BYTES (100), DURATION seconds (10), SHARDS (4096).
# The subscribers of node k are on topics k, k+NODES, ... (TOPICS is a
# multiple of NODES), the publisher is on the last node; every process this
# script starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-redis}
nodes=${NODES:-4}
per_node=${PER_NODE:-5000}
topics=${TOPICS:-1000}
rate=${RATE:-200}
bytes=${BYTES:-100}
duration=${DURATION:-10}
shards=${SHARDS:-4096}
cargo build --release -q -p conformance-server -p fawkes-cli
# the load tool holds every subscriber: raise the limit where allowed (root)
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

pids=()
dir=$(mktemp -d)
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return; sleep 0.05; done; echo "node on $1 did not start" >&2; exit 1; }

redis_pids=()
redis_ports=()
case "$mode" in
  single) nodes=1; url="" ;;
  redis)
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
    pids+=($!); redis_pids+=($!); redis_ports+=("$port")
    sleep 0.5
    url="redis://127.0.0.1:$port" ;;
  sharded)
    ports=()
    for i in 1 2 3; do
      port=$(free_port)
      while [ "$port" -gt 55000 ]; do port=$(free_port); done
      redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --cluster-enabled yes \
        --cluster-config-file "$dir/nodes-$i.conf" --dir "$dir" >/dev/null 2>&1 &
      pids+=($!); redis_pids+=($!); redis_ports+=("$port"); ports+=("$port")
    done
    sleep 0.5
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
    for _ in $(seq 100); do redis-cli -p "${ports[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
    url="redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" ;;
  *) echo "usage: $0 single|redis|sharded" >&2; exit 2 ;;
esac

node_ports=()
node_pids=()
sharding=()
if [ "$mode" = sharded ]; then sharding=(REDIS_SHARDED="$shards"); fi
for k in $(seq "$nodes"); do
  port=$(free_port)
  env RATE_LIMITS=off PORT="$port" REDIS_URL="$url" NODE_NAME="node-$k" "${sharding[@]}" \
    ./target/release/conformance-server >/dev/null 2>&1 &
  pids+=($!); node_pids+=($!); node_ports+=("$port")
  wait_for "$port"
done

# one more node without subscribers: what receiving the fleet's traffic
# costs a node by itself (CPU from /proc, user + system ticks)
idle_pid=
if [ "$mode" != single ]; then
  port=$(free_port)
  env RATE_LIMITS=off PORT="$port" REDIS_URL="$url" NODE_NAME="node-idle" "${sharding[@]}" \
    ./target/release/conformance-server >/dev/null 2>&1 &
  idle_pid=$!; pids+=($!)
  wait_for "$port"
fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
[ -n "$idle_pid" ] && idle0=$(ticks "$idle_pid")

args=(--url "http://127.0.0.1:${node_ports[0]}" --pid "${node_pids[0]}")
for k in $(seq 1 $((nodes - 1))); do
  args+=(--node-url "http://127.0.0.1:${node_ports[$k]}" --node-pid "${node_pids[$k]}")
done
for p in "${redis_pids[@]}"; do args+=(--redis-pid "$p"); done
./target/release/fawkes bench fanout --subscribers $((nodes * per_node)) --topics "$topics" --rate "$rate" \
  --bytes "$bytes" --duration "$duration" --publish-url "http://127.0.0.1:${node_ports[$((nodes - 1))]}" "${args[@]}"
# what each node's Redis adapter counted
for k in $(seq 0 $((nodes - 1))); do
  echo "node-$((k + 1)): $(curl -s "http://127.0.0.1:${node_ports[$k]}/metrics" | grep '^fawkes_redis_' | grep -v '_bytes\|_channels ' | tr '\n' ' ')"
done
if [ -n "$idle_pid" ]; then
  idle1=$(ticks "$idle_pid")
  echo "idle node (no subscribers): CPU $(( (idle1 - idle0) * 10 )) ms over the run; $(curl -s "http://127.0.0.1:$port/metrics" | grep '^fawkes_redis_received_total')"
fi
# Redis's own account of the publishes (usec_per_call includes writing to
# every subscriber's buffer)
for rport in "${redis_ports[@]}"; do
  echo "redis :$rport: $(redis-cli -p "$rport" INFO commandstats | grep -E 'cmdstat_s?publish:' | tr -d '\r')"
done
