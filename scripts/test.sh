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
