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
backend=${1:-sqlite}
seconds=${RUN_SECONDS:-20}
port=${PORT:-18082}
. "$(dirname "$0")/common.sh"

echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); backend: $backend"
for connections in 1 4; do
  "$bin"/loadgen --root "$root" --scenario ingest --bundle-dir tests/fixtures/synthea --connections "$connections" --seconds "$seconds"
done
"$bin"/loadgen --root "$root" --scenario ingest --bundle-dir tests/fixtures/synthea --merge 3 --connections 1 --seconds "$seconds"
echo "peak server memory (VmHWM): $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$server/status)"
