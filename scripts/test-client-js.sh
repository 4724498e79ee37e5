#!/usr/bin/env bash
# Builds and tests client-js (the TypeScript client) against the real server.
#
# On a fresh Debian machine it installs what is missing (Node, Chromium,
# redis-server), runs `npm ci`, builds the package (tsc + esbuild bundle) and
# the server binary, then runs every node:test suite: unit, integration (the
# server binary, started by the tests) and browser (the demo page in Debian's
# Chromium).
#
#   scripts/test-client-js.sh                 # everything
#   PUSHWIRE_BIN=/path/to/pushwire scripts/test-client-js.sh   # use that binary, skip cargo
#
# The screenshot of the browser test lands in client-js/test-results/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
client="$repo/client-js"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# Node 20+ (playwright-core and node:test's features need it).
if ! command -v node >/dev/null 2>&1; then
  echo "==> installing Node.js"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "error: Node $(node --version) found; client-js tests need Node 20 or newer" >&2
  exit 1
fi

# Chromium from Debian, for the browser test (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium"
  apt_install chromium
fi

# redis-server, for the test of a node restart behind the Redis broker.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server"
  apt_install redis-server
fi

# The server binary.
if [ -z "${PUSHWIRE_BIN:-}" ]; then
  export PUSHWIRE_BIN="$repo/target/release/pushwire"
  echo "==> building the server (cargo build --release -p pushwire)"
  (cd "$repo" && cargo build --release -p pushwire)
fi
if [ ! -x "$PUSHWIRE_BIN" ]; then
  echo "error: no server binary at $PUSHWIRE_BIN" >&2
  exit 1
fi

cd "$client"
echo "==> npm ci"
npm ci --no-audit --no-fund
echo "==> building client-js (tsc + esbuild)"
npm run build
echo "==> running the test suites (server: $PUSHWIRE_BIN)"
npm run test:all
