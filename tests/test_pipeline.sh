#!/usr/bin/env bash
# test_pipeline.sh — pipelines in one file through the CLI (issue 18) against a real broker and a
# CPU worker. A diamond a -> b, c -> d in one JOBS.jsonl (names, "after_ok" naming earlier
# lines, "inputs": "after") runs in order (from STATUS's times) and d's payload holds b's and
# c's results; a child of an array gets the elements' results, in index order (inputs too large
# to carry fail the child, saying so); with c failing,
# d ends cancelled with the reason, and `gridq retry` of c then runs c and d again (the same
# ids) and completes the pipeline without running a or b again; a cycle, an unknown name, a name
# given twice and a name used before its line are refused with the lines named, before anything
# is sent.
# Bounded (90 s); needs build/bin/{gridq,gridq-broker,gridq-worker} ($GQ_BIN) and jq, else
# exits 77 (skipped).
GQ_TEST=pipeline
GQ_TEST_SECONDS=90
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

field () {
    timeout 10 "$BIN/gridq" --broker "$EP" status "$1" --json | jq -c ".$2"
}
state () { field "$1" state | tr -d '"'; }
is_state () { [ "$(state "$1")" = "$2" ]; }

start_broker --durability normal
# step: answers its payload after a moment; flaky: fails while $TMP/fail exists.
"$BIN/gridq-worker" --broker "$EP" --name w1 --backend cpu --slots 4 \
    --handler 'step=sleep 0.1; cat' \
    --handler "flaky=if [ -e $TMP/fail ]; then exit 1; fi; cat" >"$TMP/worker.log" 2>&1 &
PIDS+=("$!")

# ---- a diamond in one file ---------------------------------------------------------------------
cat >"$TMP/diamond.jsonl" <<'X'
{"name": "a", "kind": "step", "payload": {"step": "a"}}
{"name": "b", "kind": "step", "payload": {"step": "b"}, "after_ok": ["a"]}
{"name": "c", "kind": "step", "payload": {"step": "c"}, "after_ok": ["a"]}
{"name": "d", "kind": "step", "payload": {"step": "d"}, "after_ok": ["b", "c"], "inputs": "after"}
X
gq 0 submit --file "$TMP/diamond.jsonl" --wait
read -r A B C D < <(head -n 4 "$TMP/out" | tr '\n' ' ')
[ "$B" = $((A + 1)) ] && [ "$D" = $((A + 3)) ] || fail "ids: $(head -n 4 "$TMP/out")"
for pair in "$A $B" "$A $C" "$B $D" "$C $D"; do
    # shellcheck disable=SC2086
    after $pair
done
[ "$(field "$D" result.inputs)" = '{"b":{"step":"b"},"c":{"step":"c"}}' ] ||
    fail "d's inputs: $(field "$D" result)"
step "diamond in one file: in order, d got b's and c's results"

# ---- an array as a parent with inputs: its elements' results, in index order --------------------
cat >"$TMP/sweep.jsonl" <<'X'
{"name": "seed", "kind": "step", "payload": {"seed": 7}}
{"name": "sweep", "kind": "step", "array": "0-6:3", "payload": {"p": 1}, "after_ok": ["seed"]}
{"name": "merge", "kind": "step", "after_ok": ["sweep"], "inputs": "after"}
X
gq 0 submit --file "$TMP/sweep.jsonl" --wait --out "$TMP/sweep.out"
read -r SEED S M < <(tr '\n' ' ' <"$TMP/out")
grep -qF "5 jobs: 5 done, 0 failed" "$TMP/err" || fail "the summary: $(cat "$TMP/err")"
# --out: a line for each job, each element's with its array and index (its payload as it ran).
[ "$(wc -l <"$TMP/sweep.out")" = 5 ] || fail "--out has $(wc -l <"$TMP/sweep.out") lines"
got=$(jq -c 'select(.array) | [.id - .array.id, .array.index, .payload.array_index, .state]' \
    "$TMP/sweep.out" | sort | tr '\n' ' ')
[ "$got" = '[1,0,0,"done"] [2,3,3,"done"] [3,6,6,"done"] ' ] || fail "--out's elements: $got"
[ "$(jq -c 'select(.array) | .array.id' "$TMP/sweep.out" | sort -u)" = "$S" ] ||
    fail "--out's array ids: $(jq -c .array "$TMP/sweep.out")"
others=$(jq -c 'select(.array | not) | .id' "$TMP/sweep.out" | sort -n | tr '\n' ' ')
[ "$others" = "$SEED $M " ] || fail "--out's other lines: $others"
step "submit --file --wait --out waits for each element of an array line, one line each"
want='[{"array_index":0,"p":1},{"array_index":3,"p":1},{"array_index":6,"p":1}]'
[ "$(field "$M" result.inputs.sweep)" = "$want" ] ||
    fail "merge's inputs: $(field "$M" result)"
for element in $((S + 1)) $((S + 2)) $((S + 3)); do
    after "$element" "$M"
done
step "a child of an array gets the elements' results as a JSON array, in index order"

# ---- inputs too large for a JOB message: the child fails, saying so ------------------------------
{ printf '{"big": "'; head -c 2100000 /dev/zero | tr '\0' x; printf '"}'; } >"$TMP/big.json"
gq 0 submit --kind echo --payload @"$TMP/big.json"
P1=$(cat "$TMP/out")
gq 0 submit --kind echo --payload @"$TMP/big.json"
P2=$(cat "$TMP/out")
echo "{\"kind\": \"echo\", \"after_ok\": [$P1, $P2], \"inputs\": \"after\"}" >"$TMP/fat.jsonl"
gq 1 submit --file "$TMP/fat.jsonl" --wait
F=$(head -n 1 "$TMP/out")
is_state "$F" failed || fail "the child of two 2 MB results is $(state "$F")"
field "$F" error | grep -q 'results (\\"inputs\\") is 42000[0-9]* bytes, past the' ||
    fail "its error: $(field "$F" error)"
step "inputs too large to carry to a worker fail the child with the reason"

# ---- c fails: d is cancelled with the reason; retry completes it ---------------------------------
sed -e 's/"step", "payload": {"step": "c"}/"flaky", "max_attempts": 1, "payload": {"step": "c"}/' \
    "$TMP/diamond.jsonl" >"$TMP/failing.jsonl"
grep -q flaky "$TMP/failing.jsonl" || fail "the failing file has no flaky line"
touch "$TMP/fail"
gq 1 submit --file "$TMP/failing.jsonl" --wait
read -r A2 B2 C2 D2 < <(head -n 4 "$TMP/out" | tr '\n' ' ')
is_state "$C2" failed || fail "c is $(state "$C2")"
is_state "$D2" cancelled || fail "d is $(state "$D2")"
[ "$(field "$D2" error)" = "\"dependency $C2 failed\"" ] || fail "d's error: $(field "$D2" error)"
is_state "$B2" done || fail "b is $(state "$B2")"
step "c failing cancels d with the reason"

rm "$TMP/fail"
gq 0 retry "$C2"
[ "$(cat "$TMP/out")" = "$C2 queued again
$D2 queued again" ] || fail "retry printed: $(cat "$TMP/out")"
gq 0 wait "$D2"
is_state "$C2" done || fail "c is $(state "$C2") after retry"
[ "$(field "$D2" result.inputs)" = '{"b":{"step":"b"},"c":{"step":"c"}}' ] ||
    fail "d's inputs after retry: $(field "$D2" result)"
after "$C2" "$D2"
[ "$(field "$C2" attempts)" = 2 ] || fail "c's attempts: $(field "$C2" attempts)"
for kept in "$A2" "$B2"; do
    [ "$(field "$kept" attempts)" = 1 ] || fail "job $kept ran again"
done
gq 0 retry "$A2"
grep -qF "$A2 is done: nothing to retry" "$TMP/out" || fail "retry of a done job: $(cat "$TMP/out")"
step "gridq retry runs c and the d it cancelled again (same ids), not a or b: the pipeline completes"

# ---- an array's failed elements ------------------------------------------------------------------
touch "$TMP/fail"
gq 0 submit --array '0-2%2' --kind flaky --max-attempts 1 --payload '{"n": 1}' --quiet
R=$(cat "$TMP/out")
gq 1 wait "$R"
[ "$(field "$R" array.counts.failed)" = 3 ] || fail "array $R: $(field "$R" array.counts)"
rm "$TMP/fail"
gq 0 retry "$R"
[ "$(grep -c 'queued again' "$TMP/out")" = 3 ] || fail "retry of the array: $(cat "$TMP/out")"
gq 0 wait "$R"
[ "$(field "$R" array.counts.done)" = 3 ] || fail "array $R after retry: $(field "$R" array.counts)"
step "gridq retry ARRAY runs its failed elements again"

# ---- an array as a parent: its failure cancels the child; retry of the array runs both --------
touch "$TMP/fail"
gq 0 submit --array '0-1' --kind flaky --max-attempts 1 --quiet
R2=$(cat "$TMP/out")
gq 0 submit --kind echo --payload '{"merge": 1}' --after-ok "$R2"
M=$(cat "$TMP/out")
poll 100 is_state "$M" cancelled || fail "the child of a failed array is $(state "$M")"
[ "$(field "$M" error)" = "\"dependency $R2 failed\"" ] || fail "its error: $(field "$M" error)"
rm "$TMP/fail"
gq 0 retry "$R2"
grep -qF "$M queued again" "$TMP/out" || fail "retry of the array: $(cat "$TMP/out")"
gq 0 wait "$M"
after "$((R2 + 2))" "$M"
step "an array's failure cancels its after-ok child; retry of the array runs the child after it"

# ---- refusals, before anything is sent ----------------------------------------------------------
jobs_before=$(gq 0 stats --json; jq '.jobs | add' "$TMP/out")
printf '%s\n' '{"name": "a", "after_ok": ["c"]}' '{"name": "b", "after_ok": ["a"]}' \
    '{"name": "c", "after_ok": ["b"]}' >"$TMP/cycle.jsonl"
gq 2 submit --file "$TMP/cycle.jsonl"
grep -qF "cycle.jsonl: a cycle: a (line 1) needs c (line 3) needs b (line 2) needs a" "$TMP/err" ||
    fail "cycle: $(cat "$TMP/err")"
printf '%s\n' '{"name": "a"}' '{"name": "b", "after_ok": ["a", "zz"]}' >"$TMP/unknown.jsonl"
gq 2 submit --file "$TMP/unknown.jsonl"
grep -qF 'unknown.jsonl:2: "after_ok" names "zz", which no line of the file gives as its "name"' \
    "$TMP/err" || fail "unknown name: $(cat "$TMP/err")"
printf '%s\n' '{"name": "a", "after_ok": ["b"]}' '{"name": "b"}' >"$TMP/later.jsonl"
gq 2 submit --file "$TMP/later.jsonl"
grep -qF 'later.jsonl:1: names "b", given later (line 2)' "$TMP/err" ||
    fail "used before its line: $(cat "$TMP/err")"
printf '%s\n' '{"name": "a"}' '{"name": "a"}' >"$TMP/twice.jsonl"
gq 2 submit --file "$TMP/twice.jsonl"
grep -qF 'twice.jsonl:2: name "a" is given twice (line 1 first)' "$TMP/err" ||
    fail "twice: $(cat "$TMP/err")"
gq 0 stats --json
[ "$(jq '.jobs | add' "$TMP/out")" = "$jobs_before" ] || fail "a refused file made jobs"
step "a cycle, an unknown name, a name used before its line and a name twice are refused"
echo "PASS"
