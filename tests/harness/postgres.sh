#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests, on a loopback port.
#
#   postgres.sh start DIR   initdb into DIR/pg/data, start on a free port,
#                           create the database `switchboard`, and write
#                           DIR/pg.env with PG_PORT and PG_URL
#   postgres.sh restart DIR stop (immediately, like a crash) and start again
#                           on the same port
#   postgres.sh stop DIR    stop it (the data stays in DIR)
#
# Uses the newest /usr/lib/postgresql/*/bin (Debian's `postgresql`,
# installed by scripts/install-test-deps.sh). PostgreSQL refuses to run as
# root: as root the cluster belongs to the `postgres` user. fsync is off
# (the machine does not crash during a test); commits are still written
# before they return, so an immediate restart loses nothing committed.
set -euo pipefail
CMD=${1:?usage: postgres.sh start|restart|stop DIR}
DIR=${2:?usage: postgres.sh start|restart|stop DIR}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "postgres.sh: PostgreSQL is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }
PG=$DIR/pg
DATA=$PG/data

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_server() { # $1 = port
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$PG/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $1 -k $PG -c fsync=off -c max_connections=200" \
        start >/dev/null
}

case "$CMD" in
start)
    mkdir -p "$PG"
    [ "$(id -u)" -eq 0 ] && chown postgres "$PG"
    as_owner "$BIN/initdb" -D "$DATA" -A trust -U switchboard -E UTF8 --no-sync >"$PG/initdb.log" 2>&1 ||
        { cat "$PG/initdb.log" >&2; exit 1; }
    # A free port below the kernel's ephemeral range (which outgoing
    # connections use), so that it is still free after a restart.
    PORT=$(python3 - <<'PY'
import random, socket
lo, hi = 20000, int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]) - 1
for port in random.sample(range(lo, hi), 500):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
PY
)
    start_server "$PORT" || { cat "$PG/postgres.log" >&2; exit 1; }
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U switchboard switchboard
    {
        echo "PG_PORT=$PORT"
        echo "PG_URL=postgres://switchboard@127.0.0.1:$PORT/switchboard"
    } >"$DIR/pg.env"
    ;;
restart)
    PORT=$(sed -n 's/^PG_PORT=//p' "$DIR/pg.env")
    as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null || true
    start_server "$PORT" || { cat "$PG/postgres.log" >&2; exit 1; }
    ;;
stop)
    as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    ;;
*)
    echo "postgres.sh: unknown command $CMD" >&2
    exit 2
    ;;
esac
