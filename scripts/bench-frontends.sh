#!/usr/bin/env bash
# Idle memory and fan-out per front end (native WebSocket, Pusher, SSE) and the cost of
# tracing, on one node pinned to CPU 0 with the load generator on CPU 1 (release builds).
# Prints one line per run; the JSON results land in $OUT (default ./bench-results).
#
#   cargo build --release -p pushwire -p pushwire-loadtest
#   scripts/bench-frontends.sh                 # every run (about 5 minutes)
#   RUNS="idle-pusher fanout-sse" scripts/bench-frontends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release}"
OUT="${OUT:-bench-results}"
IDLE="${IDLE:-10000}"
SUBS="${SUBS:-5000}"
RATE="${RATE:-10}"
SECS="${SECS:-10}"
RUNS="${RUNS:-idle-native idle-pusher idle-sse fanout-native fanout-pusher fanout-sse trace-off trace-1pct trace-100pct}"
PORT=18471
KEY=bench-api-key-0123456789
APP="4242:bench-app-key:bench-app-secret-0123456789"
mkdir -p "$OUT"

collector_pid=""
node_pid=""
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
  [ -n "$collector_pid" ] && kill "$collector_pid" 2>/dev/null || true
}
trap cleanup EXIT

# An OTLP/HTTP sink that answers 200 to every export (traces are counted, not stored).
start_collector() {
  python3 - "$1" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  collector_pid=$!
}

start_node() { # $1: extra TOML
  cat > "$OUT/node.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
worker_threads = 1
[api]
keys = ["$KEY"]
[[pusher.apps]]
id = "4242"
key = "bench-app-key"
secret = "bench-app-secret-0123456789"
$1
TOML
  RUST_LOG=warn taskset -c 0 "$BIN/pushwire" serve --config "$OUT/node.toml" > "$OUT/node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node did not start" >&2; cat "$OUT/node.log" >&2; exit 1
}

stop_node() { kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""; }

lt() { taskset -c 1 "$BIN/pushwire-loadtest" "$@" --url "ws://127.0.0.1:$PORT/ws" --server-pid "$node_pid" --no-bars; }

encoding_args() {
  case "$1" in
    native) echo "--encoding json" ;;
    pusher) echo "--encoding pusher --pusher-app $APP" ;;
    sse) echo "--encoding sse" ;;
  esac
}

summary() { # $1 run, $2 json
  python3 - "$1" "$2" <<'PY'
import json, sys
run, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
s = r["servers"][0]
line = f"{run:14} rss/conn {s.get('rss_per_connection_bytes', 0)/1024:.2f} KiB"
d = r.get("delivery")
if d and d.get("delivered"):
    cpu = s["cpu"]["cpu_secs"]
    lat = d["latency"]
    line += (f"  delivered {d['delivered']}/{d['expected']} lost {d['lost']}"
             f"  p50 {lat['p50_us']/1000:.2f} ms p99 {lat['p99_us']/1000:.2f} ms"
             f"  cpu/delivery {cpu/d['delivered']*1e6:.2f} us")
print(line + f"  [{r['verdict']['passed'] and 'PASS' or 'FAIL'}]")
PY
}

for run in $RUNS; do
  case "$run" in
    idle-*)
      start_node ""
      # shellcheck disable=SC2046
      lt idle --connections "$IDLE" --hold-secs 5 $(encoding_args "${run#idle-}") --out "$OUT/$run.json" > "$OUT/$run.txt"
      stop_node ;;
    fanout-*)
      start_node ""
      # shellcheck disable=SC2046
      lt fanout --subscribers "$SUBS" --rate "$RATE" --duration-secs "$SECS" --api-key "$KEY" \
        $(encoding_args "${run#fanout-}") --out "$OUT/$run.json" > "$OUT/$run.txt"
      stop_node ;;
    trace-*)
      case "$run" in
        trace-off) tracing="" ;;
        trace-1pct) tracing="enabled = true\nsample_ratio = 0.01\ndelivery_sample_ratio = 0.01" ;;
        trace-100pct) tracing="enabled = true\nsample_ratio = 1.0\ndelivery_sample_ratio = 1.0" ;;
      esac
      [ -z "$collector_pid" ] && start_collector $((PORT + 1))
      start_node "$(printf "[tracing]\nendpoint = \"http://127.0.0.1:$((PORT + 1))\"\n$tracing")"
      lt fanout --subscribers "$SUBS" --rate "$RATE" --duration-secs "$SECS" --api-key "$KEY" \
        --encoding json --out "$OUT/$run.json" > "$OUT/$run.txt"
      stop_node ;;
  esac
  summary "$run" "$OUT/$run.json"
done
