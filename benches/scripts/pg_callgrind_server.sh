# Sourced by the scripts beside it: starts a throwaway PostgreSQL server under
# `valgrind --tool=callgrind` (autovacuum off; each server process writes its own count,
# `$dir/cg.<pid>`, when it exits), and stops it and removes its files when the script exits.
#
# Needs `bin_dir` (the server's binaries) and the name of the temp dir to make as `$1`; sets
# `dir`, `url` and `server`.
start_callgrind_server() {
    dir=$(mktemp -d "/tmp/$1-XXXXXX")
    as_server=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
        as_server=(runuser -u postgres --)
    fi
    local port=$((20000 + RANDOM % 20000))
    "${as_server[@]}" "$bin_dir/initdb" -D "$dir/data" -U postgres --auth=trust > "$dir/initdb.log"
    "${as_server[@]}" valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
        "$bin_dir/postgres" -D "$dir/data" -c port=$port -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories="$dir" -c autovacuum=off > "$dir/server.log" 2>&1 &
    server=$!
    trap stop_callgrind_server EXIT
    for _ in $(seq 1 120); do
        grep -q "ready to accept connections" "$dir/server.log" && break
        sleep 1
    done
    grep -q "ready to accept connections" "$dir/server.log" || {
        echo "the server did not start within 120 s; its log:" >&2
        cat "$dir/server.log" >&2
        exit 1
    }
    url="postgresql://postgres@127.0.0.1:$port/postgres?sslmode=disable"
}

stop_callgrind_server() {
    # The postmaster runs under valgrind as a child of `runuser`: stop it by its data dir.
    "${as_server[@]}" "$bin_dir/pg_ctl" -D "$dir/data" stop -m immediate > /dev/null 2>&1 \
        || kill "$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    rm -rf "$dir"
}
