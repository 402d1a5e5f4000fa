#!/usr/bin/env bash
# The main demo: build the hello-counter example as a WASI component and run it
# on the Databelt host three times (its state persists between runs), then elect
# the storage node for a state on the paper's satellite testbed, and finally
# start the whole testbed on loopback (`databelt up`) and run the wildfire
# workflow across it with each policy (`databelt invoke`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building the example components (cargo build --target wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 --target-dir target/guests \
  -p hello-counter -p wildfire-preprocess -p wildfire-detect -p wildfire-alarm
echo "== building the databelt host"
cargo build --release -p databelt-cli --bin databelt
wasm=target/guests/wasm32-wasip2/release/hello_counter.wasm
data=$(mktemp -d)
up_pid=
cleanup() {
  if [ -n "$up_pid" ]; then kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT
./target/release/databelt describe "$wasm"
for name in ada grace ada; do
  echo "== databelt run hello_counter.wasm --input '{\"name\":\"$name\"}'"
  ./target/release/databelt run "$wasm" --input "{\"name\":\"$name\"}" --data-dir "$data"
done
echo "== state persisted in $data/databelt-state.redb across three separate host processes"
echo "== where should a 100 kB state produced on sat2 go, if the next step runs on sat6 within 100 ms?"
./target/release/databelt elect --scenario scenarios/paper-testbed.toml \
  --producer sat2 --consumer sat6 --size 100000 --tmax-ms 100
echo "== databelt up scenarios/paper-testbed.toml --emulate --time-scale 12: 9 hosts + placement on 127.0.0.1:7200-7208, 7300,"
echo "   every host-to-host connection through an emulated link (latency, jitter, bandwidth; ground link moves every 5 s)"
./target/release/databelt up scenarios/paper-testbed.toml --memory --emulate --time-scale 12 \
  --data-dir "$data/continuum" 2>"$data/up.log" &
up_pid=$!
for _ in $(seq 1 300); do
  grep -q '^ready' "$data/up.log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$data/up.log"; echo "databelt up exited" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready' "$data/up.log" || { cat "$data/up.log"; echo "databelt up did not get ready in 30 s" >&2; exit 1; }
cat "$data/up.log"
for policy in stateless random databelt; do
  echo "== databelt invoke examples/wildfire/wildfire.toml --policy $policy"
  ./target/release/databelt invoke examples/wildfire/wildfire.toml --policy "$policy" \
    --input '{"seed":42,"tiles":16,"side":64}' --cache-dir "$data/cache" \
    --ca "$data/continuum/tls/ca.pem" --token-file "$data/continuum/admin.token"
done
echo "== 5 runs per policy (end-to-end over the emulated links):"
for policy in stateless random databelt; do
  ./target/release/databelt invoke examples/wildfire/wildfire.toml --policy "$policy" --runs 5 \
    --input '{"seed":42,"tiles":16,"side":64}' --cache-dir "$data/cache" \
    --ca "$data/continuum/tls/ca.pem" --token-file "$data/continuum/admin.token" | tail -n 1
done
