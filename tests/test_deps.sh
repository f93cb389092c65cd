#!/usr/bin/env bash
# test_deps.sh — dependencies through the CLI (issue 18): --after-ok, --after-any, --after-fail
# against a real broker and a CPU worker. A diamond a -> b, c -> d runs in order (each child
# started after its parents finished, from STATUS's times); a waiting job shows as "waiting" in
# jobs, stats and explain, and ends cancelled with the reason when its parent is cancelled; a
# parent that fails cancels its after-ok child at once and the cascade reaches that child's own
# child; after-any runs after a failure; after-fail runs only on a failure; a parent that ended
# before the child came counts at once; an unknown id is refused naming the field and the id.
# Bounded (90 s); needs build/bin/{gridq,gridq-broker,gridq-worker} ($GQ_BIN) and jq, else
# exits 77 (skipped).
GQ_TEST=deps
GQ_TEST_SECONDS=90
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

# field ID NAME: one field of the job's STATUS JSON; state ID: its state.
field () {
    timeout 10 "$BIN/gridq" --broker "$EP" status "$1" --json | jq -r ".$2"
}
state () { field "$1" state; }
is_state () { [ "$(state "$1")" = "$2" ]; }
# submit ARGS...: submits one job, its id in $ID.
submit () {
    gq 0 submit "$@"
    ID=$(head -n 1 "$TMP/out")
}

start_broker --durability normal

# ---- a diamond: a -> b, c -> d -----------------------------------------------------------------
submit --kind sleep --payload '{"ms": 100}'
A=$ID
submit --kind sleep --payload '{"ms": 100}' --after-ok "$A"
B=$ID
submit --kind echo --payload '{"c": 1}' --after-ok "$A"
C=$ID
submit --kind echo --payload '{"d": 1}' --after-ok "$B,$C"
D=$ID
gq 0 jobs --state waiting --json
[ "$(jq -r 'map(.id) | sort | join(",")' "$TMP/out")" = "$B,$C,$D" ] ||
    fail "waiting jobs: $(cat "$TMP/out"), expected $B,$C,$D"
gq 0 explain "$D" --json
jq -e --argjson b "$B" --argjson c "$C" \
    '.state == "waiting" and (.waiting_for | map(.id)) == [$b, $c]
     and (.waiting_for | all(.condition == "after_ok"))' "$TMP/out" >/dev/null ||
    fail "explain of a waiting job: $(cat "$TMP/out")"
gq 0 explain "$D"
grep -qF "waiting for: job $B (after_ok, now waiting), job $C (after_ok, now waiting)" \
    "$TMP/out" || fail "explain's text: $(cat "$TMP/out")"
gq 0 explain "$B" --json
jq -e --argjson a "$A" '.waiting_for == [{"id": $a, "condition": "after_ok", "state": "queued"}]' \
    "$TMP/out" >/dev/null || fail "explain of $B: $(cat "$TMP/out")"
# The worker comes now: until then a is queued, and the rest waits for it.
"$BIN/gridq-worker" --broker "$EP" --name w1 --backend cpu --slots 4 \
    --handler 'fail=exit 1' >"$TMP/worker.log" 2>&1 &
PIDS+=("$!")
gq 0 wait "$D"
for pair in "$A $B" "$A $C" "$B $D" "$C $D"; do
    # shellcheck disable=SC2086
    after $pair
done
step "diamond: b and c after a, d after both"

# ---- waiting shows in stats; cancelling the parent cancels the child ---------------------------
submit --kind sleep --payload '{"ms": 20000}'
X=$ID
submit --kind echo --after-ok "$X"
Y=$ID
gq 0 stats --json
jq -e '.jobs.waiting == 1' "$TMP/out" >/dev/null || fail "stats: $(cat "$TMP/out")"
gq 0 stats
grep -qE '^jobs +waiting 1,' "$TMP/out" || fail "stats text: $(cat "$TMP/out")"
gq 0 cancel "$X"
poll 50 is_state "$Y" cancelled || fail "job $Y is $(state "$Y") after its parent was cancelled"
[ "$(field "$Y" error)" = "dependency $X failed (it was cancelled)" ] ||
    fail "job $Y's error: $(field "$Y" error)"
step "a cancelled parent cancels its after-ok child, with the reason"

# ---- a parent that fails: the after-ok chain is cancelled, after-any and after-fail run -------
submit --kind sleep --payload '{"ms": 200}'
P=$ID
submit --kind fail --max-attempts 1 --after-ok "$P"
F=$ID
submit --kind echo --after-ok "$F"
G1=$ID
submit --kind echo --after-ok "$G1"
G2=$ID
submit --kind echo --payload '{"any": 1}' --after-any "$F"
ANY=$ID
submit --kind echo --payload '{"fail": 1}' --after-fail "$F"
ONFAIL=$ID
submit --kind echo --after-fail "$P"
NOFAIL=$ID
gq 1 wait "$F"
poll 50 is_state "$G2" cancelled || fail "job $G2 is $(state "$G2"), expected cancelled"
[ "$(field "$G1" error)" = "dependency $F failed" ] || fail "job $G1's error: $(field "$G1" error)"
[ "$(field "$G2" error)" = "dependency $G1 failed (it was cancelled)" ] ||
    fail "job $G2's error: $(field "$G2" error)"
[ "$(field "$G1" started_at)" = null ] || fail "job $G1 started"
gq 0 wait "$ANY" "$ONFAIL"
after "$F" "$ANY"
after "$F" "$ONFAIL"
is_state "$NOFAIL" cancelled || fail "job $NOFAIL is $(state "$NOFAIL"), expected cancelled"
[ "$(field "$NOFAIL" error)" = "dependency $P succeeded" ] ||
    fail "job $NOFAIL's error: $(field "$NOFAIL" error)"
step "a failure cancels the after-ok chain; after-any and after-fail run; after-fail of a success is cancelled"

# ---- parents that ended before the child came count at once ------------------------------------
submit --kind echo --after-ok "$A" --after-any "$P" --after-fail "$F" --wait
gq 0 submit --kind echo --after-ok "$F"
LATE=$(head -n 1 "$TMP/out")
poll 50 is_state "$LATE" cancelled || fail "job $LATE is $(state "$LATE"), expected cancelled"
step "ended parents count at submission"

# ---- refusals ------------------------------------------------------------------------------------
gq any submit --kind echo --after-ok "$A,999999"
[ "$RC" != 0 ] || fail "a dependency on an unknown id was accepted"
grep -qF '"after_ok": no job 999999' "$TMP/err" || fail "refusal: $(cat "$TMP/err")"
gq any submit --kind echo --after-fail 999999
grep -qF '"after_fail": no job 999999' "$TMP/err" || fail "refusal: $(cat "$TMP/err")"
gq 2 submit --kind echo --after-ok 12,x
grep -qF -- '--after-ok "12,x": "x" is not a job id' "$TMP/err" || fail "usage: $(cat "$TMP/err")"
gq 2 submit --kind echo --after-ok "$A" --after-any "$A"
grep -qF "job $A is named twice" "$TMP/err" || fail "twice: $(cat "$TMP/err")"
gq 2 jobs --state sleeping
grep -qF 'waiting, queued' "$TMP/err" || fail "jobs --state: $(cat "$TMP/err")"
step "unknown ids, bad ids and an id named twice are refused"
echo "PASS"
