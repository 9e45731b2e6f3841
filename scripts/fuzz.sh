#!/usr/bin/env bash
# A long fuzz run of every target (or those named), in a release build:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Targets: resource_json search_query fhirpath patch jwt bundle_entries (src/fuzz.rs).
# Failing inputs are saved under target/fuzz-failures/; copy each into
# fuzz/regressions/TARGET/ once it is fixed, so every later run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-1800}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(resource_json search_query fhirpath patch jwt bundle_entries)
fi
for target in "${targets[@]}"; do
  FUZZ_SECONDS="$seconds" cargo test --release --locked --test fuzz -- --exact "$target" --nocapture
done
