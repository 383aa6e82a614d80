#!/usr/bin/env bash
# Issue 15's benchmark set-ups, as the README's tables report them. Four chains run side by side
# (each benchmark starts its own sandboxes on free loopback ports); within a chain, one after
# the other. The 250 ms runs mostly wait on Stripe's latency and limits, so they share the
# machine; the dry runs at 100,000 and 1,000,000 follow the two slowest-paced ones.
#
#   PYTHON=.venv/bin/python DEADLINE=06:29 bench/issue15.sh     # logs in $LOGS (default /tmp/bench-logs)
#
# DEADLINE (UTC, HH:MM) stops every benchmark there: the scenario running is stopped as an admin
# would stop the connector, later ones are not started, and each JSON keeps what finished.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DL=${DEADLINE:-}
LOGS=${LOGS:-/tmp/bench-logs}
OUT=${OUT:-bench/results}
# The issue's sizes; smaller ones only to try this script out (with OUT elsewhere).
S=${N_SMALL:-10000} L=${N_LARGE:-100000} H=${N_HUGE:-1000000}
mkdir -p "$LOGS"
bench() { # name, then sync_bench arguments
    local name=$1
    shift
    "$PY" bench/sync_bench.py --salesforce-latency 0.2 ${DL:+--deadline "$DL"} \
        --out "$OUT/$name.json" "$@" >"$LOGS/$name.log" 2>&1
}
FULL=dry_run,backfill,sync_unchanged,sync_1pct_changed,recheck_after_mapping_change,recheck_unchanged
{
    bench sync-n$S-test-250ms --accounts $S --mode test --stripe-latency 0.25 --scenarios "$FULL"
    bench sync-n$L-dry-run --accounts $L --mode live-raised --stripe-latency 0.05 --scenarios dry_run
} &
{
    bench sync-n$S-live-250ms --accounts $S --mode live --stripe-latency 0.25 --scenarios "$FULL"
    bench sync-n$H-dry-run --accounts $H --mode live-raised --stripe-latency 0.05 --scenarios dry_run
} &
bench sync-n$S-live-raised-250ms --accounts $S --mode live-raised --stripe-latency 0.25 --scenarios "$FULL" &
# The re-check of N unchanged accounts needs them linked first: the backfill is its set-up.
bench sync-n$L-live-raised-50ms --accounts $L --mode live-raised --stripe-latency 0.05 \
    --scenarios backfill,recheck_unchanged,sync_unchanged &
wait
"$PY" bench/readme_tables.py --results "$OUT" --print >"$LOGS/tables.md"
