#!/usr/bin/env bash
# Instructions the PostgreSQL server spends per item, for hookspool and for the plain SQL the
# `postgres` bench compares it with. Timing on a shared 2-core machine moves by a tenth from
# one run to the next; instruction counts under callgrind move much less (see the README).
#
#   benches/scripts/pg_instructions.sh [ROUNDS] [WORKERS] [claim|push]
#
# `claim` (the default): per item claimed and settled, hookspool's claim 1024 + `ack_many`,
# and the two plain-SQL protocols (1024 rows leased in one transaction and marked done in a
# second; 100 rows claimed and marked done in one transaction). `push`: per item pushed in
# batches, hookspool's `push_batch` of 1024 and the plain 1,000-row `INSERT … SELECT
# unnest(…)`.
#
# Starts a throwaway PostgreSQL server under `valgrind --tool=callgrind` (each server
# process writes its own count when it exits), then runs the bench's own measurement
# (`--bench postgres`'s child; claims from a queue of 60,000 items) twice per case: with 1
# round and with 1 + ROUNDS (default 8), each round a call of 1024 (or 1,000) per worker
# (ten calls of 100 for the one-transaction claim). The difference, divided by the items of
# ROUNDS rounds, is the server's cost of one item, without the fill and the setup. What is
# counted is the statements' execution (`PortalRun`, inclusive), so that the periodic work
# of hookspool's backend (roll-ups, its look for other listeners), which callgrind's
# slowness multiplies, stays out; the commits' waits are not instructions. Some of that
# work is statements all the same (the roll-ups of counts), and it weighs more the fewer
# the rounds: keep the default. With 8 rounds hookspool's claims came to 120-121k
# instructions per item in five runs; with 2, one run gave 140.8k (the plain lease protocol
# 92.9k, as with 8). Pushes in batches repeat within 0.1% (48.0k and 48.0k; see the README).
#
# WORKERS (default 1, at most 6) claim, or push, at once, as the bench's 4 consumers and 2
# producers do: concurrent claims step over the rows the others hold locked and the entries
# of rows just claimed, which a single consumer never meets.
#
# BENCH=PATH measures that bench binary (`target/release/deps/postgres-…`, copied aside
# from another build) instead of building one from this tree: to compare two builds.
#
# Needs valgrind and the PostgreSQL server binaries (Debian: `valgrind`, `postgresql`); run
# as root (the server runs as the `postgres` user) or as a user that may run the server.
# Takes about 3 minutes for the claims with one worker, 6 with four, and 3 for the pushes
# with two.
set -euo pipefail

rounds=${1:-8}
case "$rounds" in
    '' | *[!0-9]* | 0) echo "ROUNDS must be a whole number of rounds above 0, not '$rounds'" >&2; exit 2 ;;
esac
workers=${2:-1}
case "$workers" in
    [1-6]) ;;
    *) echo "WORKERS must be a whole number from 1 to 6, not '$workers'" >&2; exit 2 ;;
esac
# case:rows per call:calls per round
case "${3:-claim}" in
    claim) specs="hs-claim-ack:1024:1 sql-claim-leased:1024:1 sql-claim:100:10" ;;
    push) specs="hs-push-batch:1024:1 sql-insert-batch:1000:1" ;;
    *) echo "the third argument must be claim or push, not '$3'" >&2; exit 2 ;;
esac
items=60000
bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin_dir/postgres" ] || { echo "no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 1; }
command -v valgrind > /dev/null || { echo "no valgrind (apt-get install valgrind)" >&2; exit 1; }

cd "$(dirname "$0")/../.."
bench=${BENCH:-}
if [ -n "$bench" ]; then
    [ -x "$bench" ] || { echo "BENCH='$bench' is not an executable bench binary" >&2; exit 2; }
else
    echo "building the postgres bench ..." >&2
    bench=$(cargo bench -p hookspool-benches --bench postgres --no-run --message-format=json \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -x "$bench" ] || { echo "could not find the postgres bench binary" >&2; exit 1; }
fi

# shellcheck source=pg_callgrind_server.sh
source "benches/scripts/pg_callgrind_server.sh"
start_callgrind_server hookspool-pg-callgrind

# Instructions in PortalRun of the server processes that ended during one measurement.
measure() { # case calls batch
    local before n last=0 still=0
    before=$(ls "$dir"/cg.* | sort)
    "$bench" --hookspool-bench-child "$1" "url=$url" ms=0 "calls=$2" "workers=$workers" \
        "batch=$3" "n=$items" > "$dir/child.out" 2>&1 || { cat "$dir/child.out" >&2; exit 1; }
    # The backends write their counts as they exit, after the client has gone: wait until
    # no more come for 3 s.
    for _ in $(seq 1 120); do
        sleep 1
        n=$(ls "$dir"/cg.* | wc -l)
        if [ "$n" = "$last" ]; then still=$((still + 1)); else still=0; last=$n; fi
        [ "$still" -ge 3 ] && [ "$n" -gt "$(echo "$before" | wc -l)" ] && break
    done
    [ "$n" -gt "$(echo "$before" | wc -l)" ] || { echo "no server process ended after $1" >&2; exit 1; }
    comm -13 <(echo "$before") <(ls "$dir"/cg.* | sort) | while read -r f; do
        callgrind_annotate --inclusive=yes --threshold=100 "$f"
    done | awk '/ [?][?][?]:PortalRun [[]/ { gsub(",", "", $1); s += $1 } END { printf "%.0f\n", s }'
}

printf '| case (%s worker(s)) | instructions per item (PortalRun) |\n|---|---|\n' "$workers"
for spec in $specs; do
    IFS=: read -r case batch calls <<< "$spec"
    echo "$case: 1 round, then $((rounds + 1)) ..." >&2
    one=$(measure "$case" "$calls" "$batch")
    more=$(measure "$case" $(((rounds + 1) * calls)) "$batch")
    printf '| %s | %s |\n' "$case" "$(( (more - one) / (batch * calls * rounds * workers) ))"
done
