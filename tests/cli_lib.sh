# cli_lib.sh — what the gridq CLI tests share, sourced after setting GQ_TEST (a short name) and
# GQ_TEST_SECONDS (the bound of the whole run): the run re-executed under `timeout`, the
# prerequisites (exit 77, skipped, without them), a temporary folder, every process started
# kept in PIDS and stopped by PID on exit, fail with the logs, gridq against our broker, bounded
# polling, and a broker on a free loopback port (start_broker ARGS...).
set -u
if [ -z "${GQ_TEST_BOUNDED:-}" ]; then
    export GQ_TEST_BOUNDED=1
    exec timeout -k 5 "$GQ_TEST_SECONDS" bash "$0" "$@"
fi

BIN=${GQ_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/bin}
for program in gridq gridq-broker gridq-worker; do
    if [ ! -x "$BIN/$program" ]; then
        echo "SKIP: $BIN/$program is not built"
        exit 77
    fi
done
if ! command -v jq >/dev/null; then
    echo "SKIP: jq is not installed (tools/setup installs it)"
    exit 77
fi
unset GRIDQ_BROKER GRIDQ_CERT GRIDQ_SERVER_CERT

TMP=$(mktemp -d "/tmp/gq_$GQ_TEST.XXXXXX")
PIDS=()               # every process started, in order
# stop_pid PID: TERM, a bounded wait (5 s), then KILL.
stop_pid () {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
stop_all () {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    PIDS=()
}
cleanup () {
    stop_all
    step "stopped every process"
    if [ -z "${GQ_KEEP:-}" ]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

fail () {
    echo "FAIL: $*" >&2
    for f in out err; do
        [ -f "$TMP/$f" ] && echo "  $f: $(head -c 1500 "$TMP/$f")" >&2
    done
    for log in "$TMP"/*.log; do
        [ -f "$log" ] && { echo "--- $log (tail)" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}

# step TEXT: a progress line with the seconds since the start (ctest shows it on failure).
T0=$(date +%s%N)
step () {
    local now
    now=$(date +%s%N)
    printf '[%6.2f s] %s\n' "$(((now - T0) / 1000000))e-3" "$*"
}

# gq RC ARGS...: runs gridq against our broker (--timeout $GQ_TIMEOUT, 5s by default); stdout
# in $TMP/out, stderr in $TMP/err, the exit status in $RC, which must be RC ("any" accepts every
# status).
RC=0
gq () {
    local want=$1
    shift
    local t1 t2
    t1=$(date +%s%N)
    timeout 30 "$BIN/gridq" --broker "$EP" --timeout "${GQ_TIMEOUT:-5s}" "$@" >"$TMP/out" \
        2>"$TMP/err"
    RC=$?
    t2=$(date +%s%N)
    if [ $((t2 - t1)) -gt 2000000000 ]; then
        step "slow: gridq $* took $(((t2 - t1) / 1000000)) ms"
    fi
    if [ "$want" != any ] && [ "$RC" != "$want" ]; then
        fail "gridq $* exited $RC, expected $want"
    fi
    return 0
}

# jqt FILE FILTER: the jq filter holds (is true) for the JSON in $TMP/FILE.
jqt () {
    jq -e "$2" "$TMP/$1" >/dev/null 2>&1 || fail "$1 of the last command: jq '$2' does not hold"
}

# job_field ID NAME: one field of the job's STATUS JSON, as jq -r prints it.
job_field () {
    timeout 10 "$BIN/gridq" --broker "$EP" status "$1" --json | jq -r ".$2"
}

# after PARENT CHILD: the child started no earlier than the parent finished (RFC 3339 times
# with milliseconds, which sort as strings).
after () {
    local finished started
    finished=$(job_field "$1" finished_at)
    started=$(job_field "$2" started_at)
    [ "$finished" != null ] && [ "$started" != null ] || fail "job $1 or $2 has no times"
    [[ ! "$started" < "$finished" ]] ||
        fail "job $2 started at $started, before its parent $1 finished at $finished"
}

poll () {
    local tries=$1 t1 t2
    shift
    t1=$(date +%s%N)
    for _ in $(seq "$tries"); do
        if "$@"; then
            t2=$(date +%s%N)
            if [ $((t2 - t1)) -gt 2000000000 ]; then
                step "slow: $* held after $(((t2 - t1) / 1000000)) ms"
            fi
            return 0
        fi
        sleep 0.1
    done
    return 1
}

port_in_use () {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

broker_answers () {
    timeout 5 "$BIN/gridq" --broker "$EP" --timeout 300ms ping >/dev/null 2>&1
}
# The wait for a new broker ends when it answers or when it has exited (its port was taken).
broker_answers_or_exited () {
    broker_answers || ! kill -0 "$BROKER" 2>/dev/null
}


# start_broker ARGS...: a broker on a free loopback port with the test's database; sets EP and
# BROKER. A port taken between the check and the bind makes the broker exit: try another.
start_broker () {
    local started="" port
    for _ in $(seq 10); do
        # Below Linux's ephemeral range (32768-60999), where outgoing connections take ports.
        port=$((20000 + RANDOM % 12000))
        port_in_use "$port" && continue
        EP="tcp://127.0.0.1:$port"
        "$BIN/gridq-broker" --endpoint "$EP" --db "$TMP/gridq.db" "$@" >"$TMP/broker.log" 2>&1 &
        BROKER=$!
        PIDS+=("$BROKER")
        if poll 100 broker_answers_or_exited && broker_answers; then
            started=yes
            break
        fi
        kill -0 "$BROKER" 2>/dev/null && fail "broker started but does not answer PING"
        stop_all
    done
    [ -n "$started" ] || fail "could not start gridq-broker on a free port"
    step "broker up on $EP"
}
