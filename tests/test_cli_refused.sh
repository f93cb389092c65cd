#!/usr/bin/env bash
# test_cli_refused.sh — gridq submit --file against a broker that refuses part of the file.
# A rate limit is gone through: chunks the broker refuses with RATE_LIMITED are sent again after
# its hint, even past --timeout, and every job runs. A per-client cap (--max-queued) that nothing
# frees ends the submission: gridq still waits for the jobs it had accepted (ids, --out, summary),
# then names the refused lines with the broker's reason and exits 4. Bounded (90 s); needs
# build/bin/{gridq,gridq-broker,gridq-worker} ($GQ_BIN) and jq, else exits 77 (skipped).
GQ_TEST=refused
GQ_TEST_SECONDS=90
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

has () {
    grep -qF -- "$2" "$TMP/$1" || fail "$1 of the last command lacks \"$2\""
}

# 3000 echo jobs after a blank line: job i is on line i + 1, and gridq sends chunks of 1000.
{
    echo
    for i in $(seq 1 3000); do
        echo "{\"kind\": \"echo\", \"payload\": {\"i\": $i}}"
    done
} >"$TMP/jobs.jsonl"

start_worker () {
    "$BIN/gridq-worker" --broker "$EP" --name w1 --backend cpu --slots 4 >"$TMP/worker.log" 2>&1 &
    PIDS+=("$!")
}

# ---- a rate limit: 1000 jobs/s with a burst of 1000; each chunk waits ~1 s, past --timeout -----
start_broker --rate 1000/s --burst 1000 --durability normal
start_worker
GQ_TIMEOUT=500ms gq 0 submit --file "$TMP/jobs.jsonl" --wait --out "$TMP/rated.jsonl"
[ "$(wc -l <"$TMP/out")" = 3000 ] || fail "printed $(wc -l <"$TMP/out") ids for 3000 jobs"
grep -qE '^3000 jobs: 3000 done, 0 failed in' "$TMP/err" || fail "summary: $(cat "$TMP/err")"
[ "$(wc -l <"$TMP/rated.jsonl")" = 3000 ] || fail "--out has $(wc -l <"$TMP/rated.jsonl") jobs"
gq 0 stats --json
jq -e '.rejected >= 2' "$TMP/out" >/dev/null || fail "the rate limit refused nothing: $(cat "$TMP/out")"
step "rate limit: every chunk went in after the broker's hints"

# ---- a cap of 1500 unfinished jobs and no worker yet: chunk 1 goes in, chunks 2 and 3 do not ---
stop_all
rm -f "$TMP"/gridq.db*
start_broker --max-queued 1500 --durability normal
timeout 60 "$BIN/gridq" --broker "$EP" --timeout 500ms submit --file "$TMP/jobs.jsonl" --wait \
    --out "$TMP/capped.jsonl" --rate-retries 1 >"$TMP/out" 2>"$TMP/err" &
CLI=$!
PIDS+=("$CLI")
# The ids come out once the submission is over: the accepted chunk's alone.
submitted () { [ "$(wc -l <"$TMP/out")" = 1000 ]; }
poll 300 submitted || fail "gridq printed $(wc -l <"$TMP/out") ids, expected 1000"
kill -0 "$CLI" 2>/dev/null || fail "gridq exited without waiting for the jobs it had accepted"
start_worker
exited () { ! kill -0 "$CLI" 2>/dev/null; }
poll 300 exited || fail "gridq did not finish waiting"
wait "$CLI"
RC=$?
[ "$RC" = 4 ] || fail "gridq exited $RC, expected 4 (the broker refused part of the file)"
grep -qE '^1000 jobs: 1000 done, 0 failed in' "$TMP/err" || fail "summary: $(cat "$TMP/err")"
has err "gridq: lines 1002-2001 were refused by the broker (RATE_LIMITED: this client has 1000 unfinished jobs and the limit is 1500"
has err "; their jobs were not submitted"
has err "gridq: lines 2002-3001 were not submitted either"
[ "$(wc -l <"$TMP/capped.jsonl")" = 1000 ] || fail "--out has $(wc -l <"$TMP/capped.jsonl") jobs"
jq -e -s 'all(.state == "done" and .result == .payload) and
          ([.[].payload.i] | sort == [range(1; 1001)])' "$TMP/capped.jsonl" >/dev/null ||
    fail "--out is not jobs 1..1000, done"
jq -r '.id' "$TMP/capped.jsonl" | sort -n | diff -q - <(sort -n "$TMP/out") >/dev/null ||
    fail "--out ids differ from the ids printed"
step "cap: the accepted chunk waited for and written, the refused lines named, exit 4"
