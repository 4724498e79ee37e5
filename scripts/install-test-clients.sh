#!/usr/bin/env bash
# Installs the independent clients the integration tests drive (tests/clients/):
# npm packages (pusher-js, laravel-echo, the `pusher` server SDK, eventsource,
# jsonwebtoken, playwright-core) and a Python venv (pusher, Pysher, PyJWT).
# Idempotent: does nothing when both are up to date with their lock/requirements files.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/clients" && pwd)"

if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
  echo "==> installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip
fi

stamp_npm="$dir/node_modules/.installed-lock"
if ! cmp -s "$dir/package-lock.json" "$stamp_npm"; then
  echo "==> npm ci in tests/clients"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$stamp_npm"
fi

stamp_py="$dir/.venv/.installed-requirements"
if ! cmp -s "$dir/requirements.txt" "$stamp_py"; then
  echo "==> python venv in tests/clients/.venv"
  python3 -m venv "$dir/.venv"
  "$dir/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$dir/requirements.txt"
  cp "$dir/requirements.txt" "$stamp_py"
fi
