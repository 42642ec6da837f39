#!/usr/bin/env bash
# A relay's memory and its other edges while one edge is frozen (SIGSTOP), under a
# steady publish flood: the relay tier's memory-bound claim, measured.
#
#   bench/relay-stall.sh                 # 100,000 msg/s of ~100 B, edge frozen 30 s
#   RATE=50000 SIZE=1000 STALL=10 bench/relay-stall.sh
#
# Starts (release builds, loopback): one relay, edges A and B, subscribers that hold
# the flood channels on both edges, a probe reader on B (a 20 msg/s channel; prints
# delivery lag each second), and `pushfleet-publish ticker` as the flood. Freezes A
# for STALL s while printing the relay's RSS and B's intake every second, resumes A,
# and prints what each edge counted lost upstream. Everything it started is stopped
# by PID at the end; every loop is bounded.
#
# Environment (defaults in brackets): RATE [100000] SIZE [100] STALL [30] WARM [5]
#   CHANNELS [10] EDGE_QUEUE [20000] (the relay's per-edge queue, messages)
#   RELAY_CPU [0] (core the relay is pinned to) SKIP_BUILD [0] OUT_DIR [target/bench]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:-100000}"
SIZE="${SIZE:-100}"
STALL="${STALL:-30}"
WARM="${WARM:-5}"
CHANNELS="${CHANNELS:-10}"
EDGE_QUEUE="${EDGE_QUEUE:-20000}"
RELAY_CPU="${RELAY_CPU:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench}"
mkdir -p "$OUT_DIR"
[ "$SKIP_BUILD" = 1 ] || cargo build --release -q -p pushfleet-server --bins
BIN="$ROOT/target/release"

# Ports below the ephemeral range, skipping any in use.
next=21000
alloc() {
    while ss -ltn "sport = :$next" | grep -q LISTEN; do next=$((next + 1)); done
    printf -v "$1" '%s' "$next"; next=$((next + 1))
}
for name in PUB EDG HTTP A AA B BA; do alloc "$name"; done

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

taskset -c "$RELAY_CPU" "$BIN/pushfleet-relay" --publish-bind "tcp://127.0.0.1:$PUB" \
    --edge-bind "tcp://127.0.0.1:$EDG" --http-listen "127.0.0.1:$HTTP" \
    --edge-queue "$EDGE_QUEUE" >"$OUT_DIR/stall-relay.log" 2>&1 &
RELAY=$!; PIDS+=("$RELAY")
for pair in "$A:$AA" "$B:$BA"; do
    "$BIN/pushfleet-server" --listen "127.0.0.1:${pair%%:*}" --admin-listen "127.0.0.1:${pair##*:}" \
        --zmq-connect "tcp://127.0.0.1:$EDG" --workers 1 >"$OUT_DIR/stall-edge-${pair%%:*}.log" 2>&1 &
    PIDS+=("$!")
done
EDGE_A=${PIDS[1]}
for i in $(seq 1 100); do
    curl -sf "127.0.0.1:$HTTP/healthz" >/dev/null && curl -sf "127.0.0.1:$A/healthz" >/dev/null \
        && curl -sf "127.0.0.1:$B/healthz" >/dev/null && break
    sleep 0.1
done

FLOOD=$(seq -s, -f "flood-%g" 0 $((CHANNELS - 1)))
# Long enough for the sampling overhead and the resumed edge to catch up.
TOTAL=$((WARM + STALL * 2 + 60))
for edge in "$A" "$B"; do
    python3 bench/relay_stall_client.py --url "ws://127.0.0.1:$edge/ws" --channels "$FLOOD,probe" \
        --hold --seconds "$TOTAL" >/dev/null &
    PIDS+=("$!")
done
python3 bench/relay_stall_client.py --url "ws://127.0.0.1:$B/ws" --channels probe \
    --seconds "$TOTAL" >"$OUT_DIR/stall-probe.jsonl" &
PIDS+=("$!")
for i in $(seq 1 100); do
    [ "$(curl -s "127.0.0.1:$HTTP/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["channels"])')" = $((CHANNELS + 1)) ] && break
    sleep 0.1
done

"$BIN/pushfleet-publish" --relay "tcp://127.0.0.1:$PUB" ticker --channels "$FLOOD" --rate "$RATE" \
    --size "$SIZE" --duration "$((WARM + STALL * 2 + 40))s" >"$OUT_DIR/stall-flood.log" 2>&1 &
PIDS+=("$!")
"$BIN/pushfleet-publish" --relay "tcp://127.0.0.1:$PUB" ticker --channels probe --rate 20 \
    --duration "$((WARM + STALL * 2 + 40))s" >/dev/null 2>&1 &
PIDS+=("$!")

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
stat() { curl -s "127.0.0.1:$1/stats" | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)"; }
sleep "$WARM"
RSS0=$(rss "$RELAY")
LOST_B0=$(stat "$BA" 's["upstream"]["lost"]')
IN_B0=$(stat "$BA" 's["msgs_in"]')
echo "flood: $RATE msg/s of ~$SIZE B over $CHANNELS channels; relay per-edge queue $EDGE_QUEUE"
echo "relay RSS before the freeze: $((RSS0 / 1024)) MiB"
kill -STOP "$EDGE_A"
MAX=$RSS0
prev_in=$IN_B0
prev_t=$(date +%s%N)
START_T=$prev_t
for i in $(seq 1 "$STALL"); do
    sleep 1
    r=$(rss "$RELAY"); [ "$r" -gt "$MAX" ] && MAX=$r
    in_b=$(stat "$BA" 's["msgs_in"]')
    now_t=$(date +%s%N)
    printf 'A frozen %5.1f s: relay RSS %4d MiB; B receiving %6d msg/s\n' \
        "$(echo "($now_t - $START_T) / 1000000000" | bc -l)" $((r / 1024)) \
        $(( (in_b - prev_in) * 1000000000 / (now_t - prev_t) ))
    prev_in=$in_b; prev_t=$now_t
done
LOST_B=$(stat "$BA" 's["upstream"]["lost"]')
kill -CONT "$EDGE_A"
# The resumed edge reads its backlog, then counts the gap at the next message
# (which can take a few seconds to flow again after a long freeze).
CONT_T=$(date +%s%N)
for i in $(seq 1 300); do
    [ "$(stat "$AA" 's["upstream"]["lost"]')" != 0 ] && break
    sleep 0.1
done
echo "edge A flowing again $(( ($(date +%s%N) - CONT_T) / 1000000 )) ms after SIGCONT"
echo "relay RSS: before $((RSS0 / 1024)) MiB, max during the freeze $((MAX / 1024)) MiB (+$(((MAX - RSS0) / 1024)) MiB)"
echo "edge B lost upstream during the freeze: $((LOST_B - LOST_B0))"
echo "edge A counted lost upstream (dropped at the relay while frozen): $(stat "$AA" 's["upstream"]["lost"]')"
echo "edge A: $(stat "$AA" '{k: s[k] for k in ("msgs_in", "upstream", "drops", "zmq_peers_connected")}')"
python3 - "$OUT_DIR/stall-probe.jsonl" "$STALL" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"t"')]
lags = [r["max_lag_ms"] for r in rows if r["count"]]
print(f"probe on B: {len(rows)} s sampled, worst per-second max lag {max(lags) if lags else 'n/a'} ms")
PY
echo "relay: $(curl -s "127.0.0.1:$HTTP/stats")"
grep -h "published" "$OUT_DIR/stall-flood.log" | tail -1 || true
