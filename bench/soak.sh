#!/usr/bin/env bash
# Soak run of the release build: seeds COUNT patients (8 resources each), then runs the `mixed`
# load (reads, searches, creates, updates, transactions) at CONNECTIONS for SOAK_SECONDS, in
# windows of WINDOW seconds; after each window prints throughput, latency, errors and the
# server's resident memory. Memory should level off and errors stay at zero.
#
#   bench/soak.sh sqlite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/soak.sh postgres
#
# Settings: COUNT (default 2000), CONNECTIONS (default 16), SOAK_SECONDS (default 600),
# WINDOW (default 60), PORT.
set -euo pipefail
backend=${1:-sqlite}
count=${COUNT:-2000}
connections=${CONNECTIONS:-16}
soak=${SOAK_SECONDS:-600}
window=${WINDOW:-60}
port=${PORT:-18082}
. "$(dirname "$0")/common.sh"

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); backend: $backend; $connections connections; $count patients seeded"
"$bin"/loadgen --root "$root" --scenario seed-program --connections 16 --count "$count" >/dev/null
refresh_statistics
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$server/status"; }
echo "| minute | requests/s | p50 ms | p99 ms | max ms | errors | server RSS MiB |"
echo "|---|---|---|---|---|---|---|"
echo "| 0 | | | | | | $(rss) |"
elapsed=0
total_errors=0
while [ "$elapsed" -lt "$soak" ]; do
  line=$("$bin"/loadgen --root "$root" --scenario mixed --connections "$connections" --seconds "$window" --count "$count" --json)
  elapsed=$((elapsed + window))
  read -r rate p50 p99 max errors < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["per_second"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["errors"])' "$line")
  total_errors=$((total_errors + errors))
  echo "| $(awk -v s="$elapsed" 'BEGIN {printf "%.1f", s/60}') | $rate | $p50 | $p99 | $max | $errors | $(rss) |"
done
echo "peak server memory (VmHWM): $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$server/status); errors in all: $total_errors"
