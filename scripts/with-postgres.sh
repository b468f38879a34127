#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server on loopback, its URL in
# CHAT_TEST_DATABASE_URL; installs PostgreSQL with apt when it is missing.
set -euo pipefail
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bin="$(find_bin)"
if [ -z "$bin" ]; then
  echo "== installing PostgreSQL"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin="$(find_bin)"
fi
dir="$(mktemp -d)"
port="${PGPORT_TEST:-54329}"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$dir"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -w start >/dev/null
stop() { "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap stop EXIT
"${as_pg[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres chat_test
export CHAT_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/chat_test"
"$@"
