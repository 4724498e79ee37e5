#!/usr/bin/env bash
# Builds every Rust test target of the workspace once, then runs the test binaries
# side by side (PUSHWIRE_TEST_JOBS at a time, default 3). They can share the machine:
# every test binds port 0 and starts its own redis-server on a free port. Each binary's
# output is printed whole when it ends, with cargo's usual closing line; the script
# fails if any binary failed, after all of them ran.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${PUSHWIRE_TEST_JOBS:-3}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# "<package dir>\t<executable>" for every test target cargo built.
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics \
  | python3 -c '
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
        print(os.path.dirname(msg["manifest_path"]) + "\t" + msg["executable"])
' > "$logs/targets"

run_one() {
  local dir="$1" exe="$2" logs="$3"
  local name start status
  name="$(basename "$exe")"
  start=$(date +%s)
  if (cd "$dir" && "$exe") > "$logs/$name.log" 2>&1; then status=ok; else status=FAILED; fi
  {
    echo "---- $name ($status, $(( $(date +%s) - start )) s)"
    cat "$logs/$name.log"
  } > "$logs/$name.done"
  cat "$logs/$name.done"
  [ "$status" = ok ] || touch "$logs/$name.failed"
}
export -f run_one

# Longest-running binaries first, so they do not end up alone at the tail.
sort -t$'\t' -k2 "$logs/targets" \
  | awk -F'\t' '{ w = ($2 ~ /(cluster|loadtest_smoke|recovery|pusher|webhook|hostile)/) ? 0 : 1; print w "\t" $0 }' \
  | sort -s -n -k1,1 | cut -f2- \
  | tr '\t' '\n' | xargs -d '\n' -n 2 -P "$jobs" bash -c 'run_one "$0" "$1" '"$logs"

failed=$(find "$logs" -name '*.failed' | wc -l)
total=$(wc -l < "$logs/targets")
echo "==> $total test binaries, $failed failed"
[ "$failed" -eq 0 ]
