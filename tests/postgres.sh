#!/usr/bin/env bash
# A real PostgreSQL for the tests (Debian's `postgresql` package), in target/postgres:
# its own data folder, port and socket folder, fsync off (a test database need not
# survive power loss; never do this to a real one). Nothing is downloaded.
#
#   eval "$(tests/postgres.sh start)"   # initdb if needed, start, print the URL's export
#   tests/postgres.sh stop
#
# Run as root, the server runs as the `postgres` user (initdb refuses root); run as
# anyone else, as that user. The port is $NUDGE_TEST_POSTGRES_PORT (default 54329), the
# folder $NUDGE_TEST_POSTGRES_DIR (default target/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
root="${NUDGE_TEST_POSTGRES_DIR:-$PWD/target/postgres}"
port="${NUDGE_TEST_POSTGRES_PORT:-54329}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
url="postgres://postgres@127.0.0.1:$port/postgres"

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
    [ -f "$root/data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$root/data" status >/dev/null 2>&1
}

case "${1:-}" in
start)
    if [ -z "$bin" ] || ! [ -x "$bin/initdb" ]; then
        echo "no PostgreSQL server installed: apt-get install postgresql (Debian's package)" >&2
        exit 1
    fi
    mkdir -p "$root/socket"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$root" "$root/socket"; fi
    if ! as_owner test -w "$root"; then
        echo "$root is not writable by the server's user: make it and its parent folders reachable" \
             "(e.g. chmod o+x on each parent) and run again" >&2
        exit 1
    fi
    if ! [ -f "$root/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 --locale=C \
            >"$root/initdb.log" 2>&1 || { cat "$root/initdb.log" >&2; exit 1; }
    fi
    if ! running; then
        as_owner "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 \
            -o "-p $port -k $root/socket -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >&2 || { tail -n 20 "$root/server.log" >&2; exit 1; }
    fi
    echo "export NUDGE_TEST_POSTGRES_URL=$url"
    ;;
stop)
    if running; then
        as_owner "$bin/pg_ctl" -D "$root/data" -m fast -w stop >&2
    fi
    ;;
url)
    echo "$url"
    ;;
*)
    echo "usage: tests/postgres.sh start|stop|url" >&2
    exit 2
    ;;
esac
