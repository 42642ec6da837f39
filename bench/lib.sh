# Shared by the benchmark scripts (sourced, not run): loopback ports and stopping
# what a script started, by PID. The sourcing script defines `log MESSAGE`.

# pick_port VAR: sets VAR to a free loopback TCP port below the ephemeral range (so a
# load tool's own client ports never collide with it), in use by no socket (per ss)
# and not already picked by this script. Sets the variable in the caller's shell, so
# the record of picked ports survives (a `$(…)` subshell would lose it).
PICKED_PORTS=" "
pick_port() {
    local p
    for _ in $(seq 1 500); do
        p=$((20000 + RANDOM % 12000))
        case "$PICKED_PORTS" in *" $p "*) continue ;; esac
        if ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null | grep -q .; then
            continue
        fi
        PICKED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    log "no free port found"
    exit 1
}

# stop_pid PID NAME: SIGTERM, SIGKILL after 5 s; reaps it. Only for PIDs the
# script itself started.
stop_pid() {
    local pid="$1" name="$2"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM for 5 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
