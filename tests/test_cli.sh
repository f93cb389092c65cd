#!/usr/bin/env bash
# test_cli.sh — the gridq command-line contract against the real programs: a broker on a
# loopback port of its own, two CPU workers, and every gridq command, including its failure
# paths. Everything it starts is stopped by PID on exit; the whole run is bounded (120 s).
# Needs build/bin/{gridq,gridq-broker,gridq-worker} ($GQ_BIN) and jq; exits 77 (skipped)
# without them.
GQ_TEST=cli
GQ_TEST_SECONDS=120
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

has () {
    grep -qF -- "$2" "$TMP/$1" || fail "$1 of the last command lacks \"$2\""
}

# ---- a broker on a free port ------------------------------------------------------------------
start_broker

for name in w1 w2; do
    "$BIN/gridq-worker" --broker "$EP" --name "$name" --backend cpu --slots 2 \
        >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
done
two_online () {
    timeout 10 "$BIN/gridq" --broker "$EP" --timeout 2s nodes --json 2>/dev/null |
        jq -e '[.[] | select(.status == "online" or .status == "busy")] | length == 2' \
            >/dev/null 2>&1
}
poll 150 two_online || fail "two workers did not come online"

# ---- ping, nodes -------------------------------------------------------------------------------
gq 0 ping
has out "pong from $EP"
gq 0 nodes
has out "NAME"
has out "VRAM(free/total)"
has out "w1"
has out "w2"
gq 0 nodes --json
jqt out 'type == "array" and length == 2 and ([.[].name] | sort == ["w1", "w2"])'

# ---- submit one job and wait: the id first, then the result ---------------------------------
gq 0 submit --kind echo --payload '{"x": 42}' --wait
[ "$(wc -l <"$TMP/out")" = 2 ] || fail "submit --wait printed $(wc -l <"$TMP/out") lines"
ID1=$(head -n 1 "$TMP/out")
[[ "$ID1" =~ ^[0-9]+$ ]] || fail "submit printed \"$ID1\" as its first line, not an id"
tail -n 1 "$TMP/out" >"$TMP/result"
jqt result '. == {"x": 42}'

gq 0 submit --kind echo --payload '{"y": "z"}' --priority 7 --wait --json
ID2=$(head -n 1 "$TMP/out")
tail -n 1 "$TMP/out" >"$TMP/job"
jqt job ".id == $ID2 and .state == \"done\" and .payload == {\"y\": \"z\"}"
jqt job '.result == {"y": "z"} and .priority == 7 and (.node == "w1" or .node == "w2")'

# Payload from a file; an idem key returns the first job's id.
echo '{"from": "file"}' >"$TMP/payload.json"
gq 0 submit --payload "@$TMP/payload.json" --idem cli-test-key
ID3=$(head -n 1 "$TMP/out")
gq 0 submit --payload "@$TMP/payload.json" --idem cli-test-key
[ "$(head -n 1 "$TMP/out")" = "$ID3" ] || fail "a repeated idem key got a new id"

# ---- submit a file, wait, write every finished job ---------------------------------------------
for i in $(seq 1 60); do
    echo "{\"kind\": \"echo\", \"priority\": $((i % 10)), \"payload\": {\"i\": $i}}"
done >"$TMP/jobs.jsonl"
gq 0 submit --file "$TMP/jobs.jsonl" --wait --out "$TMP/results.jsonl"
cp "$TMP/out" "$TMP/ids"
cp "$TMP/err" "$TMP/summary"
[ "$(wc -l <"$TMP/ids")" = 60 ] || fail "submit --file printed $(wc -l <"$TMP/ids") ids for 60 jobs"
grep -qvE '^[0-9]+$' "$TMP/ids" && fail "submit --file printed something other than ids"
[ "$(sort -u "$TMP/ids" | wc -l)" = 60 ] || fail "submit --file printed duplicate ids"
[ "$(wc -l <"$TMP/results.jsonl")" = 60 ] || fail "--out holds $(wc -l <"$TMP/results.jsonl") lines"
# Every line: a done job with its payload and result; together they are exactly our ids.
jq -e -s 'all(.state == "done" and .result == .payload and (.payload.i | type) == "number")' \
    "$TMP/results.jsonl" >/dev/null || fail "--out has a job that is not done or lacks payload"
jq -r '.id' "$TMP/results.jsonl" | sort -n >"$TMP/out_ids"
sort -n "$TMP/ids" | diff -q - "$TMP/out_ids" >/dev/null || fail "--out ids differ from the ids"
# Input order: the n-th id printed is the job of the n-th line.
nth=$(sed -n 17p "$TMP/ids")
jq -e -s "map(select(.id == $nth))[0].payload.i == 17" "$TMP/results.jsonl" >/dev/null ||
    fail "ids are not printed in input order"
# Not a terminal: no progress line, one summary line.
[ "$(wc -l <"$TMP/summary")" = 1 ] || fail "stderr has $(wc -l <"$TMP/summary") lines, not 1"
grep -q $'\r' "$TMP/summary" && fail "progress drawn although stderr is not a terminal"
grep -qE '^60 jobs: 60 done, 0 failed in [0-9.]+ s$' "$TMP/summary" ||
    fail "summary is \"$(cat "$TMP/summary")\""
FIRST=$(head -n 1 "$TMP/ids")
LAST=$(tail -n 1 "$TMP/ids")

# ---- status, wait, result ----------------------------------------------------------------------
gq 0 status "$ID1" "$FIRST"
has out "ID"
has out "STATE"
has out "ATTEMPTS"
grep -qE "^$ID1 +done +echo" "$TMP/out" || fail "status table lacks a done row for $ID1"
gq 0 status --json "$ID1" "$FIRST" "$ID1"
[ "$(wc -l <"$TMP/out")" = 2 ] || fail "status --json printed $(wc -l <"$TMP/out") lines for 2 jobs"
head -n 1 "$TMP/out" >"$TMP/job"
jqt job ".id == $ID1 and .state == \"done\" and .kind == \"echo\" and .attempts == 1"
jqt job '(.submitted_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z$"))'
gq 1 status 999999999
has err "no job 999999999"

gq 0 wait "$ID1" "$FIRST" "$LAST"
has out "$ID1 done"
has out "$LAST done"
gq 0 wait --json "$ID1"
jqt out ".id == $ID1 and .state == \"done\""

gq 0 result "$ID1"
jqt out '. == {"x": 42}'
gq 0 result --json "$ID1"
jqt out ".id == $ID1 and .payload == {\"x\": 42} and (.attempts_detail | length) == 1"
gq 4 result 999999999
has err "NOT_FOUND"

# ---- a job no worker can run stays queued: result, explain, jobs, cancel -------------------------
gq 0 submit --kind nosuchkind --payload '{}'
QID=$(head -n 1 "$TMP/out")
gq 0 status --json "$QID"
jqt out '.state == "queued"'
gq 1 result "$QID"
has err "queued"
has err "gridq wait $QID"
gq 0 explain "$QID"
has out "job $QID"
has out "w1"
has out "w2"
has out "chosen: none"
gq 0 explain --json "$QID"
jqt out ".id == $QID and .node == null and (.nodes | length) == 2"
gq 4 explain 999999999
gq 0 jobs --state queued --json
jqt out "type == \"array\" and any(.[]; .id == $QID) and all(.[]; .state == \"queued\")"
gq 0 jobs --state "done" --limit 5 --json
jqt out 'length == 5 and all(.[]; .state == "done")'
gq 0 jobs --limit 3
[ "$(wc -l <"$TMP/out")" = 4 ] || fail "jobs --limit 3 printed $(wc -l <"$TMP/out") lines"
has out "SUBMITTED"
gq 1 wait "$QID" --max-wait 300ms
has err "1 of 1 jobs not finished"

gq 0 cancel "$QID" "$ID1"
has out "$QID cancelled"
has out "$ID1 already done"
gq 1 cancel 999999999
has err "no job 999999999"
gq 1 wait "$QID"
has out "$QID cancelled"
gq 0 status --json "$QID"
jqt out '.state == "cancelled"'

# ---- a job that fails: exit 1, its error and every attempt's reason ----------------------------
gq 1 submit --kind matmul --payload '{"a": "not a matrix"}' --max-attempts 2 --wait
FID=$(head -n 1 "$TMP/out")
has err "job $FID failed"
has err "attempt 1 on"
gq 0 status "$FID"
has out "failed"
has out "job $FID failed"
has out "attempt 2 on"
gq 0 status --json "$FID"
jqt out '.state == "failed" and .attempts == 2 and (.attempts_detail | length) == 2'
gq 1 result "$FID"
has err "failed"

# A file with a failing line: exit 1, the summary counts it.
printf '%s\n' '{"kind": "echo", "payload": {"ok": true}}' \
    '{"kind": "matmul", "payload": {"a": 1}, "max_attempts": 1}' >"$TMP/mixed.jsonl"
gq 1 submit --file "$TMP/mixed.jsonl" --wait --out "$TMP/mixed.out"
grep -qE '^2 jobs: 1 done, 1 failed in' "$TMP/err" || fail "summary is \"$(cat "$TMP/err")\""
[ "$(wc -l <"$TMP/mixed.out")" = 2 ] || fail "--out of a mixed file lacks the failed job"

# ---- stats -----------------------------------------------------------------------------------
gq 0 stats --json
jqt out '[.jobs.queued, .jobs.running, .jobs.done, .jobs.failed, .jobs.cancelled] | all(type == "number")'
jqt out '[.nodes.online, .nodes.busy, .nodes.offline] | all(type == "number")'
jqt out '.jobs.done >= 63 and .jobs.failed >= 2 and .jobs.cancelled >= 1'
jqt out '.nodes.online + .nodes.busy == 2'
gq 0 stats
has out "queued"
has out "online"

# ---- bad input ---------------------------------------------------------------------------------
gq any submit --priority 99
[ "$RC" = 2 ] || [ "$RC" = 4 ] || fail "priority 99 exited $RC, expected 2 or 4"
[ -s "$TMP/out" ] && fail "a refused job printed an id"
has err '"priority" is 99, outside 0..9'
gq 2 submit --min-vram lots
has err "--min-vram"

# An unknown port: exit 3 and the text that says what to check.
for _ in $(seq 20); do
    nobody=$((20000 + RANDOM % 40000))
    port_in_use "$nobody" || break
done
timeout 20 "$BIN/gridq" --broker "tcp://127.0.0.1:$nobody" --timeout 1s ping >"$TMP/out" 2>"$TMP/err"
rc=$?
[ "$rc" = 3 ] || fail "an unknown broker port exited $rc, expected 3"
has err "no broker answered at tcp://127.0.0.1:$nobody within 1 s: is gridq-broker running?"

# ---- everything we started is still alive (no crash along the way) -----------------------------
for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || fail "process $pid died during the test"
done
echo "test_cli: OK"
