#!/usr/bin/env bash
# test_disk_full.sh — a full disk refuses submissions cleanly and loses nothing: the broker's
# database lives on a 600 KiB tmpfs; a batch that does not fit gets ERROR STORE ("database or
# disk is full", exit 4) and nothing of it is stored; the broker stays up, and a small job that
# fits is accepted afterwards. With a worker, the jobs of a refused batch that ran before the
# commit failed (the broker dispatches while it commits) are withdrawn: nothing of them counts
# or stays, and the broker still works. Needs root for the tmpfs mount: skipped (77) where mount fails.
GQ_TEST=diskfull
GQ_TEST_SECONDS=60
# shellcheck source=tests/cli_lib.sh
. "$(dirname "$0")/cli_lib.sh"

MNT="$TMP/tiny"
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=600k tmpfs "$MNT" 2>/dev/null; then
    echo "SKIP: cannot mount a tmpfs here (needs root)"
    rm -rf "$TMP"
    exit 77
fi
trap 'stop_all; umount "$MNT" 2>/dev/null; rm -rf "$TMP"' EXIT

start_broker --db "$MNT/gridq.db"

# 2000 jobs of ~250 bytes each: more than the 600 KiB the store may grow into.
for i in $(seq 1 2000); do
    printf '{"kind": "nothing-runs-this", "payload": {"i": %d, "pad": "%0200d"}}\n' "$i" 0
done >"$TMP/big.jsonl"
gq 4 submit --file "$TMP/big.jsonl"
grep -qF "STORE" "$TMP/err" || fail "a full disk did not answer STORE"
grep -qF "full" "$TMP/err" || fail "the STORE error does not say the disk is full"
kill -0 "$BROKER" 2>/dev/null || fail "the broker died on a full disk"

# Whatever was refused left nothing behind; a job that fits goes in.
gq 0 stats --json
queued=$(jq -r '.jobs.queued' "$TMP/out")
gq 0 submit --kind nothing-runs-this --payload '{"small": true}'
ID=$(head -n 1 "$TMP/out")
[[ "$ID" =~ ^[0-9]+$ ]] || fail "a small job after the full disk got no id"
gq 0 stats --json
after=$(jq -r '.jobs.queued' "$TMP/out")
[ "$after" = $((queued + 1)) ] || fail "queued went from $queued to $after, expected $((queued + 1))"
gq 0 status "$ID" --json
jq -e '.state == "queued"' "$TMP/out" >/dev/null || fail "the small job is not queued"
step "disk full: refused with STORE, broker alive, a small job accepted after"

# A worker, and a batch of echo jobs that does not fit: its jobs may be dispatched before the
# commit fails; they are withdrawn, and neither the counts nor the store keep any of them.
"$BIN/gridq-worker" --broker "$EP" --name w-full --backend cpu --slots 4 >"$TMP/worker.log" 2>&1 &
PIDS+=("$!")
online () {
    timeout 10 "$BIN/gridq" --broker "$EP" --timeout 2s nodes --json 2>/dev/null |
        jq -e '[.[] | select(.name == "w-full" and .status == "online")] | length == 1' \
            >/dev/null 2>&1
}
poll 150 online || fail "the worker did not come online"
gq 0 submit --kind echo --payload '{"first": true}' --wait
gq 0 stats --json
done_before=$(jq -r '.jobs.done' "$TMP/out")
# 500 jobs of ~2 KB: one SUBMIT of 1 MB, which cannot fit whatever room is left.
for i in $(seq 1 500); do
    printf '{"kind": "echo", "payload": {"i": %d, "pad": "%02000d"}}\n' "$i" 0
done >"$TMP/big-echo.jsonl"
gq 4 submit --file "$TMP/big-echo.jsonl"
grep -qF "STORE" "$TMP/err" || fail "a full disk did not answer STORE for the echo batch"
kill -0 "$BROKER" 2>/dev/null || fail "the broker died on a full disk with a worker"
settled () {
    timeout 10 "$BIN/gridq" --broker "$EP" --timeout 2s stats --json >"$TMP/stats" 2>/dev/null &&
        jq -e '.jobs.running == 0' "$TMP/stats" >/dev/null
}
poll 100 settled || fail "jobs of the refused batch still run"
jq -e ".jobs.done == $done_before and .jobs.queued == $after" "$TMP/stats" >/dev/null ||
    fail "the refused echo batch left counts behind: $(cat "$TMP/stats")"
gq 0 submit --kind echo --payload '{"last": true}' --wait
step "disk full with a worker: the refused batch withdrawn, the broker still runs jobs"
