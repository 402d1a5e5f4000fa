#!/usr/bin/env bash
# Sets up and runs every test: unit, property, macro (trybuild), and
# integration tests that build real components and start real hosts on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-cargo-component
cargo test --workspace --exclude hello-counter --exclude kv-probe --exclude bench-min --exclude stage --exclude merge --exclude fan \
  --exclude wildfire-types --exclude wildfire-preprocess --exclude wildfire-detect --exclude wildfire-alarm "$@"
