#!/usr/bin/env bash
# The Databelt paper's evaluation on an emulated testbed on this machine:
# builds the wildfire components and the host, then runs
# `databelt bench paper` (pass --quick for the ≤ 3 minute version).
# Results: results/paper/{paper.csv,summary.md,latency.svg,throughput.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --target wasm32-wasip2 --target-dir target/guests \
  -p wildfire-preprocess -p wildfire-detect -p wildfire-alarm
cargo build --release -p databelt-cli --bin databelt
./target/release/databelt bench paper "$@"
