#!/usr/bin/env bash
# The main job, locally: a relay, an edge subscribed to it, the demo ticker
# (`pushfleet-publish ticker`, publishing through the relay), and a terminal client
# printing what arrives. Ctrl-C stops everything this script started.
#   PORT=8080 ADMIN_PORT=9090 RELAY_PORT=5560 RELAY_EDGE_PORT=5561 RELAY_HTTP_PORT=8070 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PORT=${PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9090}
RELAY_PORT=${RELAY_PORT:-5560}
RELAY_EDGE_PORT=${RELAY_EDGE_PORT:-5561}
RELAY_HTTP_PORT=${RELAY_HTTP_PORT:-8070}
RUN_DIR=${RUN_DIR:-target/demo}
mkdir -p "$RUN_DIR"

echo "demo: building (release)"
cargo build --release -p pushfleet-server

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap stop INT TERM EXIT

target/release/pushfleet-relay --publish-bind "tcp://127.0.0.1:$RELAY_PORT" \
  --edge-bind "tcp://127.0.0.1:$RELAY_EDGE_PORT" --http-listen "127.0.0.1:$RELAY_HTTP_PORT" \
  >"$RUN_DIR/relay.log" 2>&1 &
pids+=($!)
target/release/pushfleet-server --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --zmq-connect "tcp://127.0.0.1:$RELAY_EDGE_PORT" --drain-spread 1s --drain-timeout 3s >"$RUN_DIR/edge.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && curl -fs "http://127.0.0.1:$RELAY_HTTP_PORT/healthz" >/dev/null && break
  sleep 0.1
done
target/release/pushfleet-publish --relay "tcp://127.0.0.1:$RELAY_PORT" ticker \
  --channels ticker_INR,ticker_USD,ticker_EUR --rate 6 >"$RUN_DIR/ticker.log" 2>&1 &
pids+=($!)

cat <<MSG
demo: edge      ws://127.0.0.1:$PORT/ws   (health: http://127.0.0.1:$PORT/healthz, stats: http://127.0.0.1:$PORT/stats)
demo: admin     http://127.0.0.1:$ADMIN_PORT  (POST /drain)
demo: relay     tcp://127.0.0.1:$RELAY_PORT (ZeroMQ publish), http://127.0.0.1:$RELAY_HTTP_PORT (POST /publish, GET /stats)
demo: publisher pushfleet-publish ticker (channels ticker_INR, ticker_USD, ticker_EUR, 6 msg/s)
demo: try       curl -XPOST 127.0.0.1:$RELAY_HTTP_PORT/publish -d '{"channel":"ticker_INR","event":"news","data":{"text":"hello"}}'
demo: logs in $RUN_DIR/; press Ctrl-C to stop
MSG
python3 clients/python/watch.py --url "ws://127.0.0.1:$PORT/ws" ticker_INR ticker_USD &
pids+=($!)
wait "${pids[-1]}" || true
