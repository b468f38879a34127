#!/usr/bin/env bash
# Runs every benchmark scenario of docs/benchmarks.md against a release
# build of the conformance server on loopback, and prints each result.
#   BENCH_DURATION  seconds of load per scenario (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p conformance-server -p fawkes-cli
duration="${BENCH_DURATION:-10}"
port=4300
start() {
  RATE_LIMITS=off PORT=$port "$@" ./target/release/conformance-server >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
}
server=
stop() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
redis=
publisher_node=
# every process this script started goes with it, also when a run fails
trap 'stop; [ -n "$publisher_node" ] && kill "$publisher_node" 2>/dev/null; [ -n "$redis" ] && kill "$redis" 2>/dev/null; true' EXIT
bench() { ./target/release/fawkes bench "$@" --url "http://127.0.0.1:$port" --pid "$server"; }

start env
bench conns --n 19900
stop; start env
bench fanout --subscribers 5000 --rate 10 --bytes 100 --duration "$duration"
stop; start env
bench fanout --subscribers 5000 --rate 200 --bytes 100 --duration "$duration"
stop; start env
bench echo --clients 20 --in-flight 10 --duration "$duration"
stop; start env
bench churn --rate 5000 --duration "$duration"
stop; start env PRESENCE_DIFF_WINDOW_MS=100
bench presence --n 1000
stop; start env
bench stalled --stalled 200 --rate 100 --bytes 32768 --duration 30

# Two nodes sharing a Redis server (skipped without redis-server): the
# subscribers on one node, the publisher on the other.
if command -v redis-server >/dev/null 2>&1; then
  stop
  redis-server --port 6399 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  redis=$!
  sleep 0.5
  RATE_LIMITS=off PORT=4301 REDIS_URL=redis://127.0.0.1:6399 NODE_NAME=b ./target/release/conformance-server >/dev/null 2>&1 &
  publisher_node=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:4301/health >/dev/null 2>&1 && break; sleep 0.1; done
  start env REDIS_URL=redis://127.0.0.1:6399 NODE_NAME=a
  for rate in 10 200; do
    ./target/release/fawkes bench fanout --subscribers 5000 --rate "$rate" --bytes 100 --duration "$duration" \
      --url "http://127.0.0.1:$port" --publish-url http://127.0.0.1:4301 --pid "$server"
  done
  kill "$publisher_node" "$redis" 2>/dev/null || true
fi
