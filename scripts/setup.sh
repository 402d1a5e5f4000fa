#!/usr/bin/env bash
# Installs what Databelt's build needs beyond rustup + cargo. Idempotent.
set -euo pipefail
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null
if [ "${1:-}" = "--with-cargo-component" ]; then
  if ! cargo component --version 2>/dev/null | grep -qE '^cargo-component(-component)? 0\.21'; then
    echo "setup: installing cargo-component 0.21 (one time, a few minutes)"
    cargo install --locked cargo-component --version '^0.21' >/dev/null
  fi
fi
# The Redis backend's tests start their own redis-server on loopback ports.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: installing redis-server (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
# The Kubernetes manifest test validates deploy/kubernetes against the
# Kubernetes OpenAPI schemas with PyPI's kubernetes-validate, kept in a
# virtualenv under target/ (DATABELT_KUBERNETES_VALIDATE points the test at it).
if [ "${1:-}" = "--with-cargo-component" ] || [ "${2:-}" = "--with-kubernetes-validate" ]; then
  venv="target/kubernetes-validate"
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
      echo "setup: installing python3-venv (Debian package)"
      if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
      $SUDO apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    echo "setup: installing kubernetes-validate (PyPI) into $venv"
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate >/dev/null
  fi
fi
