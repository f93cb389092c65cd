#!/usr/bin/env bash
# test_matching_cli.sh — the matcher seen through the gridq CLI, against a real broker and CPU
# workers standing in for GPUs on a loopback port of its own.
#
#   1. Right-sizing: n12, n24 and n80 differ only in --vram (12G, 24G, 80G) and --gpu-model;
#      jobs needing 10G, 20G and 40G, placed together, land on n12, n24 and n80. A 100G job
#      stays queued and `gridq explain` names every node with its VRAM reason and a hint.
#   2. Constraints: --gpu picks the node by GPU model; then n12, n24, n80 are stopped and three
#      nodes that differ in price and TFLOPS take their place: --max-price, --min-tflops and
#      both together each route to the only eligible node. A constraint no node meets leaves the
#      job queued, and explain names the constraint.
#   3. Priority: with the only eligible node busy, a priority 1 job then a priority 9 job wait;
#      when the node frees, the priority 9 job starts first.
#
# Everything it starts is stopped by PID on exit; every wait polls a condition, bounded; the
# whole run is bounded (100 s). Needs $GQ_BIN/{gridq,gridq-broker,gridq-worker} and jq; exits 77
# (skipped) without them.
GQ_TEST=match
GQ_TEST_SECONDS=100
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"
declare -A WORKER=()  # node name -> worker PID
# has TEXT...: stdout of the last gridq command contains every TEXT.
has () {
    local text
    for text in "$@"; do
        grep -qF -- "$text" "$TMP/out" || fail "the output of the last command lacks \"$text\""
    done
}

# expect WHAT GOT WANT: a check that prints both values.
expect () {
    [ "$2" = "$3" ] || fail "$1 is \"$2\", expected \"$3\""
}

# field ID FILTER: a jq filter applied to job ID as `gridq status --json` shows it (raw output).
field () {
    gq 0 status "$1" --json
    jq -r "$2" "$TMP/out"
}

# poll TRIES CMD...: runs CMD every 0.1 s until it succeeds, at most TRIES times.
# node_is NAME STATUS: `gridq nodes --json` shows node NAME with that status.
node_is () {
    timeout 10 "$BIN/gridq" --broker "$EP" --timeout 2s nodes --json 2>/dev/null |
        jq -e --arg n "$1" --arg s "$2" 'any(.[]; .name == $n and .status == $s)' \
            >/dev/null 2>&1
}

# job_is ID STATE: `gridq status --json` shows job ID in that state.
job_is () {
    timeout 10 "$BIN/gridq" --broker "$EP" --timeout 2s status "$1" --json 2>/dev/null |
        jq -e --arg s "$2" '.state == $s' >/dev/null 2>&1
}

# worker NAME ARGS...: starts a one-slot CPU worker called NAME and waits until it is online.
worker () {
    local name=$1
    shift
    "$BIN/gridq-worker" --broker "$EP" --name "$name" --backend cpu --slots 1 "$@" \
        >"$TMP/$name.log" 2>&1 &
    WORKER[$name]=$!
    PIDS+=("$!")
}
wait_online () {
    local name
    for name in "$@"; do
        poll 150 node_is "$name" online || fail "node $name did not come online"
    done
}

# submit ARGS...: gridq submit ARGS; the new job's id in $ID.
ID=0
submit () {
    gq 0 submit "$@"
    ID=$(head -n 1 "$TMP/out")
    [[ "$ID" =~ ^[0-9]+$ ]] || fail "gridq submit $* printed \"$ID\", not a job id"
}

# ran_on ID NODE: job ID ends done, on NODE.
ran_on () {
    gq 0 wait "$1" --max-wait 20s
    expect "node of job $1" "$(field "$1" .node)" "$2"
    expect "state of job $1" "$(jq -r .state "$TMP/out")" "done"
}

# stays_queued ID: job ID is queued after the broker placed a job submitted after it (so at
# least one scheduling pass saw it and left it).
stays_queued () {
    local probe
    submit --kind echo --payload '{"probe": true}'
    probe=$ID
    gq 0 wait "$probe" --max-wait 20s
    expect "state of job $1" "$(field "$1" .state)" queued
    expect "node of job $1" "$(jq -r .node "$TMP/out")" null
}

# unplaced ARGS...: gridq submit ARGS, a job no node can take: it stays queued, and `gridq
# explain` of it is in $TMP/out. Its id in $ID.
unplaced () {
    local id
    submit "$@"
    id=$ID
    stays_queued "$id"
    gq 0 explain "$id"
    ID=$id
}

# explain_verdicts ID VERDICT NODE...: `gridq explain ID --json` gives each NODE that verdict.
explain_verdicts () {
    local id=$1 verdict=$2 name got
    shift 2
    gq 0 explain "$id" --json
    expect "explain $id: state" "$(jq -r .state "$TMP/out")" queued
    expect "explain $id: chosen node" "$(jq -r .node "$TMP/out")" null
    for name in "$@"; do
        got=$(jq -r --arg n "$name" '[.nodes[] | select(.node == $n) | .verdict] | join(",")' \
            "$TMP/out")
        expect "explain $id: verdict of $name" "$got" "$verdict"
    done
}

# ---- a broker on a free port; heartbeats every 200 ms ----------------------------------------
start_broker --heartbeat-ms 200

# ---- 1. right-sizing: only the VRAM differs (and the GPU model, which scores nothing) --------
worker n12 --vram 12G --gpu-model "NVIDIA GeForce RTX 3060" --tflops 50 --price 1.00
worker n24 --vram 24G --gpu-model "NVIDIA GeForce RTX 4090" --tflops 50 --price 1.00
worker n80 --vram 80G --gpu-model "NVIDIA H100 80GB HBM3" --tflops 50 --price 1.00
wait_online n12 n24 n80
step "n12, n24, n80 online"
gq 0 nodes --json
expect "vram_total_mb of n12, n24, n80" \
    "$(jq -c '[.[] | select(.name | test("^n[0-9]+$"))] | sort_by(.name) | map(.vram_total_mb)' \
        "$TMP/out")" "[12288,24576,81920]"

# One batch: the three are placed in the same scheduling pass, each on the card just big
# enough, the largest job first in the file so that file order cannot explain the outcome.
cat >"$TMP/sized.jsonl" <<'EOF'
{"kind": "sleep", "min_vram": "40G", "payload": {"ms": 300}}
{"kind": "sleep", "min_vram": "10G", "payload": {"ms": 300}}
{"kind": "sleep", "min_vram": "20G", "payload": {"ms": 300}}
EOF
gq 0 submit --file "$TMP/sized.jsonl"
mapfile -t SIZED <"$TMP/out"
expect "ids printed for 3 jobs" "${#SIZED[@]}" 3
gq 0 wait "${SIZED[@]}" --max-wait 20s
gq 0 status "${SIZED[@]}" --json
expect "nodes of the 40G, 10G, 20G jobs" "$(jq -r .node "$TMP/out" | paste -sd,)" "n80,n12,n24"
expect "min_vram_mb of the 40G, 10G, 20G jobs" "$(jq -r .min_vram_mb "$TMP/out" | paste -sd,)" \
    "40960,10240,20480"
# Placed at the same time: every one started before any finished.
jq -s -e '(map(.started_at) | max) < (map(.finished_at) | min)' "$TMP/out" >/dev/null ||
    fail "the three sized jobs did not run at the same time: $(jq -c \
        '{started_at, finished_at}' "$TMP/out" | paste -sd' ')"

step "10G, 20G, 40G jobs ran on n12, n24, n80"

# 100G fits nowhere: queued, and explain says why for every node, and what would make it run.
unplaced --kind echo --min-vram 100G --payload '{"big": true}'
BIG=$ID
has "n12" "n24" "n80" "MiB" \
    "vram_free 12288 MiB < 102400 MiB needed" \
    "vram_free 24576 MiB < 102400 MiB needed" \
    "vram_free 81920 MiB < 102400 MiB needed" \
    "100 GiB" "80 GiB" "chosen: none"
explain_verdicts "$BIG" vram n12 n24 n80
expect "explain $BIG: hint" "$(jq -r .hint "$TMP/out")" \
    "needs a node with >= 100 GiB of VRAM; the largest online has 80 GiB"

step "100G job queued and explained"

# --gpu: a job needing no VRAM goes to the smallest card (n12) unless the pattern says otherwise.
submit --kind echo --payload '{"gpu": "any"}'
ran_on "$ID" n12
submit --kind echo --gpu 4090 --payload '{"gpu": "4090"}'
ran_on "$ID" n24
submit --kind echo --gpu 'a100|H100' --payload '{"gpu": "a100|H100"}'
ran_on "$ID" n80
unplaced --kind echo --gpu B200 --payload '{"gpu": "B200"}'
NO_GPU=$ID
has "does not match 'B200'" "no online node with enough VRAM has a GPU matching 'B200'"
explain_verdicts "$NO_GPU" gpu_pattern n12 n24 n80

step "--gpu routed; unmatched pattern explained"

# ---- 2. price and TFLOPS: three nodes that differ in those alone -----------------------------
for name in n12 n24 n80; do
    stop_pid "${WORKER[$name]}"
done
for name in n12 n24 n80; do
    poll 150 node_is "$name" offline || fail "node $name is not offline after it stopped"
done
step "n12, n24, n80 offline"
worker cheap --vram 24G --gpu-model "NVIDIA L4" --tflops 30 --price 0.40
worker mid --vram 24G --gpu-model "NVIDIA A10" --tflops 80 --price 1.50
worker fast --vram 24G --gpu-model "NVIDIA H100 PCIe" --tflops 300 --price 3.00
wait_online cheap mid fast
step "cheap, mid, fast online"

submit --kind echo --max-price 0.5 --payload '{"max_price": 0.5}'
ran_on "$ID" cheap
expect "constraints of job $ID" "$(field "$ID" .constraints.max_price)" 0.5
submit --kind echo --min-tflops 200 --payload '{"min_tflops": 200}'
ran_on "$ID" fast
submit --kind echo --max-price 2 --min-tflops 60 --payload '{"max_price": 2, "min_tflops": 60}'
ran_on "$ID" mid

unplaced --kind echo --max-price 0.1 --payload '{"max_price": 0.1}'
NO_PRICE=$ID
has "price 0.40/h > max 0.10/h" "price 3.00/h > max 0.10/h" \
    "needs a price <= 0.10/h; the cheapest node that fits costs 0.40/h"
explain_verdicts "$NO_PRICE" price cheap mid fast
explain_verdicts "$NO_PRICE" offline n12 n24 n80

unplaced --kind echo --min-tflops 1000 --payload '{"min_tflops": 1000}'
NO_TFLOPS=$ID
has "tflops 30.0 < 1000.0 required" "tflops 300.0 < 1000.0 required" \
    "needs >= 1000.0 TFLOPS; the fastest node that fits has 300.0"
explain_verdicts "$NO_TFLOPS" tflops cheap mid fast

step "--max-price, --min-tflops routed; unmet ones explained"

# ---- 3. priority: the only eligible node (fast) busy; 1 then 9 wait; 9 starts first ----------
submit --kind sleep --min-tflops 200 --payload '{"ms": 30000}'
BLOCKER=$ID
poll 100 job_is "$BLOCKER" running || fail "job $BLOCKER (30 s sleep) is not running"
expect "node of the blocker" "$(field "$BLOCKER" .node)" fast
submit --kind sleep --min-tflops 200 --priority 1 --payload '{"ms": 200, "priority": 1}'
LOW=$ID
submit --kind sleep --min-tflops 200 --priority 9 --payload '{"ms": 200, "priority": 9}'
HIGH=$ID
# Both wait while the blocker runs (the check comes after both were submitted).
expect "state of the blocker after both were queued" "$(field "$BLOCKER" .state)" running
expect "state of the priority 1 job" "$(field "$LOW" .state)" queued
expect "state of the priority 9 job" "$(field "$HIGH" .state)" queued
explain_verdicts "$HIGH" no_slot fast
gq 0 cancel "$BLOCKER"
has "$BLOCKER cancelled"
gq 0 wait "$LOW" "$HIGH" --max-wait 20s
gq 0 status "$HIGH" "$LOW" --json
expect "nodes of the priority 9 and 1 jobs" "$(jq -r .node "$TMP/out" | paste -sd,)" "fast,fast"
HIGH_START=$(jq -r -s '.[0].started_at' "$TMP/out")
LOW_START=$(jq -r -s '.[1].started_at' "$TMP/out")
[[ "$HIGH_START" < "$LOW_START" ]] ||
    fail "priority 9 job started at $HIGH_START, not before the priority 1 job ($LOW_START)"

step "priority 9 before priority 1"

# ---- leftovers: cancel what still waits -------------------------------------------------------
LEFT=("$BIG" "$NO_GPU" "$NO_PRICE" "$NO_TFLOPS")
gq 0 jobs --state queued --json
expect "queued jobs" "$(jq -c 'map(.id) | sort' "$TMP/out")" \
    "$(printf '%s\n' "${LEFT[@]}" | jq -s -c 'sort')"
gq 0 cancel "${LEFT[@]}"
for id in "${LEFT[@]}"; do
    has "$id cancelled"
done
gq 0 jobs --state queued --json
expect "queued jobs after cancel" "$(jq -c length "$TMP/out")" 0

step "leftovers cancelled"

# ---- parked: 200 jobs of a kind no node offers hold up nothing behind them --------------------
# (more than the backfill window, 64: before, they stopped the walk before any runnable job)
for i in $(seq 1 200); do
    printf '{"kind": "nobody-runs-this", "priority": 9, "payload": {"i": %d}}\n' "$i"
done >"$TMP/parked.jsonl"
gq 0 submit --file "$TMP/parked.jsonl"
submit --kind echo --payload '{"behind": "parked"}'
BEHIND=$ID
gq 0 wait "$BEHIND" --max-wait 20s
gq 0 status "$BEHIND" --json
expect "state of the job behind 200 parked ones" "$(jq -r .state "$TMP/out")" done
gq 0 jobs --state queued --json --limit 1000
expect "parked jobs still queued" "$(jq -c length "$TMP/out")" 200
explain_verdicts "$(jq -r '.[0].id' "$TMP/out")" kind cheap mid fast

step "parked jobs hold up nothing"
echo "matching_cli: 10G/20G/40G -> n12/n24/n80 together; 100G queued with reasons;" \
    "--gpu, --max-price, --min-tflops routed; unmet constraints explained;" \
    "priority 9 started $HIGH_START before priority 1 at $LOW_START"
exit 0
