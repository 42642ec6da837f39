#!/usr/bin/env bash
# Measures the relay hop: latency one pushfleet-relay adds between a publisher
# and an edge, and how many messages per second it forwards.
#
#   bench/relay.sh [EXTRA pushfleet-bench relay-hop FLAGS...]
#
# Starts target/release/pushfleet-relay on free loopback ports, pinned to core
# $RELAY_CPU, waits for its /stats, runs `pushfleet-bench relay-hop` pinned to
# core $BENCH_CPU, and stops the relay (SIGTERM, then SIGKILL after 5 s).
# relay-hop runs, in order (MODE=both):
#   1. latency, direct: publisher PUSH -> the tool's own PULL, at $RATE msg/s;
#   2. latency, relay:  publisher PUSH -> relay -> SUB subscribed to every channel,
#      same rate and size; the report prints what the relay adds per percentile;
#   3. throughput: $PUBLISHERS unpaced publishers through the relay; relay
#      received/forwarded msg/s from its /stats, sink msg/s, drops, CPU per thread.
# Each phase publishes for $WARMUP + $DURATION seconds. Every command line is
# printed before it runs; the report and the relay's log are kept in $OUT_DIR
# (relay-hop.out, relay-hop.json with JSON=1, relay-hop-relay.log).
# Extra arguments go to relay-hop as they are (e.g. --grace 5).
#
# Environment overrides (defaults in brackets):
#   RATE [100000]  DURATION [10]  WARMUP [1]  CHANNELS [100]  SIZE [100]
#   MODE [both] (latency | throughput | both)  PUBLISHERS [1]
#   EDGE_QUEUE [""] (relay --edge-queue; empty: the relay's default)
#   RELAY_ARGS [""] (extra relay flags)  RELAY_BIN [target/release/pushfleet-relay]
#   RELAY_CPU [0]  BENCH_CPU [1]
#   JSON [0] (1: also write relay-hop.json, one JSON object)
#   OUT_DIR [target/bench]  SKIP_BUILD [0]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RATE="${RATE:-100000}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-1}"
CHANNELS="${CHANNELS:-100}"
SIZE="${SIZE:-100}"
MODE="${MODE:-both}"
PUBLISHERS="${PUBLISHERS:-1}"
EDGE_QUEUE="${EDGE_QUEUE:-}"
RELAY_ARGS="${RELAY_ARGS:-}"
RELAY_CPU="${RELAY_CPU:-0}"
BENCH_CPU="${BENCH_CPU:-1}"
JSON="${JSON:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench}"
SKIP_BUILD="${SKIP_BUILD:-0}"

RELAY_BIN="${RELAY_BIN:-$ROOT/target/release/pushfleet-relay}"
BENCH_BIN="$ROOT/target/release/pushfleet-bench"

log() { echo "relay.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
    -h | --help | help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
        exit 2
        ;;
esac
case "$MODE" in
    latency | throughput | both) ;;
    *) log "MODE must be latency, throughput or both, not '$MODE'"; exit 2 ;;
esac

# Prints a command line the way it will run.
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

if [ "$SKIP_BUILD" != 1 ]; then
    build=(cargo build --release -p pushfleet-server -p pushfleet-bench)
    show "${build[@]}"
    "${build[@]}"
fi
[ -x "$RELAY_BIN" ] || { log "missing $RELAY_BIN"; exit 1; }
[ -x "$BENCH_BIN" ] || { log "missing $BENCH_BIN"; exit 1; }

if [ "$(nproc)" -lt 2 ] || ! taskset -c "$RELAY_CPU,$BENCH_CPU" true 2>/dev/null; then
    log "cannot pin to cores $RELAY_CPU and $BENCH_CPU (nproc $(nproc)); set RELAY_CPU/BENCH_CPU"
    exit 1
fi
command -v curl >/dev/null || { log "curl is needed to wait for the relay"; exit 1; }

mkdir -p "$OUT_DIR"

RELAY_PID=""
stop_relay() {
    local pid="$RELAY_PID"
    [ -n "$pid" ] || return 0
    RELAY_PID=""
    stop_pid "$pid" relay
}
trap stop_relay EXIT
trap 'exit 130' INT TERM

pick_port PPORT
pick_port EPORT
pick_port HPORT
RELAY_LOG="$OUT_DIR/relay-hop-relay.log"
# RELAY_ARGS is split on purpose (extra flags).
# shellcheck disable=SC2206
relay_cmd=(taskset -c "$RELAY_CPU" "$RELAY_BIN"
    --publish-bind "tcp://127.0.0.1:$PPORT" --edge-bind "tcp://127.0.0.1:$EPORT"
    --http-listen "127.0.0.1:$HPORT" $RELAY_ARGS)
if [ -n "$EDGE_QUEUE" ]; then
    relay_cmd+=(--edge-queue "$EDGE_QUEUE")
fi

echo "=== relay-hop ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -r), $(nproc) cores, relay on core $RELAY_CPU, tool on core $BENCH_CPU) ==="
show "${relay_cmd[@]}"
# taskset execs the relay, so $! is the relay's PID.
"${relay_cmd[@]}" >"$RELAY_LOG" 2>&1 &
RELAY_PID=$!
up=0
for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HPORT/stats" 2>/dev/null; then
        up=1
        break
    fi
    if ! kill -0 "$RELAY_PID" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ "$up" != 1 ]; then
    log "relay did not answer /stats within 30 s or exited; last lines of $RELAY_LOG:"
    tail -n 30 "$RELAY_LOG" >&2 || true
    exit 1
fi
log "relay up (pid $RELAY_PID, publish $PPORT, edges $EPORT, http $HPORT, log $RELAY_LOG)"

bench_cmd=(taskset -c "$BENCH_CPU" "$BENCH_BIN" relay-hop
    --relay-publish "tcp://127.0.0.1:$PPORT" --relay-edges "tcp://127.0.0.1:$EPORT"
    --relay-http "127.0.0.1:$HPORT" --relay-pid "$RELAY_PID"
    --mode "$MODE" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP"
    --channels "$CHANNELS" --size "$SIZE" --publishers "$PUBLISHERS" "$@")
if [ "$JSON" = 1 ]; then
    bench_cmd+=(--json)
    show "${bench_cmd[@]}"
    # With --json the text report goes to stderr and the object to stdout.
    "${bench_cmd[@]}" 2> >(tee "$OUT_DIR/relay-hop.out" >&2) | tee "$OUT_DIR/relay-hop.json"
else
    show "${bench_cmd[@]}"
    "${bench_cmd[@]}" | tee "$OUT_DIR/relay-hop.out"
fi

if ! kill -0 "$RELAY_PID" 2>/dev/null; then
    log "the relay exited during the run; last lines of $RELAY_LOG:"
    tail -n 30 "$RELAY_LOG" >&2 || true
    exit 1
fi
stop_relay
log "done; outputs in $OUT_DIR"
