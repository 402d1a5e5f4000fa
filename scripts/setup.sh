#!/usr/bin/env bash
# Installs what Databelt's build needs beyond rustup + cargo. Idempotent.
set -euo pipefail
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null
if [ "${1:-}" = "--with-cargo-component" ]; then
  if ! cargo component --version 2>/dev/null | grep -q '^cargo-component 0\.21'; then
    echo "setup: installing cargo-component 0.21 (one time, a few minutes)"
    cargo install --locked cargo-component --version '^0.21' >/dev/null
  fi
fi
