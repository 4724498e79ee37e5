#!/usr/bin/env bash
# The hot-path workloads of issue #14 on one node pinned to CPU 0, the load generator
# (pushwire-loadtest, release build) pinned to CPU 1, 100-byte payloads published through
# POST /api/publish. Prints one summary table at the end (markdown); the JSON results of
# every run land in $OUT/<label>/<run>[-<n>].json.
#
#   cargo build --release -p pushwire -p pushwire-loadtest
#   scripts/bench-hotpath.sh                                   # target/release/pushwire
#   # an older build to compare with, e.g. main before a change:
#   git worktree add ../pw-before <commit> && (cd ../pw-before && cargo build --release) \
#     && mkdir -p bench-bin && cp ../pw-before/target/release/pushwire bench-bin/pushwire-before
#   BIN=bench-bin/pushwire-before OUT=bench-before scripts/bench-hotpath.sh
#   BINS="before=bench-bin/pushwire-before after=target/release/pushwire" REPEAT=2 \
#     scripts/bench-hotpath.sh     # both binaries, runs interleaved, each run twice
#   RUNS="idle channels" IDLE=1000 CHANNELS=500 SECS=3 scripts/bench-hotpath.sh  # smoke
#   scripts/bench-hotpath.sh summary bench-hotpath             # the table of earlier runs
#   SERVER_TOML="api_thread = false" OUT=bench-no-api-thread scripts/bench-hotpath.sh
#   CLIENT_TOML="write_delay_ms = 5" OUT=bench-write-delay scripts/bench-hotpath.sh
#
# Runs (RUNS, default all, in this order):
#   idle       IDLE (10,000) subscribed connections held 5 s: server RSS per connection and
#              server CPU per connect + subscribe (CPU over the ramp / connections).
#   channels   CHANNELS (5,000) connections on as many channels, CHANNEL_RATE (2,000)
#              publications/s to random channels: delivery p50/p99, publish HTTP p99,
#              server CPU per publication (publish + drain phase / publications).
#   fanout10   FANOUT (5,000) subscribers on one channel, 10 publications/s: delivery p99,
#   fanout20   20/s, and server CPU per delivery. PROBE (20) publications/s go beside
#   overload   to a channel nobody subscribes to: their HTTP p99 shows whether the
#              fan-out delays an unrelated publish. overload offers 500/s.
set -euo pipefail
cd "$(dirname "$0")/.."

summarize() { # $1: OUT directory (one subdirectory per label)
  python3 - "$1" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "*", "*.json"))):
    label = os.path.basename(os.path.dirname(path))
    run = os.path.basename(path)[:-5]
    try:
        r = json.load(open(path))
    except (OSError, ValueError):
        continue
    s = (r.get("servers") or [{}])[0]
    c = r["connections"]
    cell = {"label": label, "run": run, "conns": f"{c['ready']}/{c['target']}"}
    if s.get("rss_per_connection_bytes") is not None and r["scenario"] == "idle":
        cell["rss"] = f"{s['rss_per_connection_bytes'] / 1024:.2f} KiB"
    if s.get("cpu_per_connect_us") is not None and r["scenario"] == "idle":
        cell["connect"] = f"{s['cpu_per_connect_us']:.1f} us"
    d = r.get("delivery")
    if d:
        cpu = (s.get("cpu") or {}).get("cpu_secs")
        lat = d["latency"]
        cell["delivered"] = (f"{d['delivered']}/{d['expected']}"
                             f" ({d['lost']}/{d['duplicates']}/{d['reordered']})")
        cell["rate"] = f"{d['publish_rate_per_sec']:.0f}/s"
        cell["p50"] = f"{lat['p50_us'] / 1000:.2f} ms"
        cell["p99"] = f"{lat['p99_us'] / 1000:.2f} ms"
        cell["http"] = f"{d['publish_http_latency']['p99_us'] / 1000:.2f} ms"
        if d.get("probe"):
            cell["probe"] = f"{d['probe']['publish_http_latency']['p99_us'] / 1000:.2f} ms"
        if cpu is not None and r["scenario"] == "channels" and d["publish_ok"]:
            cell["cpu_pub"] = f"{cpu / d['publish_ok'] * 1e6:.1f} us"
        if cpu is not None and r["scenario"] == "fanout" and d["delivered"]:
            cell["cpu_del"] = f"{cpu / d['delivered'] * 1e6:.2f} us"
    m = r.get("machine")
    if m:
        ours = sum((x.get("cpu") or {}).get("cores", 0) for x in r.get("servers", []))
        ours += ((r.get("loadtest") or {}).get("cpu") or {}).get("cores", 0)
        cell["other"] = f"{max(0.0, m['busy_cores'] - m['softirq_cores'] - ours):.2f}"
    cell["verdict"] = "PASS" if r["verdict"]["passed"] else "FAIL"
    rows.append(cell)
order = ["idle", "channels", "fanout10", "fanout20", "overload"]
def key(row):
    base, _, n = row["run"].partition("-")
    return (order.index(base) if base in order else len(order), base, n, row["label"])
rows.sort(key=key)
cols = [("label", "binary"), ("run", "run"), ("conns", "ready"),
        ("rss", "RSS/conn"), ("connect", "CPU/connect"), ("rate", "published"),
        ("delivered", "delivered (lost/dup/reord)"), ("p50", "p50"), ("p99", "p99"),
        ("http", "publish HTTP p99"), ("probe", "probe HTTP p99"),
        ("cpu_pub", "CPU/publication"), ("cpu_del", "CPU/delivery"),
        ("other", "other cores"), ("verdict", "verdict")]
cols = [(k, h) for k, h in cols if any(k in row for row in rows)]
print("| " + " | ".join(h for _, h in cols) + " |")
print("|" + "---|" * len(cols))
for row in rows:
    print("| " + " | ".join(row.get(k, "") for k, _ in cols) + " |")
PY
}

if [ "${1:-}" = "summary" ]; then
  summarize "${2:-bench-hotpath}"
  exit 0
fi

BIN="${BIN:-target/release/pushwire}"
BINS="${BINS:-$(basename "$(dirname "$BIN")")=$BIN}"
LOADTEST="${LOADTEST:-target/release/pushwire-loadtest}"
OUT="${OUT:-bench-hotpath}"
RUNS="${RUNS:-idle channels fanout10 fanout20 overload}"
REPEAT="${REPEAT:-1}"
IDLE="${IDLE:-10000}"
CHANNELS="${CHANNELS:-5000}"
CHANNEL_RATE="${CHANNEL_RATE:-2000}"
FANOUT="${FANOUT:-5000}"
PROBE="${PROBE:-20}"
SECS="${SECS:-10}"
PORT="${PORT:-18481}"
LOG="${LOG:-}" # RUST_LOG for the node; empty: its default level (info), as users run it
SERVER_TOML="${SERVER_TOML:-}" # extra [server] keys, e.g. SERVER_TOML="api_thread = false"
CLIENT_TOML="${CLIENT_TOML:-}" # extra [client] keys, e.g. CLIENT_TOML="write_delay_ms = 5"
KEY=bench-api-key-0123456789

for entry in $BINS; do
  bin="${entry#*=}"
  [ -x "$bin" ] || { echo "no server binary at $bin" >&2; exit 1; }
done
[ -x "$LOADTEST" ] || { echo "no load generator at $LOADTEST (cargo build --release -p pushwire-loadtest)" >&2; exit 1; }
mkdir -p "$OUT"

node_pid=""
cleanup() { [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true; }
trap cleanup EXIT

start_node() { # $1: label, $2: server binary
  cat > "$OUT/$1/node.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
worker_threads = 1
$SERVER_TOML
[client]
$CLIENT_TOML
[api]
keys = ["$KEY"]
TOML
  # The node logs at its default level unless LOG says otherwise (e.g. LOG=warn).
  env -u RUST_LOG ${LOG:+RUST_LOG=$LOG} taskset -c 0 "$2" serve --config "$OUT/$1/node.toml" > "$OUT/$1/node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node did not start" >&2; cat "$OUT/$1/node.log" >&2; exit 1
}

stop_node() { kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""; }

lt() {
  taskset -c 1 "$LOADTEST" "$@" --url "ws://127.0.0.1:$PORT/ws" --api-key "$KEY" \
    --server-pid "$node_pid" --no-bars
}

lt_idle() {
  taskset -c 1 "$LOADTEST" idle "$@" --url "ws://127.0.0.1:$PORT/ws" \
    --server-pid "$node_pid" --no-bars
}

{
  echo "# $(date -u +%FT%TZ) on $(hostname), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  for entry in $BINS; do
    echo "# ${entry%%=*}: ${entry#*=} sha256 $(sha256sum "${entry#*=}" | cut -c1-16)"
  done
  echo "# loadtest: $LOADTEST sha256 $(sha256sum "$LOADTEST" | cut -c1-16)"
  if [ -n "$SERVER_TOML" ]; then echo "# [server] extra: $SERVER_TOML"; fi
  if [ -n "$CLIENT_TOML" ]; then echo "# [client] extra: $CLIENT_TOML"; fi
  echo "# node log level: ${LOG:-default}"
} | tee "$OUT/header.txt"

for run in $RUNS; do
  for n in $(seq "$REPEAT"); do
    for entry in $BINS; do
      label="${entry%%=*}" bin="${entry#*=}"
      mkdir -p "$OUT/$label"
      name="$run"
      [ "$REPEAT" -gt 1 ] && name="$run-$n"
      json="$OUT/$label/$name.json"
      echo "== $label $name" >&2
      start_node "$label" "$bin"
      rc=0
      case "$run" in
        idle)
          lt_idle --connections "$IDLE" --hold-secs 5 --out "$json" > "$OUT/$label/$name.txt" || rc=$? ;;
        channels)
          lt channels --subscribers "$CHANNELS" --channels "$CHANNELS" --rate "$CHANNEL_RATE" \
            --payload-bytes 100 --duration-secs "$SECS" --require-zero-loss \
            --out "$json" > "$OUT/$label/$name.txt" || rc=$? ;;
        fanout10 | fanout20 | overload)
          case "$run" in fanout10) rate=10 ;; fanout20) rate=20 ;; overload) rate=500 ;; esac
          lt fanout --subscribers "$FANOUT" --rate "$rate" --payload-bytes 100 \
            --duration-secs "$SECS" --probe-rate "$PROBE" --require-zero-loss \
            --out "$json" > "$OUT/$label/$name.txt" || rc=$? ;;
        *) echo "unknown run $run" >&2; exit 1 ;;
      esac
      stop_node
      [ "$rc" -eq 0 ] || echo "   $label $name: load generator exit $rc (see $OUT/$label/$name.txt)" >&2
    done
  done
done

echo
cat "$OUT/header.txt"
summarize "$OUT"
