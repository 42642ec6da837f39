#!/usr/bin/env bash
# Runs pushfleet benchmark scenarios against a freshly started local server.
#
#   bench/run.sh SCENARIO [SCENARIO...]
#
# Scenarios (10,000 connections over 100 channels unless overridden):
#   fanout-100b           one round, 100-byte messages at $RATE publishes/s
#   fanout-1k             one round, 1 KiB messages at $RATE_1K publishes/s
#   fanout-1k-compressed  the same with permessage-deflate
#   idle                  $CONNECTIONS idle subscribed connections: server RSS per connection
#   idle-compressed       the same with permessage-deflate negotiated
#   sweep-100b            rising rates with 100-byte messages: highest sustained
#                         delivery rate (<0.1% loss) and p99 at half that rate
#   sweep-1k              the same with 1 KiB messages
#   sweep-1k-compressed   the same with 1 KiB messages and permessage-deflate
#   all                   every scenario above, in that order
#
# Each scenario starts its own server (pinned to core $SERVER_CPU, one worker)
# on free loopback ports, waits for /healthz, runs the load tool pinned to core
# $BENCH_CPU, and stops the server again (SIGTERM, then SIGKILL after 5 s).
#
# SERVER=baseline runs the same scenarios against `pushfleet-bench
# baseline-server` instead (a minimal one-core fan-out server, the machine's
# own ceiling; pinned and started the same way, uncompressed scenarios only).
# Its outputs are named baseline-SCENARIO.out and server-baseline-SCENARIO.log.
#
# Environment overrides (defaults in brackets):
#   SERVER [pushfleet] (pushfleet | baseline)
#   SERVER_BIN [target/release/pushfleet-server]
#   CONNECTIONS [10000]  CHANNELS [100]  DURATION [10]  GRACE [2]
#   RATE [1000]  RATE_1K [$RATE]  START_RATE [200]  START_RATE_1K [$START_RATE]
#   STEP_FACTOR [1.2]  MAX_LOSS [0.001]  MAX_P99_MS [1000]  HOLD [5]
#   SERVER_CPU [0]  BENCH_CPU [1]  SERVER_ARGS [""] (extra server flags)
#   JSON [0] (1: the load tool prints one JSON object per scenario)
#   OUT_DIR [target/bench]  (server logs and load-tool output are kept there)
#   SKIP_BUILD [0]
#   PUBLISHER_FIFO [1] (1: the load tool's publisher thread runs SCHED_FIFO, see below)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONNECTIONS="${CONNECTIONS:-10000}"
CHANNELS="${CHANNELS:-100}"
DURATION="${DURATION:-10}"
GRACE="${GRACE:-2}"
RATE="${RATE:-1000}"
RATE_1K="${RATE_1K:-$RATE}"
START_RATE="${START_RATE:-200}"
START_RATE_1K="${START_RATE_1K:-$START_RATE}"
STEP_FACTOR="${STEP_FACTOR:-1.2}"
MAX_LOSS="${MAX_LOSS:-0.001}"
MAX_P99_MS="${MAX_P99_MS:-1000}"
HOLD="${HOLD:-5}"
SERVER_CPU="${SERVER_CPU:-0}"
BENCH_CPU="${BENCH_CPU:-1}"
SERVER_ARGS="${SERVER_ARGS:-}"
JSON="${JSON:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench}"
SKIP_BUILD="${SKIP_BUILD:-0}"
PUBLISHER_FIFO="${PUBLISHER_FIFO:-1}"
SERVER="${SERVER:-pushfleet}"

SERVER_BIN="${SERVER_BIN:-$ROOT/target/release/pushfleet-server}"
BENCH_BIN="$ROOT/target/release/pushfleet-bench"
ALL_SCENARIOS=(idle idle-compressed fanout-100b sweep-100b fanout-1k fanout-1k-compressed sweep-1k sweep-1k-compressed)

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 2
}

case "$SERVER" in
    pushfleet) LABEL="" ;;
    baseline) LABEL="baseline-" ;;
    *) echo "run.sh: SERVER must be pushfleet or baseline, not '$SERVER'" >&2; exit 2 ;;
esac

[ "$#" -ge 1 ] || usage
SCENARIOS=()
for arg in "$@"; do
    case "$arg" in
        all) SCENARIOS+=("${ALL_SCENARIOS[@]}") ;;
        idle | idle-compressed | fanout-100b | fanout-1k | fanout-1k-compressed | sweep-100b | sweep-1k | sweep-1k-compressed)
            SCENARIOS+=("$arg") ;;
        -h | --help | help) usage ;;
        *) echo "run.sh: unknown scenario '$arg'" >&2; usage ;;
    esac
done

log() { echo "run.sh: $*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

if [ "$SERVER" = baseline ]; then
    for s in "${SCENARIOS[@]}"; do
        case "$s" in
            *-compressed) log "$s: the baseline server does not compress; uncompressed scenarios only"; exit 2 ;;
        esac
    done
fi

# Prints a command line the way it will run, then runs it.
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

if [ "$SKIP_BUILD" != 1 ]; then
    if [ "$SERVER" = baseline ]; then
        build=(cargo build --release -p pushfleet-bench)
    else
        build=(cargo build --release -p pushfleet-server -p pushfleet-bench)
    fi
    show "${build[@]}"
    "${build[@]}"
fi
if [ "$SERVER" = pushfleet ]; then
    [ -x "$SERVER_BIN" ] || { log "missing $SERVER_BIN"; exit 1; }
fi
[ -x "$BENCH_BIN" ] || { log "missing $BENCH_BIN"; exit 1; }

# Each side needs one descriptor per connection plus slack.
want_fds=200000
if ! ulimit -n "$want_fds" 2>/dev/null; then
    hard="$(ulimit -Hn)"
    if [ "$hard" != unlimited ]; then
        ulimit -n "$hard"
    fi
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 1024)) ]; then
    log "ulimit -n is $(ulimit -n), too low for $CONNECTIONS connections (raise the hard limit)"
    exit 1
fi
log "ulimit -n $(ulimit -n)"

if [ "$(nproc)" -lt 2 ] || ! taskset -c "$SERVER_CPU,$BENCH_CPU" true 2>/dev/null; then
    log "cannot pin to cores $SERVER_CPU and $BENCH_CPU (nproc $(nproc)); set SERVER_CPU/BENCH_CPU"
    exit 1
fi

mkdir -p "$OUT_DIR"

SERVER_PID=""
stop_server() {
    local pid="$SERVER_PID"
    [ -n "$pid" ] || return 0
    SERVER_PID=""
    stop_pid "$pid" server
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# Starts the server for scenario $1; sets PORT, ZPORT, SERVER_PID.
start_server() {
    local name="$1"
    pick_port PORT
    pick_port APORT
    pick_port ZPORT
    SERVER_LOG="$OUT_DIR/server-$LABEL$name.log"
    # SERVER_ARGS is split on purpose (extra flags).
    # shellcheck disable=SC2206
    local cmd=(taskset -c "$SERVER_CPU" "$SERVER_BIN"
        --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$APORT"
        --zmq-connect "tcp://127.0.0.1:$ZPORT" --workers 1 $SERVER_ARGS)
    if [ "$SERVER" = baseline ]; then
        # shellcheck disable=SC2206
        cmd=(taskset -c "$SERVER_CPU" "$BENCH_BIN" baseline-server
            --listen "127.0.0.1:$PORT" --zmq-connect "tcp://127.0.0.1:$ZPORT" $SERVER_ARGS)
    fi
    show "${cmd[@]}"
    # taskset execs the server, so $! is the server's PID.
    "${cmd[@]}" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
            log "$SERVER server up (pid $SERVER_PID, ws port $PORT, admin port $APORT, zmq port $ZPORT, log $SERVER_LOG)"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server exited during startup; last lines of $SERVER_LOG:"
            tail -n 30 "$SERVER_LOG" >&2 || true
            SERVER_PID=""
            return 1
        fi
        sleep 0.1
    done
    log "server did not answer /healthz within 30 s; last lines of $SERVER_LOG:"
    tail -n 30 "$SERVER_LOG" >&2 || true
    return 1
}

# Runs the load tool for scenario $1 with the remaining arguments.
run_bench() {
    local name="$1"
    shift
    local cmd=(taskset -c "$BENCH_CPU" "$BENCH_BIN" "$@"
        --url "ws://127.0.0.1:$PORT/ws" --connections "$CONNECTIONS" --channels "$CHANNELS"
        --server-pid "$SERVER_PID")
    if [ "$JSON" = 1 ]; then
        cmd+=(--json)
    fi
    show "${cmd[@]}"
    "${cmd[@]}" > >(tee "$OUT_DIR/$LABEL$name.out") &
    local bench_pid=$!
    if [ "$PUBLISHER_FIFO" = 1 ]; then
        publisher_realtime "$bench_pid"
    fi
    wait "$bench_pid"
}

# The load tool's publisher thread shares its core with the readers; left to the
# normal scheduler it falls behind while they work and then publishes in bursts,
# which shows up as server latency. SCHED_FIFO lets it keep time (it needs ~1% CPU).
publisher_realtime() { # PID
    local t
    for _ in $(seq 1200); do
        for t in /proc/"$1"/task/*; do
            if [ "$(cat "$t/comm" 2>/dev/null)" = publisher ]; then
                chrt -f -p 10 "${t##*/}" && log "publisher thread ${t##*/} runs SCHED_FIFO 10"
                return 0
            fi
        done
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
}

load_args() { # SIZE
    echo --zmq-bind "tcp://127.0.0.1:$ZPORT" --size "$1" --duration "$DURATION" --grace "$GRACE"
}

sweep_args() { # START_RATE
    echo --start-rate "$1" --step-factor "$STEP_FACTOR" --max-loss "$MAX_LOSS" --max-p99-ms "$MAX_P99_MS"
}

run_scenario() {
    local name="$1"
    echo
    echo "=== $LABEL$name ($SERVER server, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -r), $(nproc) cores) ==="
    start_server "$name"
    # Word splitting of the helper output is intended (no spaces inside).
    # shellcheck disable=SC2046
    case "$name" in
        idle) run_bench "$name" idle --hold "$HOLD" ;;
        idle-compressed) run_bench "$name" idle --hold "$HOLD" --compress ;;
        fanout-100b) run_bench "$name" fanout $(load_args 100) --rate "$RATE" ;;
        fanout-1k) run_bench "$name" fanout $(load_args 1024) --rate "$RATE_1K" ;;
        fanout-1k-compressed) run_bench "$name" fanout $(load_args 1024) --rate "$RATE_1K" --compress ;;
        sweep-100b) run_bench "$name" sweep $(load_args 100) $(sweep_args "$START_RATE") ;;
        sweep-1k) run_bench "$name" sweep $(load_args 1024) $(sweep_args "$START_RATE_1K") ;;
        sweep-1k-compressed) run_bench "$name" sweep $(load_args 1024) $(sweep_args "$START_RATE_1K") --compress ;;
    esac
    stop_server
}

for s in "${SCENARIOS[@]}"; do
    run_scenario "$s"
done
log "done; outputs in $OUT_DIR"
