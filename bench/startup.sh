#!/usr/bin/env bash
# Start-up time of the release server with all definitions loaded: from launch until
# /health/ready answers 200, on a fresh database (definitions compiled and the program's
# artefacts stored) and again on the same database (nothing to store). Then the cost of
# validation itself (benches/validation.rs).
# Usage: bench/startup.sh sqlite|postgres (PostgreSQL needs DATABASE_URL).
set -euo pipefail
backend=${1:-sqlite}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p pivot-fhir
bin="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
case "$backend" in
  sqlite) url="sqlite://$work/startup.db" ;;
  postgres)
    admin=${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server}
    db="startup_$$"
    psql "$admin" -qc "CREATE DATABASE $db"
    url="${admin%/*}/$db"
    ;;
  *) echo "usage: $0 sqlite|postgres" >&2; exit 2 ;;
esac
cleanup() {
  if [ "$backend" = postgres ]; then psql "$admin" -qc "DROP DATABASE IF EXISTS $db" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
port=18391
start_once() {
  local label=$1 begin end server
  begin=$(date +%s%N)
  RUST_LOG=info "$bin"/pivot-fhir serve --bind "127.0.0.1:$port" --database-url "$url" --data-dir "$work" \
    >"$work/$label.log" 2>&1 &
  server=$!
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.005; done
  end=$(date +%s%N)
  sed -i 's/\x1b\[[0-9;]*m//g' "$work/$label.log"
  echo "$label: ready after $(( (end - begin) / 1000000 )) ms; $(grep -o 'elapsed_ms=[0-9]*' "$work/$label.log" | head -1) (definitions compiled), $(grep -o 'loaded=[0-9]*' "$work/$label.log" | head -1) artefacts stored"
  kill "$server"; wait "$server" 2>/dev/null || true
}
start_once fresh
start_once restart
cargo bench -q --bench validation 2>/dev/null | grep -E "compiled|µs"
