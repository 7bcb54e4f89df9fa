#!/usr/bin/env bash
# Instructions the PostgreSQL server spends per call of a small claim, through each of the
# two claim functions a consumer alone may use, and per claim acked at once:
#
#   benches/scripts/pg_small_claims.sh [SIZES]
#
# SIZES (default "16 48") are the claims' limits. For each size, four cases:
#   claim          `SELECT count(*) FROM claim(...)`              (schema version 13)
#   claim_located  `SELECT count(*) FROM claim_located(...)`      (version 14, addresses)
#   claim+key      `claim` and its items acked by key in the same statement
#                  (`settle_leased_to`)
#   located+addr   `claim_located` and its items acked at their addresses in the same
#                  statement (`settle_located`)
# The backend sends a consumer alone claiming fewer than 64 items through `claim` (see the
# README's "Small claims"); this is the measurement behind that threshold.
#
# Starts a throwaway PostgreSQL server under `valgrind --tool=callgrind` (autovacuum off;
# each server process writes its own count when it exits), makes the schema and a queue of
# 60,000 due items with the release `hookspool` binary (`HOOKSPOOL_BIN`, or built here), and
# runs each case as two psql sessions, of 10 and of 70 calls; the difference of their
# statements' instructions (`PortalRun`, inclusive), divided by 60, is one call's cost,
# without the session's start (each session's server process is read by its process id).
# A `VACUUM` of the items runs before each session (in a session of its own, waited for and
# not counted), so that every case starts from a clean due index. The
# four cases of a size alternate, twice, so that each is measured as the queue drains.
set -euo pipefail

sizes=${1:-16 48}
bin_dir=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
for tool in valgrind callgrind_annotate; do
    command -v "$tool" > /dev/null || { echo "$tool is needed (apt-get install valgrind)" >&2; exit 2; }
done
[ -x "$bin_dir/postgres" ] || {
    echo "no PostgreSQL server in $bin_dir (Debian's package \`postgresql\`, or set PG_BIN_DIR)" >&2
    exit 2
}

cd "$(dirname "$0")/../.."
cli=${HOOKSPOOL_BIN:-}
if [ -z "$cli" ]; then
    echo "building hookspool (release) ..." >&2
    cargo build --release -q -p hookspool-cli
    cli=target/release/hookspool
fi
[ -x "$cli" ] || { echo "HOOKSPOOL_BIN='$cli' is not an executable" >&2; exit 2; }

# shellcheck source=pg_callgrind_server.sh
source "benches/scripts/pg_callgrind_server.sh"
start_callgrind_server hookspool-pg-small
psql=("$bin_dir/psql" -X -q -At -v ON_ERROR_STOP=1 "$url")

"$cli" --database-url "$url" queue create q --retention keep > /dev/null
"${psql[@]}" -c "SELECT count(*) FROM unnest(hookspool.push_many('q',
    (SELECT array_agg(convert_to(i::text, 'UTF8')) FROM generate_series(1, 60000) AS i),
    NULL, NULL, 0))" > /dev/null
# Statistics, as autovacuum would gather them: without them (autovacuum is off here, and
# the indexes were made on an empty table) the server planned claims through
# `items_pending` and a sort of every pending item, 60,000 rows for a claim of 16.
"${psql[@]}" -c "VACUUM ANALYZE hookspool.items" > /dev/null
# The statement of one call of case $1 for a claim of $2.
statement() {
    local until=9000000000000
    case $1 in
        claim) echo "SELECT count(*) FROM hookspool.claim('q', 'w', $2, $until, 1000);" ;;
        claim_located) echo "SELECT count(*) FROM hookspool.claim_located('q', ARRAY['w'],
            ARRAY[$2], ARRAY[$until::bigint], 1000);" ;;
        claim+key) echo "SELECT cardinality(hookspool.settle_leased_to('q', 'w',
            ARRAY(SELECT key FROM hookspool.claim('q', 'w', $2, $until, 1000)), 'done', 2000));" ;;
        located+addr) echo "WITH c AS MATERIALIZED (SELECT key, address FROM
            hookspool.claim_located('q', ARRAY['w'], ARRAY[$2], ARRAY[$until::bigint], 1000))
            SELECT cardinality(hookspool.settle_located('q', 'w', ARRAY(SELECT key FROM c),
            ARRAY(SELECT address FROM c), 'done', 2000));" ;;
    esac
}

# The instructions of the statements of server process $1, once it has ended and its count
# is written (the file's size steady for a second).
counted() { # pid
    local f="$dir/cg.$1" size=-1
    for _ in $(seq 1 240); do
        if [ -s "$f" ] && [ "$(stat -c %s "$f")" = "$size" ]; then break; fi
        [ -s "$f" ] && size=$(stat -c %s "$f")
        sleep 1
    done
    [ -s "$f" ] || { echo "server process $1 wrote no count" >&2; exit 1; }
    callgrind_annotate --inclusive=yes --threshold=100 "$f" \
        | awk '/ [?][?][?]:PortalRun [[]/ { gsub(",", "", $1); s += $1 } END { printf "%.0f\n", s }'
}

# One session of $3 calls of case $1 with claims of $2: its statements' instructions. Each
# session first names its server process, whose count is then read alone.
session() {
    local pid
    pid=$("${psql[@]}" -c "SELECT pg_backend_pid()" -c "VACUUM hookspool.items")
    counted "$pid" > /dev/null
    pid=$({ echo "SELECT pg_backend_pid();"; echo '\o /dev/null'
            for _ in $(seq 1 "$3"); do statement "$1" "$2"; done; } | "${psql[@]}")
    counted "$pid"
}

printf '| claim of | case | instructions per call, first pass | second pass |\n|---|---|---|---|\n'
for size in $sizes; do
    declare -A per=()
    for pass in 1 2; do
        for case in claim claim_located claim+key located+addr; do
            short=$(session "$case" "$size" 10)
            long=$(session "$case" "$size" 70)
            per[$case,$pass]=$(( (long - short) / 60 ))
        done
    done
    for case in claim claim_located claim+key located+addr; do
        printf '| %s | %s | %s | %s |\n' "$size" "$case" "${per[$case,1]}" "${per[$case,2]}"
    done
    unset per
done
