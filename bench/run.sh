#!/usr/bin/env bash
# Load benchmark of the release build: preloads COUNT patients into a fresh database, then measures
# the HTTP ceiling (GET /health), creates, reads by id and If-Match updates at 1 and 32
# connections, and the server's peak memory. The load generator runs on the same machine.
#
#   bench/run.sh sqlite                                  # fresh SQLite file
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/run.sh postgres   # fresh database
#
# Settings: COUNT (default 80000), RUN_SECONDS (default 10), PORT (default 18080).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
count=${COUNT:-80000}
seconds=${RUN_SECONDS:-10}
port=${PORT:-18080}
root="http://127.0.0.1:$port"

cargo build --release -q -p pivot-fhir -p loadgen
bin="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
case "$backend" in
  sqlite) url="sqlite://$work/bench.db" ;;
  postgres)
    admin=${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server}
    db="bench_$$"
    psql "$admin" -qc "CREATE DATABASE $db"
    url="${admin%/*}/$db"
    ;;
  *) echo "usage: $0 sqlite|postgres" >&2; exit 2 ;;
esac

RUST_LOG=warn "$bin"/pivot-fhir serve --bind "127.0.0.1:$port" --database-url "$url" --data-dir "$work" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ "$backend" = postgres ]; then psql "$admin" -qc "DROP DATABASE IF EXISTS $db" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "$root/health/ready" >/dev/null && break; sleep 0.1; done
PIVOT_TOKEN=$("$bin"/pivot-fhir token --data-dir "$work" --client-id bench --scope 'system/*.cruds')
export PIVOT_TOKEN

load() { "$bin"/loadgen --root "$root" --seconds "$seconds" "$@"; }

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); backend: $backend; disk: $(df -h "$work" | awk 'NR==2 {print $1}')"
load --scenario preload --connections 32 --count "$count"
half=$((count / 2))
for connections in 1 32; do
  load --scenario ceiling --connections "$connections"
  load --scenario read --connections "$connections" --count "$count"
  load --scenario create --connections "$connections"
  if [ "$connections" = 1 ]; then
    load --scenario update --connections 1 --start 0 --count "$half"
  else
    load --scenario update --connections 32 --start "$half" --count "$half"
  fi
done
echo "peak server memory (VmHWM): $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$server/status)"
