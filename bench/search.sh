#!/usr/bin/env bash
# Search benchmark of the release build: seeds COUNT patients, each with 5 Observations, a CarePlan
# and a ServiceRequest (8 resources per patient), then runs the five reference searches at 8 and
# 32 connections. The load generator runs on the same machine.
#
#   bench/search.sh sqlite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/search.sh postgres
#
# Settings: COUNT (default 10000 patients = 80,000 resources), RUN_SECONDS (default 10), PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
count=${COUNT:-10000}
seconds=${RUN_SECONDS:-10}
port=${PORT:-18081}
root="http://127.0.0.1:$port"

cargo build --release -q -p pivot-fhir -p loadgen
bin="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
case "$backend" in
  sqlite) url="sqlite://$work/bench.db" ;;
  postgres)
    admin=${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server}
    db="bench_search_$$"
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

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); backend: $backend"
"$bin"/loadgen --root "$root" --scenario seed-program --connections 16 --count "$count"
if [ "$backend" = sqlite ]; then echo "database size: $(du -sh "$work" | cut -f1)"; fi
for scenario in search-identifier search-name search-subject-code search-patient-date search-include; do
  for connections in 8 32; do
    "$bin"/loadgen --root "$root" --scenario "$scenario" --connections "$connections" --seconds "$seconds" --count "$count"
  done
done
echo "peak server memory (VmHWM): $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$server/status)"
