#!/usr/bin/env bash
# Fuzz every decoder that takes bytes from the network or a user (issue 13
# §5): cargo-fuzz / libFuzzer, each target for SECONDS (default 600), JOBS
# targets at a time (default 1), then the corpus minimised back into
# fuzz/corpus/<target>/ (what the replay test in the normal suite runs).
#   bash scripts/fuzz.sh [SECONDS] [JOBS] [TARGET...]
# Logs: fuzz/logs/<target>.log (executions, coverage, any crash). A crash
# leaves its input in fuzz/artifacts/<target>/ and makes the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
jobs=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(peer_bodies step_protocol describe_schema schema_conversion host_config scenario_workflow)
fi
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Safe Rust: no sanitizer needed to find panics, aborts, overflows, hangs
# and memory blow-ups; -s none builds and runs much faster.
cargo +nightly fuzz build -s none -O
bin=fuzz/target/x86_64-unknown-linux-gnu/release
mkdir -p fuzz/logs
run() {
  local t=$1
  mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
  local status=0
  "$bin/$t" "fuzz/corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1 || status=$?
  # Minimise: keep only inputs that add coverage.
  local merged
  merged=$(mktemp -d)
  "$bin/$t" -merge=1 "$merged" "fuzz/corpus/$t" >/dev/null 2>&1 || true
  if [ -n "$(ls -A "$merged")" ]; then rm -rf "fuzz/corpus/$t"; mv "$merged" "fuzz/corpus/$t"; fi
  echo "$t: exit $status, $(grep -o 'stat::number_of_executed_units: [0-9]*' "fuzz/logs/$t.log" | awk '{print $2}') executions, $(ls "fuzz/corpus/$t" | wc -l) corpus inputs"
  return $status
}
failed=0
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit $failed
