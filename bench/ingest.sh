#!/usr/bin/env bash
# Ingest benchmark of the release build: streams the Synthea transaction Bundles of
# tests/fixtures/synthea (61 to 122 entries each) at 1 and 4 concurrent clients, then one
# merged transaction of about 2,900 entries (the 10 records, 3 copies), on a fresh database.
#
#   bench/ingest.sh sqlite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/ingest.sh postgres
#
# Settings: RUN_SECONDS (default 20), PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
seconds=${RUN_SECONDS:-20}
port=${PORT:-18082}
root="http://127.0.0.1:$port"

cargo build --release -q -p pivot-fhir -p loadgen
bin="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
case "$backend" in
  sqlite) url="sqlite://$work/bench.db" ;;
  postgres)
    admin=${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server}
    db="bench_ingest_$$"
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
for connections in 1 4; do
  "$bin"/loadgen --root "$root" --scenario ingest --bundle-dir tests/fixtures/synthea --connections "$connections" --seconds "$seconds"
done
"$bin"/loadgen --root "$root" --scenario ingest --bundle-dir tests/fixtures/synthea --merge 3 --connections 1 --seconds "$seconds"
echo "peak server memory (VmHWM): $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$server/status)"
