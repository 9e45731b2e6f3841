# Shared by the benchmark scripts: build, start a release server on a fresh database of the
# chosen backend, and export a token for the load generator. Sourced with $backend and $port set.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p pivot-fhir -p loadgen
bin="${CARGO_TARGET_DIR:-target}/release"
root="http://127.0.0.1:$port"
work=$(mktemp -d)
case "$backend" in
  sqlite) url="sqlite://$work/bench.db" ;;
  postgres)
    admin=${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server}
    db="bench_$$_$port"
    psql "$admin" -qc "CREATE DATABASE $db"
    url="${admin%/*}/$db"
    ;;
  *) echo "usage: $0 sqlite|postgres" >&2; exit 2 ;;
esac
RUST_LOG=warn "$bin"/pivot-fhir serve --bind "127.0.0.1:$port" --database-url "$url" --data-dir "$work" >/dev/null &
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

# After a bulk load, do what autovacuum would in a running system (it may be off on a test
# server): refresh the planner's statistics (PostgreSQL plans by them; SQLite's plans do not
# depend on them) and the visibility map (without it an index-only scan visits the table).
refresh_statistics() {
  if [ "$backend" = postgres ]; then psql "$url" -qc "VACUUM ANALYZE"; fi
}
