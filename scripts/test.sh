#!/usr/bin/env bash
# Sets up and runs every test: formatting and lints first (CI refuses drift),
# then unit, property, macro (trybuild) and integration tests that build real
# components and start real hosts on 127.0.0.1. The guest components are
# built for wasm32-wasip2 by the tests themselves; `cargo test` covers the
# workspace's default members (every crate but the guests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-cargo-component
export DATABELT_KUBERNETES_VALIDATE="$PWD/target/kubernetes-validate/bin/kubernetes-validate"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test "$@"
