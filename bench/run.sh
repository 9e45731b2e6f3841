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
backend=${1:-sqlite}
count=${COUNT:-80000}
seconds=${RUN_SECONDS:-10}
port=${PORT:-18080}
. "$(dirname "$0")/common.sh"

load() { "$bin"/loadgen --root "$root" --seconds "$seconds" "$@"; }

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); backend: $backend; disk: $(df -h "$work" | awk 'NR==2 {print $1}')"
load --scenario preload --connections 32 --count "$count"
refresh_statistics
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
