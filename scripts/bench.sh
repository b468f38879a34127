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
stop() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT
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
