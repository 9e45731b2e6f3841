#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI, in a venv under target/) generates requests from
# the server's own OpenAPI document and fails on any 5xx answer. Runs the debug server on SQLite,
# then on PostgreSQL when DATABASE_URL names one; about two minutes each (FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_BACKEND="${FUZZ_SECONDS:-120}"
VENV=target/fuzz-venv
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis>=4,<5"
fi
# The server binary as the test build makes it (same features as `cargo test`, so after the test
# suite nothing is rebuilt; a plain `cargo build` would compile the dependencies again).
cargo test --locked --no-run --test api -q
BIN=target/debug/pivot-fhir

fuzz() {
  local name="$1" url="$2"
  local dir port pid token status=0
  dir="$(mktemp -d)"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  DATABASE_URL="$url" PIVOT_DATA_DIR="$dir" PIVOT_BIND="127.0.0.1:$port" PIVOT_WORKERS=2 \
    RUST_LOG=warn "$BIN" serve >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.5
  done
  token=$("$BIN" token --client-id api-fuzz --scope "system/*.cruds" --data-dir "$dir")
  echo "api-fuzz: $name on port $port for ${SECONDS_PER_BACKEND}s"
  # not_a_server_error: any 5xx fails. Other conformance checks are not enforced here.
  "$VENV/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error \
    --phases examples,coverage,fuzzing \
    --max-time "$SECONDS_PER_BACKEND" \
    --request-timeout 30 \
    --generation-allow-x00 true \
    --workers 2 \
    --seed "${FUZZ_SEED:-42}" \
    --suppress-health-check all \
    --report-dir "$dir/report" 2>&1 | tee "$dir/fuzz.log" || status=$?
  local alive=1
  kill -0 "$pid" 2>/dev/null || alive=0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The only check is not_a_server_error, so any failure is a 5xx. Schemathesis also exits 1 on
  # its own errors (e.g. a flaky example generator); those pass, loudly, as long as the server
  # is still up and the run reached its summary.
  if grep -qE "unique failure|Server error" "$dir/fuzz.log" || [ "$alive" -eq 0 ] \
    || ! grep -q "Test cases:" "$dir/fuzz.log"; then
    echo "api-fuzz: $name failed (server up: $alive); server log: $dir/server.log" >&2
    grep -E '"level":"ERROR"|ERROR' "$dir/server.log" | tail -n 20 >&2 || true
    return 1
  fi
  if [ "$status" -ne 0 ]; then
    echo "api-fuzz: $name: no 5xx, but schemathesis reported errors of its own (see above)" >&2
  fi
  rm -rf "$dir"
}

fuzz sqlite "sqlite://$(mktemp -d)/fuzz.db"
if [[ "${DATABASE_URL:-}" == postgres* ]]; then
  schema="fuzz_$$"
  psql "$DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
  sep='?'; [[ "$DATABASE_URL" == *\?* ]] && sep='&'
  fuzz postgres "${DATABASE_URL}${sep}options=-c%20search_path%3D${schema}"
  psql "$DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE"
fi
