#!/usr/bin/env bash
# test_help.sh — every program's --help (and every gridq command's) exits 0 and prints a usage
# line; an unknown option exits non-zero with a message on stderr. Programs that are not built
# are skipped by name. Each run is bounded (a program that ignored the option and started
# serving would be stopped by the timeout and fail the test), in a folder of its own so that
# nothing is left behind.
set -u
BIN=${GQ_BIN:?GQ_BIN names the folder of the gridq programs}
BIN=$(cd "$BIN" && pwd) || exit 1
TMP=$(mktemp -d /tmp/gq_help.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
unset GRIDQ_BROKER GRIDQ_CERT GRIDQ_SERVER_CERT
# A broker endpoint where nothing listens: a command that tried to connect would time out
# quickly rather than reach a real broker.
export GRIDQ_BROKER=tcp://127.0.0.1:9

failures=0
checked=0
fail () {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# check_help NAME ARGS...: "ARGS --help" exits 0 with "usage" (any case) on stdout.
check_help () {
    local name=$1
    shift
    timeout -k 2 10 "$@" --help >out 2>err
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "$name --help exited $rc: $(head -c 300 err)"
    elif ! grep -qi usage out; then
        fail "$name --help printed no usage line: $(head -c 300 out)"
    fi
    checked=$((checked + 1))
}

# check_unknown NAME ARGS...: "ARGS --no-such-option" exits non-zero with a message on stderr.
check_unknown () {
    local name=$1
    shift
    timeout -k 2 10 "$@" --no-such-option >out 2>err
    local rc=$?
    if [ $rc -eq 0 ]; then
        fail "$name --no-such-option exited 0"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        fail "$name --no-such-option did not exit (ran until the timeout)"
    elif [ ! -s err ]; then
        fail "$name --no-such-option exited $rc without a message on stderr"
    elif ! grep -q -- "no-such-option\|unknown\|unrecognized\|usage\|Usage" err; then
        fail "$name --no-such-option: the message does not say what is wrong: $(head -c 300 err)"
    fi
    checked=$((checked + 1))
}

for program in gridq-broker gridq-worker gridq gridq-gateway gridq-top gridq-keygen gridq-model \
               gridq-bench gridq-bench-engine gridq-bench-match gridq-bench-affinity; do
    if [ ! -x "$BIN/$program" ]; then
        echo "skip: $program is not built"
        continue
    fi
    check_help "$program" "$BIN/$program"
    check_unknown "$program" "$BIN/$program"
done

# Each gridq command, as listed by gridq --help (the lines under "Commands:").
if [ -x "$BIN/gridq" ]; then
    commands=$("$BIN/gridq" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit }
                                          on && NF { print $1 }')
    if [ -z "$commands" ]; then
        fail "gridq --help lists no commands"
    fi
    for command in $commands; do
        check_help "gridq $command" "$BIN/gridq" "$command"
        check_unknown "gridq $command" "$BIN/gridq" "$command"
    done
fi

echo "help: $checked checks, $failures failed"
[ $checked -gt 0 ] && [ $failures -eq 0 ]
