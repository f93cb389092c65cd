#!/usr/bin/env bash
# test_cli_offline.sh — the gridq CLI without a broker: help texts, usage errors (exit 2), jobs
# checked locally before anything is sent, and an unreachable broker (exit 3, the exact text).
# Needs only build/bin/gridq; every command is bounded by `timeout`.
set -u
if [ -z "${GQ_CLI_BOUNDED:-}" ]; then
    export GQ_CLI_BOUNDED=1
    exec timeout -k 5 50 bash "$0" "$@"
fi

BIN=${GQ_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/bin}
GRIDQ=$BIN/gridq
[ -x "$GRIDQ" ] || { echo "FAIL: $GRIDQ is not built" >&2; exit 1; }
TMP=$(mktemp -d /tmp/gq_cli_offline.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
unset GRIDQ_BROKER GRIDQ_CERT GRIDQ_SERVER_CERT

failures=0
fail () {
    echo "FAIL: $*" >&2
    echo "  stdout: $(head -c 600 "$TMP/out")" >&2
    echo "  stderr: $(head -c 600 "$TMP/err")" >&2
    failures=$((failures + 1))
}

# expect RC CMD...: runs gridq with the arguments, stdout in $TMP/out, stderr in $TMP/err.
expect () {
    local want=$1
    shift
    timeout 20 "$GRIDQ" "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    [ "$got" = "$want" ] || fail "gridq $* exited $got, expected $want"
}

# has FILE TEXT: the file contains the text (fixed string).
has () {
    grep -qF -- "$2" "$TMP/$1" || fail "$1 lacks \"$2\""
}

# A loopback port where nothing listens: a connect must be refused.
free_port () {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# ---- help and version ----------------------------------------------------------------------
expect 0 --version
grep -qE '^gridq [0-9]+\.[0-9]+\.[0-9]+$' "$TMP/out" || fail "--version prints $(cat "$TMP/out")"
expect 0 --help
has out "Usage: gridq"
cp "$TMP/out" "$TMP/main_help"
for command in submit status wait result cancel jobs nodes explain stats ping; do
    has main_help "  $command "
    expect 0 "$command" --help
    has out "Usage: gridq $command"
    has out "Example"
    expect 0 help "$command"
    has out "Usage: gridq $command"
done
expect 2
has err "Usage: gridq"

# ---- usage errors: exit 2, what is wrong, where to read more ------------------------------
expect 2 frobnicate
has err 'unknown command "frobnicate"'
expect 2 --timeout soon ping
has err '--timeout "soon"'
expect 2 ping --timeout 2s
has err "global options come before the command"
expect 2 status
has err "missing job id"
expect 2 status 12 abc
has err '"abc" is not a job id'
expect 2 status -- -5
has err '"-5" is not a job id'
expect 2 result 1 2
has err "takes one job id"
expect 2 jobs --state sleeping
has err '--state "sleeping"'
expect 2 jobs --limit 0
has err '--limit "0"'
expect 2 submit --min-vram lots
has err '--min-vram "lots"'
expect 2 submit --time-limit soon
has err '--time-limit "soon"'
expect 2 submit --priority 99
has err '"priority" is 99, outside 0..9'
expect 2 submit --priority high
has err '--priority "high"'
expect 2 submit --max-attempts 0
has err '"max_attempts" is 0'
expect 2 submit --kind 'Not A Kind'
has err 'kind "Not A Kind"'
expect 2 submit --payload '{"x":'
has err "--payload is not JSON"
expect 2 submit --payload "@$TMP/nonexistent.json"
has err "--payload @$TMP/nonexistent.json"
expect 2 submit --out r.jsonl
has err "--out needs --file and --wait"
expect 2 submit extra
has err 'unexpected argument "extra"'
expect 2 submit --bogus
has err "unknown option --bogus"
expect 2 submit --kind
has err "needs a value"
expect 2 cancel --json 5
has err "unknown option --json"

# ---- a JSONL file is checked line by line before anything is sent --------------------------
cat >"$TMP/jobs.jsonl" <<'EOF'
{"kind": "echo", "payload": {"i": 1}}
{"kind": "echo", "payload":

{"kind": "echo", "priority": 99}
{"kind": "echo", "colour": "red"}
{"kind": "echo", "min_vram": "24G", "time_limit": "30s"}
[1, 2]
EOF
port=$(free_port) || { echo "FAIL: no free port" >&2; exit 1; }
expect 2 --broker "tcp://127.0.0.1:$port" --timeout 300ms submit --file "$TMP/jobs.jsonl"
has err "$TMP/jobs.jsonl:2: not JSON"
has err "$TMP/jobs.jsonl:4: \"priority\" is 99, outside 0..9"
has err "$TMP/jobs.jsonl:5: unknown job field \"colour\""
has err "$TMP/jobs.jsonl:7: a job must be a JSON object"
has err "4 invalid lines"
has err "nothing was sent"
grep -q ":1:\|:3:\|:6:" "$TMP/err" && fail "good or blank lines reported as bad"
[ -s "$TMP/out" ] && fail "ids printed for a refused file"
: >"$TMP/empty.jsonl"
expect 2 submit --file "$TMP/empty.jsonl"
has err "holds no jobs"
expect 2 submit --file "$TMP/nonexistent.jsonl"
has err "cannot open $TMP/nonexistent.jsonl"
printf '{"kind": "echo"}\n' >"$TMP/one.jsonl"
expect 2 submit --file "$TMP/one.jsonl" --idem k
has err "--idem names one job"

# ---- an unreachable broker: exit 3 and the exact text ----------------------------------------
ep="tcp://127.0.0.1:$port"
for args in "ping" "status 1" "wait 1" "result 1" "cancel 1" "jobs" "nodes" "explain 1" \
            "stats" "submit --kind echo"; do
    # shellcheck disable=SC2086  # the arguments are meant to split
    expect 3 --broker "$ep" --timeout 300ms $args
    has err "gridq: no broker answered at $ep within 0.3 s: is gridq-broker running?"
done
expect 3 --broker "$ep" --timeout 300ms submit --file "$TMP/one.jsonl" --wait
has err "no broker answered at $ep within 0.3 s"
GRIDQ_BROKER="$ep" expect 3 --timeout 1s ping
has err "no broker answered at $ep within 1 s: is gridq-broker running?"
start=$(date +%s%N)
expect 3 --broker "$ep" --timeout 500ms ping
took_ms=$((($(date +%s%N) - start) / 1000000))
[ "$took_ms" -lt 3000 ] || fail "a 500 ms timeout took $took_ms ms"

# ---- configuration errors ----------------------------------------------------------------------
expect 2 --broker "nonsense://x" ping
has err 'bad broker endpoint "nonsense://x"'
expect 2 --broker "$ep" --cert "$TMP/me.secret" --server-cert "$TMP/broker.pub" ping
has err "cannot load certificate $TMP/me.secret"
expect 2 --broker "$ep" --cert "$TMP/me.secret" ping
has err "CURVE needs both"

if [ "$failures" -gt 0 ]; then
    echo "test_cli_offline: $failures failure(s)" >&2
    exit 1
fi
echo "test_cli_offline: OK"
