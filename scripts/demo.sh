#!/usr/bin/env bash
# The main demo: build the hello-counter example as a WASI component and run it
# on the Databelt host three times (its state persists between runs), then elect
# the storage node for a state on the paper's satellite testbed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building the example component (cargo build --target wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 -p hello-counter --target-dir target/guests
echo "== building the databelt host"
cargo build --release -p databelt-host --bin databelt
wasm=target/guests/wasm32-wasip2/release/hello_counter.wasm
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
./target/release/databelt describe "$wasm"
for name in ada grace ada; do
  echo "== databelt run hello_counter.wasm --input '{\"name\":\"$name\"}'"
  ./target/release/databelt run "$wasm" --input "{\"name\":\"$name\"}" --data-dir "$data"
done
echo "== state persisted in $data/databelt-state.redb across three separate host processes"
echo "== where should a 100 kB state produced on sat2 go, if the next step runs on sat6 within 100 ms?"
./target/release/databelt elect --scenario scenarios/paper-testbed.toml \
  --producer sat2 --consumer sat6 --size 100000 --tmax-ms 100
