#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit,
# integration and doc tests. Needs only the Rust toolchain so far; anything
# else a test needs is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test (unit, integration, doc)"
cargo test --workspace

echo "== end-to-end tests with the official phoenix client (Node)"
cargo build -p conformance-server
(
  cd e2e/js
  if [ ! -d node_modules ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  node --test --test-concurrency=1 --test-timeout=120000 test/*.test.js
)
