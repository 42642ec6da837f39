#!/usr/bin/env bash
# Measures what a zmq.rs PUB socket (the load tool's publisher) does with its memory
# while its only subscriber, an edge, is frozen with SIGSTOP: the question the relay
# tier must answer (see docs/BENCHMARKS.md, "ZeroMQ PUB and a stalled subscriber").
#
#   RATE=100000 SIZE=100 STALL=20 bench/pub-stall.sh
#
# Bounded: publishes for STALL+5 s, freezes the edge STALL s, then resumes and stops
# both processes it started (by PID). Loopback only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:-100000}"
SIZE="${SIZE:-100}"
STALL="${STALL:-20}"
SKIP_BUILD="${SKIP_BUILD:-0}"
[ "$SKIP_BUILD" = 1 ] || cargo build --release -p pushfleet-server -p pushfleet-bench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ZP=$(free_port); WP=$(free_port); AP=$(free_port)
target/release/pushfleet-server --listen "127.0.0.1:$WP" --admin-listen "127.0.0.1:$AP" \
    --zmq-connect "tcp://127.0.0.1:$ZP" --workers 1 >"${TMPDIR:-/tmp}/pub-stall-edge.log" 2>&1 &
EDGE=$!
OUT="${TMPDIR:-/tmp}/pub-stall-bench.log"
target/release/pushfleet-bench fanout --url "ws://127.0.0.1:$WP/ws" --zmq-bind "tcp://127.0.0.1:$ZP" \
    --connections 10 --channels 1 --rate "$RATE" --size "$SIZE" --duration $((STALL + 5)) \
    --server-pid "$EDGE" >"$OUT" 2>&1 &
BENCH=$!
cleanup() { kill -CONT "$EDGE" 2>/dev/null || true; kill "$EDGE" "$BENCH" 2>/dev/null || true; }
trap cleanup EXIT
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo gone; }
sleep 4
echo "publishing $RATE msg/s of $SIZE B; publisher RSS before the stall: $(rss "$BENCH") kB"
kill -STOP "$EDGE"
for i in $(seq 1 "$STALL"); do
    sleep 1
    echo "edge stopped ${i} s: publisher RSS $(rss "$BENCH") kB"
done
kill -CONT "$EDGE"
wait "$BENCH" || true
grep -E "publishes sent|received deliveries|loss" "$OUT" || true
