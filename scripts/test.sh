#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit,
# integration and doc tests, the end-to-end tests with the official phoenix
# client (Node), the chat on PostgreSQL and in headless Chromium. A machine
# with the Rust toolchain, Node 20 and apt is enough: the rest (npm packages,
# a Redis server for the cluster tests, PostgreSQL, Chromium) is installed
# here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
need() { # need <command> <debian package>
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "$apt_updated" = 0 ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
# the cluster tests start and stop their own redis-server processes (TLS,
# sentinels and Redis Cluster included) and drive them with redis-cli
need redis-server redis-server
need redis-cli redis-tools

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo doc (broken links and missing docs are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --lib --quiet

echo "== cargo test (unit, integration, doc)"
cargo test --workspace

echo "== OpenTelemetry traces (feature otel)"
cargo clippy -p fawkes --features otel --all-targets -- -D warnings
cargo test -p fawkes --features otel --test otel --test otel_otlp

echo "== end-to-end tests with the official phoenix client (Node)"
cargo build -p conformance-server
(
  cd e2e/js
  if [ ! -d node_modules ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  node --test --test-concurrency=1 --test-timeout=120000 test/*.test.js
)

echo "== the chat on PostgreSQL (a throwaway server; PostgreSQL is installed with apt if missing)"
./scripts/with-postgres.sh cargo test -p fawkes-chat --test chat --test accounts --test api_errors --test features

echo "== the chat in headless Chromium (installed with apt if missing), on SQLite then on PostgreSQL"
need chromium chromium
cargo build -p fawkes-chat
if [ ! -d examples/chat/web/node_modules/playwright-core ]; then
  (cd examples/chat/web && npm ci --no-audit --no-fund --loglevel=error)
fi
(cd examples/chat/web && node --test --test-concurrency=1 --test-timeout=120000 e2e.test.mjs admin.test.mjs)
./scripts/with-postgres.sh sh -c 'cd examples/chat/web && node --test --test-concurrency=1 --test-timeout=120000 e2e.test.mjs'
