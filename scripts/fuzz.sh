#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) each, starting from
# the committed seeds (and, for the term and Redis wire targets, every
# message of crates/fawkes-redis/tests/data/phoenix-corpus), in a scratch
# corpus. Installs cargo-fuzz if needed.
# libFuzzer needs unstable compiler flags: RUSTC_BOOTSTRAP lets the stable
# toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in decode longpoll_body token_verify redis_wire ws_reader; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$scratch/$target"
  cp seeds/"$target"/* "$scratch/$target/"
  case "$target" in
    token_verify | redis_wire)
      for f in ../crates/fawkes-redis/tests/data/phoenix-corpus/*/*.etf; do
        cp "$f" "$scratch/$target/phoenix-$(basename "$(dirname "$f")")-$(basename "$f")"
      done
      ;;
  esac
  status=0
  cargo fuzz run "$target" "$scratch/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 > "$scratch/$target.log" 2>&1 || status=$?
  grep -E '^(Done|INFO: Seed|SUMMARY)|panicked|ERROR' "$scratch/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$scratch/$target.log"
    echo "fuzz target $target failed"
    exit 1
  fi
done
