#!/usr/bin/env bash
# Counts the non-blank, non-comment lines of the dashboard in Rust (src/,
# tests/) and of its Phoenix equivalent (phoenix/), and their ratio.
set -euo pipefail
cd "$(dirname "$0")"
count() { # count <comment prefix> <files...>
  local prefix=$1; shift
  cat "$@" | grep -v '^[[:space:]]*$' | grep -cv "^[[:space:]]*$prefix"
}
rust=$(count '//' src/*.rs tests/*.rs)
phoenix=$(count '#' $(find phoenix -name '*.ex' -o -name '*.exs'))
echo "rust: $rust lines (src/*.rs, tests/*.rs)"
echo "phoenix: $phoenix lines (phoenix/**/*.ex, *.exs)"
awk -v r="$rust" -v p="$phoenix" 'BEGIN { printf "ratio: %.2f\n", r / p }'
