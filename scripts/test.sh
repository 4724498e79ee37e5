#!/usr/bin/env bash
# Runs every test suite of pushwire: format and clippy checks, Rust unit and integration
# tests (real servers, real redis-server, real Prometheus), the loadtest smoke run, and the
# client-js suites (Node and headless Chromium). Installs what a fresh Debian machine
# lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> independent test clients (npm and PyPI packages in tests/clients)"
scripts/install-test-clients.sh

echo "==> cargo fmt --check, cargo clippy (warnings are errors)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo test (one debug build; dependencies are optimised, see Cargo.toml)"
# The loadtest smoke test drives the pushwire-loadtest executable, which cargo test
# does not produce on its own.
cargo build -p pushwire-loadtest
scripts/cargo-test-parallel.sh

if [ -x scripts/test-client-js.sh ]; then
  echo "==> client-js"
  PUSHWIRE_BIN="$PWD/target/debug/pushwire" scripts/test-client-js.sh
fi
