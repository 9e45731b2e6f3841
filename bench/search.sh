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
backend=${1:-sqlite}
count=${COUNT:-10000}
seconds=${RUN_SECONDS:-10}
port=${PORT:-18081}
. "$(dirname "$0")/common.sh"

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); backend: $backend"
"$bin"/loadgen --root "$root" --scenario seed-program --connections 16 --count "$count"
refresh_statistics
if [ "$backend" = sqlite ]; then echo "database size: $(du -sh "$work" | cut -f1)"; fi
for scenario in search-identifier search-name search-subject-code search-patient-date search-include; do
  for connections in 8 32; do
    "$bin"/loadgen --root "$root" --scenario "$scenario" --connections "$connections" --seconds "$seconds" --count "$count"
  done
done
echo "peak server memory (VmHWM): $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$server/status)"
