#!/usr/bin/env bash
# test_arrays.sh — job arrays through the CLI (issue 18) against a real broker and a CPU worker
# of 8 slots. An array 0-199%3 never has more than 3 elements running at once (from the
# attempts' start and end times in the store) and every element sees its own index (payload,
# GRIDQ_ARRAY_INDEX, GRIDQ_ARRAY_ID); submit prints the array id then the elements' ids (and
# --quiet the array id alone); status summarises an array, jobs --array lists its elements; wait
# waits for all its elements; jobs shows an array as one row (squeue's 41_[0-9], a bar whose
# cells follow its counts), --expand its elements under it, --json its summary, --state an array
# with an element in that state; cancel cancels every element not ended; an array id in
# --after-ok stands for all its elements; Slurm's spec forms give the right indexes; bad specs
# are refused.
# Bounded (120 s); needs build/bin/{gridq,gridq-broker,gridq-worker} ($GQ_BIN), jq and sqlite3,
# else exits 77 (skipped).
GQ_TEST=arrays
GQ_TEST_SECONDS=120
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"
command -v sqlite3 >/dev/null || { echo "SKIP: no sqlite3"; exit 77; }

sql () { sqlite3 -batch -cmd '.timeout 5000' "$TMP/gridq.db" "$@"; }
field () {
    timeout 10 "$BIN/gridq" --broker "$EP" status "$1" --json | jq -r ".$2"
}
done_count () { [ "$(field "$1" array.counts.done)" = "$2" ]; }

start_broker --durability normal
# idx: a handler that answers with what its environment says, after a moment (so that the
# elements overlap when nothing holds them back); third: fails the elements whose index is a
# multiple of 3.
"$BIN/gridq-worker" --broker "$EP" --name w1 --backend cpu --slots 8 \
    --handler 'idx=sleep 0.02; printf "{\"env_index\":%s,\"env_array\":%s}" "$GRIDQ_ARRAY_INDEX" "$GRIDQ_ARRAY_ID"' \
    --handler 'third=[ $((GRIDQ_ARRAY_INDEX % 3)) != 0 ] || exit 1; echo "{}"' \
    >"$TMP/worker.log" 2>&1 &
PIDS+=("$!")

# ---- 0-199%3: at most 3 running, each element its own index ------------------------------------
gq 0 submit --array '0-199%3' --kind idx --payload '{"x": 1}'
[ "$(wc -l <"$TMP/out")" = 201 ] || fail "submit printed $(wc -l <"$TMP/out") lines, expected 201"
A=$(head -n 1 "$TMP/out")
F=$(sed -n 2p "$TMP/out")
L=$(tail -n 1 "$TMP/out")
[ "$F" = $((A + 1)) ] && [ "$L" = $((A + 200)) ] || fail "element ids $F..$L after array $A"
gq 0 wait "$A"
[ "$(grep -c ' done$' "$TMP/out")" = 200 ] || fail "wait printed: $(head -5 "$TMP/out")"
# The runs of the array: its attempts' rows, and the job's own row for a job whose one attempt
# succeeded (that attempt has no row of its own). The most running at one time: at each start,
# the runs begun by then and not yet ended.
runs="with runs (s, e) as (select started_at, finished_at from attempts where job_id between $F
    and $L union all select started_at, finished_at from jobs j where id between $F and $L and
    not exists (select 1 from attempts a where a.job_id = j.id))"
peak=$(sql "$runs select max(c) from (select (select count(*) from runs b where b.s <= a.s and
    b.e > a.s) c from runs a)")
[ -n "$peak" ] && [ "$peak" -le 3 ] || fail "peak ${peak:-(none)}: elements of a %3 array ran at once"
[ "$(sql "$runs select count(*) from runs where e is not null")" = 200 ] ||
    fail "runs of the array: $(sql "$runs select count(*) from runs")"
own=$(sql "select count(*) from jobs where id between $F and $L and state = 2
    and json_extract(payload, '$.array_index') = id - $F and json_extract(payload, '$.x') = 1
    and json_extract(result, '$.env_index') = id - $F and json_extract(result, '$.env_array') = $A")
[ "$own" = 200 ] || fail "$own of 200 elements saw their own index and array"
[ "$(sql "select first || ' ' || count || ' ' || spec from arrays where id = $A")" = \
    "$F 200 0-199%3" ] || fail "arrays row: $(sql "select * from arrays")"
step "0-199%3: at most $peak running at once, every element its own index and array id"

gq 0 status "$A"
grep -qF "array $A (0-199%3): 200 elements, $F..$L: 200 done" "$TMP/out" ||
    fail "status: $(cat "$TMP/out")"
gq 0 status "$A" --json
jq -e '.array.counts.done == 200 and .array.limit == 3 and .state == "done"' "$TMP/out" \
    >/dev/null || fail "status --json: $(cat "$TMP/out")"
gq 0 jobs --array "$A" --state done --limit 5 --json
[ "$(jq -c 'map(.id)' "$TMP/out")" = "[$F,$((F + 1)),$((F + 2)),$((F + 3)),$((F + 4))]" ] ||
    fail "jobs --array: $(jq -c 'map(.id)' "$TMP/out")"
gq 0 jobs --array "$A" --limit 3
grep -qF "array $A (0-199%3): 200 elements" "$TMP/out" && [ "$(grep -c ' done ' "$TMP/out")" = 3 ] ||
    fail "jobs --array text: $(cat "$TMP/out")"
gq 1 jobs --array "$F"
grep -qF "$F is not an array" "$TMP/err" || fail "jobs --array of a job: $(cat "$TMP/err")"
step "status of an array summarises its elements; jobs --array lists them"

# ---- Slurm's forms, --quiet, and an array as a dependency --------------------------------------
gq 0 submit --array '1,3,10-20:5' --kind echo --quiet
[ "$(wc -l <"$TMP/out")" = 1 ] || fail "--quiet printed: $(cat "$TMP/out")"
B=$(cat "$TMP/out")
gq 0 submit --kind echo --payload '{"after": 1}' --after-ok "$B" --wait
CHILD_LAST=$(sql "select max(id) from jobs")
[ "$(sql "select group_concat(json_extract(result, '$.array_index')) from
    (select result from jobs where id between $((B + 1)) and $((B + 5)) order by id)")" = \
    "1,3,10,15,20" ] || fail "indexes of 1,3,10-20:5: $(sql "select id, result from jobs where id > $B")"
late=$(sql "select count(*) from jobs e, jobs c where c.id = $CHILD_LAST and
    e.id between $((B + 1)) and $((B + 5)) and c.started_at < e.finished_at")
[ "$late" = 0 ] || fail "the after-ok child of array $B started before $late of its elements ended"
step "1,3,10-20:5 gives its indexes; --quiet; --after-ok ARRAY waits for every element"

# ---- jobs: an array is one row with its progress -------------------------------------------------
gq 0 submit --array '0-9' --kind third --max-attempts 1 --quiet
D=$(cat "$TMP/out")
gq 1 wait "$D"
[ "$(grep -c ' failed' "$TMP/out")" = 4 ] || fail "wait of 0-9 (third): $(cat "$TMP/out")"
# cells NAME CHAR: how many CHAR the bar of array row NAME has (20 cells: 2 an element here).
cells () {
    grep -F "$1 " "$TMP/out" | grep -oE '\[[#!x>.-]{20}\] [0-9]+/[0-9]+' | tr -cd "$2" | wc -c
}
gq 0 jobs
# Newest first: D, the after-ok child, B, A; one row each, none for an element.
[ "$(wc -l <"$TMP/out")" = 5 ] || fail "jobs printed $(wc -l <"$TMP/out") lines, expected 5"
[ "$(sed -n 2p "$TMP/out" | cut -d' ' -f1)" = "${D}_[0-9]" ] &&
    [ "$(sed -n 3p "$TMP/out" | cut -d' ' -f1)" = "$CHILD_LAST" ] &&
    [ "$(sed -n 4p "$TMP/out" | cut -d' ' -f1)" = "${B}_[1,3,10-20:5]" ] &&
    [ "$(sed -n 5p "$TMP/out" | cut -d' ' -f1)" = "${A}_[0-199%3]" ] || fail "jobs rows"
grep -F "${D}_[0-9] " "$TMP/out" | grep -qE ' failed +third .*\] 10/10: 6 done, 4 failed$' ||
    fail "the row of array $D: $(grep -F "${D}_" "$TMP/out")"
[ "$(cells "${D}_[0-9]" '#')" = 12 ] && [ "$(cells "${D}_[0-9]" '!')" = 8 ] ||
    fail "bar of 6 done and 4 failed: $(grep -F "${D}_" "$TMP/out")"
[ "$(cells "${A}_[0-199%3]" '#')" = 20 ] || fail "bar of A: $(grep -F "${A}_" "$TMP/out")"
gq 0 jobs --expand --limit 12
# The array's row, then its ten elements under it (newest first), then the child: 12 rows.
[ "$(wc -l <"$TMP/out")" = 13 ] || fail "jobs --expand --limit 12 printed $(wc -l <"$TMP/out")"
[ "$(sed -n '3,12p' "$TMP/out" | awk '{print $1}' | tr '\n' ' ')" = \
    "$(seq $((D + 10)) -1 $((D + 1)) | tr '\n' ' ')" ] ||
    fail "elements under $D: $(cat "$TMP/out")"
[ "$(sed -n '3,12p' "$TMP/out" | grep -c '^  [0-9]')" = 10 ] || fail "elements not indented"
gq 0 jobs --json
jqt out "length == 4 and .[0].id == $D and .[0].array.counts.done == 6 and
    .[0].array.counts.failed == 4 and .[0].array.count == 10 and .[0].array.kind == \"third\" and
    .[0].array.spec == \"0-9\" and .[1].id == $CHILD_LAST and .[1].array == null and
    .[3].array.counts.done == 200"
gq 0 jobs --state failed --expand --json
jqt out "length == 1 and .[0].id == $D and (.[0].elements | map(.id)) ==
    [$((D + 10)), $((D + 7)), $((D + 4)), $((D + 1))] and
    all(.[0].elements[]; .state == \"failed\")"
gq 0 jobs --state failed
[ "$(wc -l <"$TMP/out")" = 2 ] && grep -qF "${D}_[0-9] " "$TMP/out" || fail "--state failed rows"
gq 0 jobs --state done --limit 3
[ "$(awk 'NR > 1 {print $1}' "$TMP/out" | tr '\n' ' ')" = \
    "${D}_[0-9] $CHILD_LAST ${B}_[1,3,10-20:5] " ] || fail "--state done: $(cat "$TMP/out")"
step "jobs: one row per array with its bar and counts; --expand, --json and --state"

# ---- an array after a job in one submission (the broker once crashed there) ----------------------
printf '{"kind": "echo", "payload": {"lone": 1}}\n{"kind": "echo", "array": "0-2"}\n' \
    >"$TMP/mixed.jsonl"
gq 0 submit --file "$TMP/mixed.jsonl"
M=$(sed -n 2p "$TMP/out")
gq 0 wait $((M + 1)) $((M + 2)) $((M + 3))
[ "$(sql "select group_concat(json_extract(payload, '$.array_index')) from (select payload
    from jobs where id between $((M + 1)) and $((M + 3)) order by id)")" = "0,1,2" ] ||
    fail "elements of an array after a job: $(sql "select id, payload from jobs where id >= $M")"
step "an array after a job in one submission"

# ---- cancel --------------------------------------------------------------------------------------
gq 0 submit --array '0-49%2' --kind sleep --payload '{"ms": 20000}' --quiet
C=$(cat "$TMP/out")
poll 50 eval '[ "$(field "$C" array.counts.running)" = 2 ]' ||
    fail "array $C: $(field "$C" array.counts)"
[ "$(field "$C" array.counts.waiting)" = 48 ] || fail "held elements: $(field "$C" array.counts)"
gq 0 jobs --state waiting --json
jqt out "length == 1 and .[0].id == $C and .[0].array.counts.waiting == 48 and
    .[0].array.counts.running == 2"
gq 0 jobs --state waiting --expand --json
[ "$(jq ".[0].elements | map(select(.id > $C and .id <= $C + 50 and .state == \"waiting\")) |
    length" "$TMP/out")" = 48 ] || fail "jobs --state waiting --expand: $(head -c 300 "$TMP/out")"
gq 0 jobs --state running
grep -qF "${C}_[0-49%2] " "$TMP/out" && [ "$(cells "${C}_[0-49%2]" '>')" = 1 ] &&
    [ "$(cells "${C}_[0-49%2]" '.')" = 19 ] || fail "jobs --state running: $(cat "$TMP/out")"
gq 0 explain "$((C + 50))"
grep -qF "element 49 of array $C: held by the array's limit (2 of at most 2 queued or running)" \
    "$TMP/out" || fail "explain of a held element: $(cat "$TMP/out")"
gq 0 cancel "$C"
grep -qF "$C array: 50 elements cancelled" "$TMP/out" || fail "cancel: $(cat "$TMP/out")"
gq 1 wait "$C"
[ "$(grep -c ' cancelled' "$TMP/out")" = 50 ] || fail "wait after cancel: $(head -3 "$TMP/out")"
[ "$(field "$C" array.counts.cancelled)" = 50 ] || fail "after cancel: $(field "$C" array.counts)"
# The array's books: nothing left running, queued or waiting once all ended.
[ "$(field "$C" 'array.counts | .running + .queued + .waiting')" = 0 ] ||
    fail "after cancel: $(field "$C" array.counts)"
[ "$(sql "select count(*) from attempts where job_id between $((C + 1)) and $((C + 50))")" -le 2 ] ||
    fail "cancelled elements ran: $(sql "select count(*) from attempts where job_id > $C")"
step "cancel of an array cancels every element; wait sees them all"

# ---- refusals ------------------------------------------------------------------------------------
gq 2 submit --array '5-1'
grep -qF 'indexes must go up' "$TMP/err" || fail "5-1: $(cat "$TMP/err")"
gq 2 submit --array '0-9%0'
grep -qF '%K must be' "$TMP/err" || fail "%0: $(cat "$TMP/err")"
gq 2 submit --array '0-9' --idem k
grep -qF 'an array takes no "idem"' "$TMP/err" || fail "idem: $(cat "$TMP/err")"
gq 2 submit --array '0-2000000'
grep -qF 'more than 1000000 elements' "$TMP/err" || fail "too many: $(cat "$TMP/err")"
step "bad array specs are refused"
echo "PASS"
