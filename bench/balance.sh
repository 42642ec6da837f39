#!/usr/bin/env bash
# Compares plain least-connections balancing with herald on the same skewed
# workload: long-lived WebSocket clients whose connection count says nothing
# about the work they cost.
#
#   bench/balance.sh            # MODE=both: leastconn, then herald, then a comparison
#   MODE=herald N_HOT=600 RATE=30 bench/balance.sh
#
# Each mode starts its own etcd, pushfleet-relay, HAProxy (haproxy/haproxy.cfg),
# herald and edges on free loopback ports, and runs:
#   1. ONE edge (A); wait until herald has put it in a slot and HAProxy's health
#      check passes (runtime API "show servers state edges": srv_op_state 2).
#   2. "old": N_IDLE clients connect through HAProxy and subscribe to "quiet",
#      a channel nobody publishes. They all land on A and stay, idle.
#   3. scale-out: edges B and C start; wait until both are placed and up.
#   4. "new": pushfleet-publish ticks hot-0,hot-1,hot-2 at RATE msg/s in total;
#      N_HOT clients arrive through HAProxy over ARRIVAL seconds, client i on
#      hot-(i % 3). Each hot client receives RATE/3 msg/s, so the fleet delivers
#      N_HOT x RATE / 3 msg/s (3,000 by default). The one Python process reading
#      them all used ~16% of a core at 3,000 msg/s and ~47% at 9,000 msg/s on
#      the 2-core dev machine: the report prints its CPU, and the edges' drops,
#      to show that it kept up.
#   5. MEASURE seconds after the last arrival: per edge, deliveries/s (delta of
#      the admin /stats "msgs_out" counter), CPU (utime+stime delta from
#      /proc/PID/stat, % of one core), connections, drops; imbalance = max/mean
#      over the edges, of deliveries/s and of CPU.
#   6. stop everything by PID (SIGTERM, SIGKILL after 5 s), remove etcd's data dir.
# The two modes differ only in herald's weights: leastconn runs herald with
# --floor 100 --ceiling 100 (every weight stays 100%: HAProxy's own leastconn,
# herald only manages membership); herald uses its default floor and ceiling.
# Both get --capacity-msgs-out $CAPACITY (it only matters when weights can move).
#
# Clients are bench/balance_clients.py (one asyncio process per wave). Every
# command line is printed before it runs. Logs and results go to
# $OUT_DIR/balance-<mode>-*: one log per process, balance-<mode>-timeline.jsonl
# (herald's /status views and HAProxy's weights, once a second) and
# balance-<mode>-result.txt (the numbers the final comparison reads).
#
# Environment overrides (defaults in brackets):
#   MODE [both] (leastconn | herald | both)
#   N_IDLE [300]  N_HOT [300]  ARRIVAL [20] (s)  RATE [30] (publishes/s, total)
#   MEASURE [15] (s)  CAPACITY [2000] (herald --capacity-msgs-out)
#   HERALD_ARGS [""] (extra herald flags, both modes)
#   SKIP_BUILD [0]  OUT_DIR [target/bench]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE="${MODE:-both}"
N_IDLE="${N_IDLE:-300}"
N_HOT="${N_HOT:-300}"
ARRIVAL="${ARRIVAL:-20}"
RATE="${RATE:-30}"
MEASURE="${MEASURE:-15}"
CAPACITY="${CAPACITY:-2000}"
HERALD_ARGS="${HERALD_ARGS:-}"
SKIP_BUILD="${SKIP_BUILD:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench}"

BIN="$ROOT/target/release"
ETCD_BIN="${ETCD_BIN:-/usr/bin/etcd}"
HAPROXY_BIN="${HAPROXY_BIN:-/usr/sbin/haproxy}"
CLIENTS="$ROOT/bench/balance_clients.py"
HOT_CHANNELS="hot-0,hot-1,hot-2"
SLOTS=4

log() { echo "balance.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# Prints a command line the way it will run.
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

case "${1:-}" in
    -h | --help | help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
        exit 2
        ;;
esac
case "$MODE" in
    leastconn | herald | both) ;;
    *) die "MODE must be leastconn, herald or both, not '$MODE'" ;;
esac
for v in N_IDLE N_HOT ARRIVAL MEASURE; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[[ "$RATE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RATE must be a number, not '$RATE'"
[ "$N_HOT" -ge 1 ] && [ "$MEASURE" -ge 1 ] || die "N_HOT and MEASURE must be at least 1"
for tool in curl jq ss awk; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
PYTHON="$(python3 -c 'import sys; print(sys.executable)')" || die "python3 is needed"
"$PYTHON" -c 'import websockets.asyncio.client' 2>/dev/null ||
    die "$PYTHON lacks websockets (>= 13, websockets.asyncio.client)"
[ -x "$ETCD_BIN" ] || die "missing $ETCD_BIN"
[ -x "$HAPROXY_BIN" ] || die "missing $HAPROXY_BIN"

if [ "$SKIP_BUILD" != 1 ]; then
    build=(cargo build --release -q -p pushfleet-server -p herald --bins)
    show "${build[@]}"
    "${build[@]}"
fi
for b in pushfleet-server pushfleet-relay pushfleet-publish herald; do
    [ -x "$BIN/$b" ] || die "missing $BIN/$b (build it or unset SKIP_BUILD)"
done
mkdir -p "$OUT_DIR"
# 600 client sockets, HAProxy's two sides of each, the edges' own.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- processes

# Every process this script started, in start order (PIDS[i] is NAMES[i]).
PIDS=()
NAMES=()
ETCD_DIR=""

# start NAME LOG CMD...: runs CMD in the background, logging to LOG.
start() {
    local name="$1" logfile="$2"
    shift 2
    show "$@"
    "$@" >"$logfile" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    LAST_PID=$!
}

# Stops everything still running, newest first, and removes etcd's data dir.
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}" "${NAMES[$i]}"
    done
    PIDS=()
    NAMES=()
    if [ -n "$ETCD_DIR" ]; then
        rm -rf "$ETCD_DIR"
        ETCD_DIR=""
    fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

alive() { kill -0 "$1" 2>/dev/null; }

# wait_http NAME PID URL [SECONDS]: until URL answers 2xx, or fail.
wait_http() {
    local name="$1" pid="$2" url="$3" secs="${4:-30}" i
    for ((i = 0; i < secs * 10; i++)); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        alive "$pid" || break
        sleep 0.1
    done
    die "$name (pid $pid) did not answer $url within ${secs}s or exited; see its log"
}

# runtime CMD: one HAProxy runtime API command over TCP, its reply on stdout.
runtime() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "%s\n" "$2" >&3 && cat <&3' \
        _ "$RT_PORT" "$1" 2>/dev/null || true
}

# servers_state: "slot addr port op_state admin_state uweight" per slot.
servers_state() {
    runtime "show servers state edges" | awk '
        $1 == "#" { for (i = 2; i <= NF; i++) col[$i] = i - 1; next }
        NF > 5 && ("srv_name" in col) {
            print $col["srv_name"], $col["srv_addr"], $col["srv_port"], \
                $col["srv_op_state"], $col["srv_admin_state"], $col["srv_uweight"]
        }'
}

# wait_placed EDGE_ID PORT: until herald put the edge in a slot and HAProxy runs it.
wait_placed() {
    local id="$1" port="$2" slot="" state="" i
    for ((i = 0; i < 120; i++)); do
        slot="$(curl -fsS --max-time 1 "http://127.0.0.1:$HERALD_HTTP/status" 2>/dev/null |
            jq -r --arg id "$id" '.slots | to_entries[] | select(.value == $id) | .key' 2>/dev/null |
            head -n 1)" || true
        if [ -n "$slot" ]; then
            state="$(servers_state | awk -v s="$slot" -v p="$port" '$1 == s && $3 == p { print $4 }')"
            if [ "$state" = 2 ]; then
                log "$id is in slot $slot and up (srv_op_state 2)"
                return 0
            fi
        fi
        sleep 0.5
    done
    log "herald /status:"
    curl -fsS --max-time 1 "http://127.0.0.1:$HERALD_HTTP/status" | jq -c '.slots, .views' >&2 || true
    log "HAProxy servers state:"
    servers_state >&2 || true
    die "$id (port $port) not placed and up within 60 s (slot '$slot', op_state '$state')"
}

# wait_no_stray_slots PORT...: until every slot not pointing at one of the
# given edge ports is out of rotation (maintenance, or its health check down),
# so clients are not sent to an empty slot (127.0.0.1:1). Bounded: 15 s.
wait_no_stray_slots() {
    local ports=" $* " stray i
    for ((i = 0; i < 30; i++)); do
        # srv_admin_state bits 0x01 (forced), 0x02 (inherited), 0x20 (resolution)
        # mean maintenance; srv_op_state 0 means stopped.
        stray="$(servers_state | awk -v ports="$ports" '
            index(ports, " " $3 " ") == 0 && $4 != 0 && int($5 / 32) % 2 == 0 &&
                int($5 / 2) % 2 == 0 && $5 % 2 == 0 { printf "%s(op %s admin %s) ", $1, $4, $5 }')"
        [ -z "$stray" ] && return 0
        [ "$i" -eq 0 ] && log "empty slots in rotation: $stray; waiting until they are out"
        sleep 0.5
    done
    log "WARNING: empty slots still in rotation after 15 s: $stray (clients may get 503s)"
}

# stats ADMIN_PORT: "connections msgs_out drops" of an edge.
edge_stats() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/stats" |
        jq -r '[.connections, .msgs_out,
                (.drops.slow_client + .drops.closed + .drops.worker_queue_full)] | @tsv'
}

# cpu_ticks PID: utime + stime, in clock ticks.
cpu_ticks() {
    # Fields after the ")" closing comm: state is 1, utime 12, stime 13.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

now() { date +%s.%N; }

# wait_file FILE SECONDS PID NAME: until FILE exists (the wave's ready file).
wait_file() {
    local file="$1" secs="$2" pid="$3" name="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        [ -s "$file" ] && return 0
        alive "$pid" || die "$name (pid $pid) exited early; see its log"
        sleep 0.1
    done
    die "$name: not every client subscribed or failed within ${secs}s"
}

# monitor TIMELINE PHASE_FILE: once a second (bounded), herald's views and
# HAProxy's weights as one JSON line.
monitor() {
    local out="$1" phase_file="$2" i t0 t herald haproxy
    t0="$(now)"
    for ((i = 0; i < 1800; i++)); do
        t="$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
        herald="$(curl -fsS --max-time 1 "http://127.0.0.1:$HERALD_HTTP/status" 2>/dev/null |
            jq -c '.views | map_values({percent, load: (.load * 1000 | round / 1000),
                verdict, conns: .report.connections,
                out: (.report.msgs_out_per_s | round),
                cpu: (.report.cpu * 1000 | round / 1000)})' 2>/dev/null)" || true
        haproxy="$(servers_state | awk '
            { printf "%s\"%s\":{\"port\":%s,\"op\":%s,\"admin\":%s,\"w\":%s}", sep, $1, $3, $4, $5, $6; sep = "," }
            END { if (NR) print "" }' | sed 's/^/{/; s/$/}/')" || true
        printf '{"t":%s,"phase":"%s","herald":%s,"haproxy":%s}\n' "$t" \
            "$(cat "$phase_file" 2>/dev/null || echo '?')" "${herald:-null}" "${haproxy:-null}" >>"$out"
        sleep 1
    done
}

# ---------------------------------------------------------------- one mode

# run_mode MODE: the whole workload once; writes balance-MODE-result.txt.
run_mode() {
    local mode="$1" p="$OUT_DIR/balance-$1"
    local -a herald_weights
    case "$mode" in
        leastconn) herald_weights=(--floor 100 --ceiling 100) ;;
        herald) herald_weights=() ;;
    esac
    rm -f "$p"-*.log "$p"-*.ready "$p-timeline.jsonl" "$p-result.txt" "$p-phase"
    echo
    echo "=== balance: $mode ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, N_IDLE=$N_IDLE N_HOT=$N_HOT ARRIVAL=${ARRIVAL}s RATE=$RATE/s MEASURE=${MEASURE}s CAPACITY=$CAPACITY) ==="

    local etcd_c etcd_q relay_pub relay_edge relay_http ws_port stats_port
    local v
    for v in etcd_c etcd_q relay_pub relay_edge relay_http RT_PORT ws_port stats_port \
        HERALD_AGENT HERALD_HTTP; do
        pick_port "$v"
    done
    local etcd_url="http://127.0.0.1:$etcd_c"
    local url="ws://127.0.0.1:$ws_port/ws"

    # etcd
    ETCD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/balance-etcd.XXXXXX")"
    start etcd "$p-etcd.log" "$ETCD_BIN" --name b --data-dir "$ETCD_DIR" \
        --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
        --listen-peer-urls "http://127.0.0.1:$etcd_q" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_q" \
        --initial-cluster "b=http://127.0.0.1:$etcd_q"
    local etcd_pid=$LAST_PID i
    for ((i = 0; i < 300; i++)); do
        curl -fsS --max-time 1 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && break
        alive "$etcd_pid" || die "etcd exited; see $p-etcd.log"
        sleep 0.1
    done
    [ "$i" -lt 300 ] || die "etcd not healthy within 30 s; see $p-etcd.log"

    # relay
    start relay "$p-relay.log" "$BIN/pushfleet-relay" \
        --publish-bind "tcp://127.0.0.1:$relay_pub" --edge-bind "tcp://127.0.0.1:$relay_edge" \
        --http-listen "127.0.0.1:$relay_http"
    wait_http relay "$LAST_PID" "http://127.0.0.1:$relay_http/stats"

    # HAProxy
    show env HAPROXY_RUNTIME="ipv4@127.0.0.1:$RT_PORT" PUSHFLEET_WS_BIND="127.0.0.1:$ws_port" \
        HAPROXY_STATS_BIND="127.0.0.1:$stats_port" HERALD_AGENT_HOST=127.0.0.1 \
        HERALD_AGENT_PORT="$HERALD_AGENT" HERALD_HTTP_ADDR="127.0.0.1:$HERALD_HTTP" \
        PUSHFLEET_EDGE_SLOTS="$SLOTS"
    HAPROXY_RUNTIME="ipv4@127.0.0.1:$RT_PORT" PUSHFLEET_WS_BIND="127.0.0.1:$ws_port" \
        HAPROXY_STATS_BIND="127.0.0.1:$stats_port" HERALD_AGENT_HOST=127.0.0.1 \
        HERALD_AGENT_PORT="$HERALD_AGENT" HERALD_HTTP_ADDR="127.0.0.1:$HERALD_HTTP" \
        PUSHFLEET_EDGE_SLOTS="$SLOTS" start haproxy "$p-haproxy.log" "$HAPROXY_BIN" -db -f "$ROOT/haproxy/haproxy.cfg"
    local haproxy_pid=$LAST_PID
    for ((i = 0; i < 100; i++)); do
        servers_state | grep -q . && break
        alive "$haproxy_pid" || die "HAProxy exited; see $p-haproxy.log"
        sleep 0.1
    done
    [ "$i" -lt 100 ] || die "HAProxy's runtime API did not answer within 10 s"

    # herald
    # HERALD_ARGS is split on purpose (extra flags).
    # shellcheck disable=SC2206
    start herald "$p-herald.log" "$BIN/herald" --etcd "$etcd_url" \
        --agent-listen "127.0.0.1:$HERALD_AGENT" --http-listen "127.0.0.1:$HERALD_HTTP" \
        --haproxy-runtime "ipv4@127.0.0.1:$RT_PORT" --haproxy-slots "$SLOTS" \
        --interval 500ms --stale-after 3s --capacity-msgs-out "$CAPACITY" \
        ${herald_weights[@]+"${herald_weights[@]}"} $HERALD_ARGS
    wait_http herald "$LAST_PID" "http://127.0.0.1:$HERALD_HTTP/status"

    # edges: A now, B and C at scale-out
    declare -A WS ADMIN PID
    local e
    for e in A B C; do
        pick_port "WS[$e]"
        pick_port "ADMIN[$e]"
    done
    start_edge() {
        local e="$1" id="edge-${1,,}"
        start "$id" "$p-$id.log" "$BIN/pushfleet-server" \
            --listen "127.0.0.1:${WS[$e]}" --admin-listen "127.0.0.1:${ADMIN[$e]}" \
            --zmq-connect "tcp://127.0.0.1:$relay_edge" --etcd "$etcd_url" --edge-id "$id" \
            --load-interval 500ms --lease-ttl 3s --workers 1
        PID[$e]=$LAST_PID
    }
    start_edge A
    wait_http edge-a "${PID[A]}" "http://127.0.0.1:${ADMIN[A]}/stats"
    wait_placed edge-a "${WS[A]}"
    wait_no_stray_slots "${WS[A]}"

    echo setup >"$p-phase"
    start monitor "$p-monitor.log" monitor "$p-timeline.jsonl" "$p-phase"

    # phase "old": idle clients, all on A
    echo old >"$p-phase"
    local idle_hold=$((120 + ARRIVAL + MEASURE + 60))
    start idle-wave "$p-idle-clients.log" "$PYTHON" "$CLIENTS" "$url" "$N_IDLE" quiet 0 "$idle_hold" \
        --label idle --ready-file "$p-idle.ready"
    local idle_pid=$LAST_PID
    wait_file "$p-idle.ready" 120 "$idle_pid" idle-wave
    local idle_ok
    idle_ok="$(cat "$p-idle.ready")"
    local a_idle
    a_idle="$(edge_stats "${ADMIN[A]}" | cut -f1)"
    log "idle wave: subscribed/failed = $idle_ok; edge A has $a_idle connections"

    # scale-out
    echo scale-out >"$p-phase"
    start_edge B
    start_edge C
    wait_http edge-b "${PID[B]}" "http://127.0.0.1:${ADMIN[B]}/stats"
    wait_http edge-c "${PID[C]}" "http://127.0.0.1:${ADMIN[C]}/stats"
    wait_placed edge-b "${WS[B]}"
    wait_placed edge-c "${WS[C]}"
    wait_no_stray_slots "${WS[A]}" "${WS[B]}" "${WS[C]}"

    # phase "new": publisher first, then the hot arrivals
    echo new >"$p-phase"
    local pub_secs=$((ARRIVAL + MEASURE + 60))
    start publisher "$p-publish.log" "$BIN/pushfleet-publish" --relay "tcp://127.0.0.1:$relay_pub" \
        ticker --channels "$HOT_CHANNELS" --rate "$RATE" --duration "${pub_secs}s" --progress
    local pub_pid=$LAST_PID
    sleep 1
    alive "$pub_pid" || die "the publisher exited; see $p-publish.log"
    local hot_hold=$((MEASURE + 60))
    start hot-wave "$p-hot-clients.log" "$PYTHON" "$CLIENTS" "$url" "$N_HOT" "$HOT_CHANNELS" \
        "$ARRIVAL" "$hot_hold" --label hot --ready-file "$p-hot.ready"
    local hot_pid=$LAST_PID
    wait_file "$p-hot.ready" $((ARRIVAL + 60)) "$hot_pid" hot-wave
    local hot_ok
    hot_ok="$(cat "$p-hot.ready")"
    log "hot wave: subscribed/failed = $hot_ok"

    # measurement window
    echo measure >"$p-phase"
    declare -A C0 M0 D0 T0 C1 M1 D1 T1 W
    local s0 s1
    local h0 h1
    s0="$(now)"
    h0="$(cpu_ticks "$hot_pid")"
    for e in A B C; do
        read -r "C0[$e]" "M0[$e]" "D0[$e]" < <(edge_stats "${ADMIN[$e]}") ||
            die "cannot read edge $e's /stats"
        T0[$e]="$(cpu_ticks "${PID[$e]}")"
    done
    sleep "$MEASURE"
    s1="$(now)"
    h1="$(cpu_ticks "$hot_pid")"
    for e in A B C; do
        read -r "C1[$e]" "M1[$e]" "D1[$e]" < <(edge_stats "${ADMIN[$e]}") ||
            die "cannot read edge $e's /stats"
        T1[$e]="$(cpu_ticks "${PID[$e]}")"
    done
    local status
    status="$(curl -fsS --max-time 2 "http://127.0.0.1:$HERALD_HTTP/status" 2>/dev/null || echo '{}')"
    for e in A B C; do
        W[$e]="$(jq -r --arg id "edge-${e,,}" '.views[$id].percent // "?"' <<<"$status")"
    done
    echo done >"$p-phase"
    for e in A B C; do
        alive "${PID[$e]}" || die "edge $e exited during the run; see $p-edge-${e,,}.log"
    done

    # clients end: their summaries
    stop_pid "$hot_pid" hot-wave
    stop_pid "$idle_pid" idle-wave
    local hot_sum idle_sum
    hot_sum="$(tail -n 1 "$p-hot-clients.log")"
    idle_sum="$(tail -n 1 "$p-idle-clients.log")"
    local pub_rate
    pub_rate="$(grep 'msg/s' "$p-publish.log" | tail -n 1 || true)"
    stop_all

    # report
    local result="$p-result.txt"
    {
        echo "mode $mode"
        for e in A B C; do
            awk -v e="$e" -v c0="${C0[$e]}" -v c1="${C1[$e]}" -v m0="${M0[$e]}" -v m1="${M1[$e]}" \
                -v d0="${D0[$e]}" -v d1="${D1[$e]}" -v t0="${T0[$e]}" -v t1="${T1[$e]}" \
                -v s0="$s0" -v s1="$s1" -v tck="$CLK_TCK" -v w="${W[$e]}" \
                -v idle="$([ "$e" = A ] && echo "$a_idle" || echo 0)" 'BEGIN {
                    dt = s1 - s0
                    printf "edge %s %d %d %.1f %.1f %d %s\n", e, c1, c1 - idle,
                        (m1 - m0) / dt, 100 * (t1 - t0) / tck / dt, d1 - d0, w
                }'
        done
    } >"$result"
    awk -v mode="$mode" -v n_hot="$N_HOT" -v rate="$RATE" -v out="$result" '
        $1 == "edge" { n++; e[n] = $2; conns[n] = $3; hot[n] = $4; dps[n] = $5; cpu[n] = $6
                       drops[n] = $7; w[n] = $8; sd += $5; sc += $6; if ($5 > md) md = $5; if ($6 > mc) mc = $6 }
        END {
            printf "%-6s %7s %9s %14s %10s %7s %13s\n", "edge", "conns", "hot conns", "deliveries/s", "CPU %core", "drops", "herald weight"
            for (i = 1; i <= n; i++)
                printf "%-6s %7d %9d %14.1f %10.1f %7d %12s%%\n", e[i], conns[i], hot[i], dps[i], cpu[i], drops[i], w[i]
            printf "%-6s %7s %9s %14.1f %10.1f\n", "total", "", "", sd, sc
            printf "expected deliveries/s: %.0f (N_HOT x RATE / 3)\n", n_hot * rate / 3
            id = (sd > 0) ? md / (sd / n) : 0
            ic = (sc > 0) ? mc / (sc / n) : 0
            printf "imbalance (max/mean) %s: deliveries/s %.2f, CPU %.2f\n", mode, id, ic
            printf "imbalance_deliveries %.3f\nimbalance_cpu %.3f\n", id, ic >> out
        }' "$result"
    echo "idle clients: $idle_sum"
    echo "hot clients:  $hot_sum"
    [ -z "$pub_rate" ] || echo "publisher: $pub_rate"
    awk -v h0="$h0" -v h1="$h1" -v s0="$s0" -v s1="$s1" -v tck="$CLK_TCK" 'BEGIN {
        printf "hot clients process CPU in the window: %.1f%% of a core (it must keep up)\n",
            100 * (h1 - h0) / tck / (s1 - s0) }'
    echo "HAProxy: $(grep -c '"GET /ws' "$p-haproxy.log" || true) /ws requests logged, $(grep -c ' 503 ' "$p-haproxy.log" || true) answered 503"
    echo "timeline (herald weight % / connections per edge, from herald /status):"
    jq -r 'select(.herald != null and (.phase == "new" or .phase == "measure" or .phase == "scale-out"))
        | [.t, .phase, (.herald | to_entries | map("\(.key) \(.value.percent)% \(.value.conns)c \(.value.out)/s") | join("  "))]
        | @tsv' "$p-timeline.jsonl" 2>/dev/null | awk -F'\t' 'NR % 3 == 1 { printf "  t=%6.1fs %-9s %s\n", $1, $2, $3 }' || true
    echo "logs: $p-*.log, timeline $p-timeline.jsonl, result $result"
}

# ---------------------------------------------------------------- main

case "$MODE" in
    both) modes=(leastconn herald) ;;
    *) modes=("$MODE") ;;
esac
for m in "${modes[@]}"; do
    run_mode "$m"
done

if [ "$MODE" = both ]; then
    L="$OUT_DIR/balance-leastconn-result.txt"
    H="$OUT_DIR/balance-herald-result.txt"
    echo
    echo "=== comparison (deliveries/s per edge over ${MEASURE}s; A holds the $N_IDLE idle clients) ==="
    awk '
        FNR == 1 { f++ }
        $1 == "edge" { d[f, $2] = $5; c[f, $2] = $4; cpu[f, $2] = $6; if (f == 1) order[++n] = $2 }
        $1 == "imbalance_deliveries" { id[f] = $2 }
        $1 == "imbalance_cpu" { ic[f] = $2 }
        END {
            printf "%-6s %-33s %-33s\n", "", "leastconn", "herald"
            printf "%-6s %9s %13s %9s   %9s %13s %9s\n", "edge", "hot conns", "deliveries/s", "CPU %core",
                "hot conns", "deliveries/s", "CPU %core"
            for (i = 1; i <= n; i++) {
                e = order[i]
                printf "%-6s %9d %13.1f %9.1f   %9d %13.1f %9.1f\n", e, c[1, e], d[1, e], cpu[1, e],
                    c[2, e], d[2, e], cpu[2, e]
            }
            printf "imbalance deliveries/s (max/mean): leastconn %.2f, herald %.2f\n", id[1], id[2]
            printf "imbalance CPU (max/mean):          leastconn %.2f, herald %.2f\n", ic[1], ic[2]
        }' "$L" "$H"
fi
