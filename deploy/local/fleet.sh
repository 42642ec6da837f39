#!/usr/bin/env bash
# The whole pushfleet fleet on one machine, with a live demo:
#   etcd, 2 relays, 3 edges (serving the demo page), herald, HAProxy (WebSocket
#   frontend + stats page), a Python pyzmq ticker publishing through the relays, and
#   the monitoring pipeline (StatsD -> carbon -> graphite-web) every part reports to.
# Installs what is missing (scripts/setup.sh), builds in release mode, prints the
# URLs to open, and on Ctrl-C (or SIGTERM) stops everything it started, by PID, in
# reverse order, then checks that every port it used is free again.
#
#   deploy/local/fleet.sh
#   EDGES=5 RELAYS=3 WS_PORT=9000 deploy/local/fleet.sh      # see "Settings" below
#
# Logs and PID files: $RUN_DIR (target/fleet). Details: deploy/local/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

# --- Settings (environment variables) -------------------------------------------
RELAYS=${RELAYS:-2}                       # relays (1..9)
EDGES=${EDGES:-3}                         # edges (1..16)
WS_PORT=${WS_PORT:-8080}                  # HAProxy: the demo page and ws://…/ws
HAPROXY_STATS_PORT=${HAPROXY_STATS_PORT:-8404}
HAPROXY_RUNTIME_PORT=${HAPROXY_RUNTIME_PORT:-9999}
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
RELAY_PORT=${RELAY_PORT:-5560}            # relay i: publish RELAY_PORT+10i, edges +1
RELAY_HTTP_PORT=${RELAY_HTTP_PORT:-8070}  # relay i: HTTP publish API RELAY_HTTP_PORT+i
EDGE_PORT=${EDGE_PORT:-8081}              # edge i: public EDGE_PORT+i
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-9091}  # edge i: admin EDGE_ADMIN_PORT+i
HERALD_AGENT_PORT=${HERALD_AGENT_PORT:-5555}
HERALD_HTTP_PORT=${HERALD_HTTP_PORT:-8090}
TICKER_RATE=${TICKER_RATE:-4}             # ticks per second per channel
TICKER_CHANNELS=${TICKER_CHANNELS:-ticker_INR,ticker_USD,ticker_EUR,ticker_JPY}
RUN_DIR=${RUN_DIR:-target/fleet}
PROFILE=${PROFILE:-release}               # release, or debug (what the tests built)
SKIP_SETUP=${SKIP_SETUP:-0}               # 1: do not run scripts/setup.sh
MONITORING=${MONITORING:-1}               # 0: no StatsD/Graphite pipeline, no --statsd
STATSD_PORT=${STATSD_PORT:-8125}          # UDP
STATSD_ADMIN_PORT=${STATSD_ADMIN_PORT:-8126}
CARBON_PORT=${CARBON_PORT:-2003}
CARBON_PICKLE_PORT=${CARBON_PICKLE_PORT:-2004}
CARBON_QUERY_PORT=${CARBON_QUERY_PORT:-7002}
GRAPHITE_PORT=${GRAPHITE_PORT:-8013}
# -----------------------------------------------------------------------------

say() { printf 'fleet: %s\n' "$*"; }
die() { printf 'fleet: %s\n' "$*" >&2; exit 1; }

[[ $RELAYS =~ ^[1-9]$ ]] || die "RELAYS must be 1..9, not '$RELAYS'"
[[ $EDGES =~ ^[0-9]+$ ]] && (( EDGES >= 1 && EDGES <= 16 )) || die "EDGES must be 1..16, not '$EDGES'"
[[ $PROFILE == release || $PROFILE == debug ]] || die "PROFILE must be release or debug"
[[ $MONITORING == 0 || $MONITORING == 1 ]] || die "MONITORING must be 0 or 1"

relay_publish() { echo $((RELAY_PORT + 10 * $1)); }
relay_edge() { echo $((RELAY_PORT + 10 * $1 + 1)); }
ports=("$WS_PORT" "$HAPROXY_STATS_PORT" "$HAPROXY_RUNTIME_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"
  "$HERALD_AGENT_PORT" "$HERALD_HTTP_PORT")
for ((i = 0; i < RELAYS; i++)); do
  ports+=("$(relay_publish "$i")" "$(relay_edge "$i")" $((RELAY_HTTP_PORT + i)))
done
for ((i = 0; i < EDGES; i++)); do ports+=($((EDGE_PORT + i)) $((EDGE_ADMIN_PORT + i))); done
if ((MONITORING)); then
  ports+=("$STATSD_ADMIN_PORT" "$CARBON_PORT" "$CARBON_PICKLE_PORT" "$CARBON_QUERY_PORT" "$GRAPHITE_PORT")
fi
dupes=$(printf '%s\n' "${ports[@]}" | sort | uniq -d | tr '\n' ' ')
[[ -z $dupes ]] || die "these ports are configured twice: $dupes(check the *_PORT settings)"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${ports[@]}"; do
  listening "$port" && die "port $port is already in use on 127.0.0.1: stop what holds it or choose other ports (settings at the top of $0)"
done

if [[ $SKIP_SETUP != 1 ]]; then scripts/setup.sh; fi
if [[ $PROFILE == release ]]; then
  say "building (release; the first build takes a few minutes)"
  cargo build --release -p pushfleet-server -p herald
fi
BIN=target/$PROFILE
for b in pushfleet-server pushfleet-relay herald; do
  [[ -x $BIN/$b ]] || die "$BIN/$b is missing: build it (cargo build $( [[ $PROFILE == release ]] && echo --release) --bins)"
done
ETCD=$(command -v etcd || true)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[[ -n $ETCD ]] || die "etcd is not installed (scripts/setup.sh installs it)"
[[ -x $HAPROXY ]] || die "haproxy is not installed (scripts/setup.sh installs it)"

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/pids"

names=()
pids=()
# start NAME COMMAND...: runs it in the background, output to $RUN_DIR/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  names+=("$name")
  pids+=($!)
  echo $! >"$RUN_DIR/pids/$name.pid"
}

# stop_all: TERM every part in reverse order (publisher, HAProxy, herald, edges,
# which drain, relays, etcd), KILL what ignores it for 10 s, then check the ports.
stopping=0
stop_all() {
  ((stopping)) && return 0
  stopping=1
  trap - INT TERM
  ((${#pids[@]})) || return 0
  say "stopping"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    local pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "${names[i]} (pid $pid) ignored SIGTERM for 10 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  local busy=()
  for port in "${ports[@]}"; do listening "$port" && busy+=("$port"); done
  if ((${#busy[@]})); then
    say "still listening after stop: ${busy[*]}"
    return 1
  fi
  say "stopped; every port is free again"
}
trap 'echo; stop_all; exit $?' INT TERM
trap 'rc=$?; stop_all || rc=1; exit $rc' EXIT

# wait_for NAME URL: polls until URL answers 2xx, or fails with NAME's log.
wait_for() {
  local name=$1 url=$2
  for _ in $(seq 150); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    local pid
    pid=$(cat "$RUN_DIR/pids/$name.pid")
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$RUN_DIR/$name.log" >&2
      die "$name exited during start-up (log: $RUN_DIR/$name.log)"
    fi
    sleep 0.1
  done
  tail -n 20 "$RUN_DIR/$name.log" >&2
  die "$name did not answer $url within 15 s (log: $RUN_DIR/$name.log)"
}

# Monitoring first (stopped last): every part reports to its StatsD.
statsd=()
if ((MONITORING)); then
  STATSD_PORT=$STATSD_PORT STATSD_ADMIN_PORT=$STATSD_ADMIN_PORT CARBON_PORT=$CARBON_PORT \
    CARBON_PICKLE_PORT=$CARBON_PICKLE_PORT CARBON_QUERY_PORT=$CARBON_QUERY_PORT \
    GRAPHITE_PORT=$GRAPHITE_PORT MONITORING_DIR="$RUN_DIR/monitoring" \
    start monitoring monitoring/pipeline.sh
  for _ in $(seq 900); do
    grep -q "monitoring: ready" "$RUN_DIR/monitoring.log" 2>/dev/null && break
    if ! kill -0 "$(cat "$RUN_DIR/pids/monitoring.pid")" 2>/dev/null; then
      tail -n 20 "$RUN_DIR/monitoring.log" >&2
      die "the monitoring pipeline exited during start-up (log: $RUN_DIR/monitoring.log; MONITORING=0 runs without it)"
    fi
    sleep 0.1
  done
  grep -q "monitoring: ready" "$RUN_DIR/monitoring.log" ||
    die "the monitoring pipeline was not ready within 90 s (log: $RUN_DIR/monitoring.log)"
  statsd=(--statsd "127.0.0.1:$STATSD_PORT")
fi

ETCD_URL=http://127.0.0.1:$ETCD_PORT
start etcd "$ETCD" --name pushfleet-local --data-dir "$RUN_DIR/etcd.data" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "pushfleet-local=http://127.0.0.1:$ETCD_PEER_PORT"
wait_for etcd "$ETCD_URL/health"

relay_endpoints=()
for ((i = 0; i < RELAYS; i++)); do
  start "relay-$((i + 1))" "$BIN/pushfleet-relay" --relay-id "relay-$((i + 1))" \
    --publish-bind "tcp://127.0.0.1:$(relay_publish "$i")" \
    --edge-bind "tcp://127.0.0.1:$(relay_edge "$i")" \
    --http-listen "127.0.0.1:$((RELAY_HTTP_PORT + i))" \
    --advertise-host 127.0.0.1 --etcd "$ETCD_URL" "${statsd[@]}"
  relay_endpoints+=("tcp://127.0.0.1:$(relay_publish "$i")")
done
for ((i = 0; i < RELAYS; i++)); do
  wait_for "relay-$((i + 1))" "http://127.0.0.1:$((RELAY_HTTP_PORT + i))/healthz"
done

for ((i = 0; i < EDGES; i++)); do
  start "edge-$((i + 1))" "$BIN/pushfleet-server" --edge-id "edge-$((i + 1))" \
    --listen "127.0.0.1:$((EDGE_PORT + i))" --admin-listen "127.0.0.1:$((EDGE_ADMIN_PORT + i))" \
    --etcd "$ETCD_URL" --demo --drain-spread 2s --drain-timeout 5s "${statsd[@]}"
done
for ((i = 0; i < EDGES; i++)); do
  wait_for "edge-$((i + 1))" "http://127.0.0.1:$((EDGE_PORT + i))/healthz"
done

start herald "$BIN/herald" --etcd "$ETCD_URL" \
  --agent-listen "127.0.0.1:$HERALD_AGENT_PORT" --http-listen "127.0.0.1:$HERALD_HTTP_PORT" \
  --haproxy-runtime "127.0.0.1:$HAPROXY_RUNTIME_PORT" --haproxy-slots 16 "${statsd[@]}"
wait_for herald "http://127.0.0.1:$HERALD_HTTP_PORT/healthz"

HAPROXY_RUNTIME="ipv4@127.0.0.1:$HAPROXY_RUNTIME_PORT" \
  PUSHFLEET_WS_BIND="127.0.0.1:$WS_PORT" \
  HAPROXY_STATS_BIND="127.0.0.1:$HAPROXY_STATS_PORT" \
  HERALD_AGENT_HOST=127.0.0.1 HERALD_AGENT_PORT="$HERALD_AGENT_PORT" \
  HERALD_HTTP_ADDR="127.0.0.1:$HERALD_HTTP_PORT" PUSHFLEET_EDGE_SLOTS=16 \
  start haproxy "$HAPROXY" -db -f haproxy/haproxy.cfg
wait_for haproxy "http://127.0.0.1:$HAPROXY_STATS_PORT/"

relay_flags=()
for e in "${relay_endpoints[@]}"; do relay_flags+=(--relay "$e"); done
start ticker python3 -u clients/python/ticker.py "${relay_flags[@]}" \
  --channels "$TICKER_CHANNELS" --rate "$TICKER_RATE"

# herald fills HAProxy's slots from etcd; the page works once one edge is in.
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$WS_PORT/healthz" 2>/dev/null && break
  sleep 0.1
done

cat <<MSG

  pushfleet is running: etcd, $RELAYS relays, $EDGES edges, herald, HAProxy, a Python ticker.

  demo page        http://127.0.0.1:$WS_PORT/demo/          (through HAProxy; the fleet view is its second tab)
  WebSocket        ws://127.0.0.1:$WS_PORT/ws
  herald status    http://127.0.0.1:$HERALD_HTTP_PORT/          (JSON: /status; also http://127.0.0.1:$WS_PORT/herald/)
  HAProxy stats    http://127.0.0.1:$HAPROXY_STATS_PORT/
  publish (HTTP)   curl -XPOST 127.0.0.1:$RELAY_HTTP_PORT/publish -d '{"channel":"ticker_INR","event":"news","data":{"text":"hello"}}'
  etcd             $ETCD_URL   (edges: curl -s $ETCD_URL/v3/kv/range -d '{"key":"L3B1c2hmbGVldC9lZGdlcy8=","range_end":"L3B1c2hmbGVldC9lZGdlczA="}': the edges' load reports, base64)
$( ((MONITORING)) && printf '  graphite         http://127.0.0.1:%s/   (StatsD udp 127.0.0.1:%s; Grafana dashboards and alerts: monitoring/README.md)\n' "$GRAPHITE_PORT" "$STATSD_PORT")
  logs, PIDs       $RUN_DIR/

  Press Ctrl-C to stop everything.
MSG
say "ready"

# Run until a signal. A part that dies is reported once; the rest carries on, as a
# fleet must (kill an edge and watch its clients move).
declare -A reported=()
while true; do
  for ((i = 0; i < ${#pids[@]}; i++)); do
    if [[ -z ${reported[$i]:-} ]] && ! kill -0 "${pids[i]}" 2>/dev/null; then
      reported[$i]=1
      say "${names[i]} (pid ${pids[i]}) exited; the rest carries on (log: $RUN_DIR/${names[i]}.log)"
    fi
  done
  sleep 1 &
  wait $! || true
done
