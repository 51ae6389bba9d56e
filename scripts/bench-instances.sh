#!/usr/bin/env bash
# Benchmark of several instances on one PostgreSQL store (not run by CI).
#
# Usage: scripts/bench-instances.sh [N] [INSTANCES...]
#   N          messages seeded, spread over six mailboxes (default 6000)
#   INSTANCES  instance counts to compare (default: 1 3)
#
# Starts private Dovecot + Postfix (tests/harness/mailservers.sh) with six
# shared mailboxes and a private PostgreSQL (tests/harness/postgres.sh),
# seeds the same backlog (the demo corpus, unique Message-IDs and senders)
# before each round, starts K daemons at once and reports the wall time
# until every INBOX is empty, messages/s, and how the leases were spread.
# The shipped rules, FAQ and templates are used (auto-replies on).
# Requires root (the harness stores mail as the `mail` user) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-6000}
shift || true
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1 3)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
MB=6

echo "building release binary..." >&2
cargo build --release --quiet
BIN=$ROOT/target/release/switchboard

DIR=$(mktemp -d /tmp/sbinst.XXXXXX)
chmod 0755 "$DIR"
mkdir -p "$DIR/mail-servers" "$DIR/pg"
chmod 0755 "$DIR/mail-servers" "$DIR/pg"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    "$ROOT/tests/harness/mailservers.sh" stop "$DIR/mail-servers" >/dev/null 2>&1 || true
    "$ROOT/tests/harness/postgres.sh" stop "$DIR/pg" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
USERS=()
for i in $(seq 1 $MB); do USERS+=("s$i@example.test"); done
tests/harness/mailservers.sh start "$DIR/mail-servers" "${USERS[@]}" alice@customer.test >/dev/null
# shellcheck disable=SC1091
. "$DIR/mail-servers/env"
tests/harness/postgres.sh start "$DIR/pg" >/dev/null
# shellcheck disable=SC1091
. "$DIR/pg/pg.env"

WORK=$DIR/work
mkdir -p "$WORK"
printf 'secret\n' >"$WORK/pw"
{
    cat <<EOF
rules_dir = "$ROOT/rules"
templates_dir = "$ROOT/templates"
domain = "example.test"
our_addresses = ["support@example.test"]
default_queue = "support"

[company]
name = "Example Shop"
hours = "Monday to Friday, 9:00 to 17:00"
website = "https://shop.example.test"
phone = "+44 20 7946 0000"
signature = "The Example Shop team"

[reply]
from = "Example Shop Support <support@example.test>"

[limits]
max_replies_per_hour = 100000

[store]
url = "$PG_URL"

[daemon]
lease_ttl = "3s"

[outbound]
kind = "smtp"
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
EOF
    for i in $(seq 1 $MB); do
        cat <<EOF

[[mailbox]]
name = "s$i"
kind = "imap"
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
username = "s$i@example.test"
password_file = "pw"
addresses = ["s$i@example.test"]
batch_size = 200
EOF
    done
} >"$WORK/switchboard.toml"

seed() { # fresh mailboxes holding N messages in all
    for i in $(seq 1 $MB); do
        rm -rf "$MAILDIR_ROOT/example.test/s$i"
        mkdir -p "$MAILDIR_ROOT/example.test/s$i/"{new,cur,tmp}
    done
    "$PY" - "$ROOT/examples/demo/Maildir/new" "$MAILDIR_ROOT/example.test" "$N" "$MB" <<'PY'
import os, re, sys, time
src, root, n, mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
corpus = [open(os.path.join(src, f), "rb").read() for f in sorted(os.listdir(src))]
now = int(time.time())
for i in range(n):
    box = i % mb + 1
    raw = corpus[i % len(corpus)]
    head, sep, body = raw.partition(b"\n\n")
    lines = [l for l in head.split(b"\n") if not re.match(
        rb"(?i)(message-id|in-reply-to|references|to|delivered-to):", l)]
    head = b"\n".join(lines)
    head = re.sub(rb"(?im)^(from:.*?)([\w.+-]+)@([\w.-]+)",
                  lambda m: m.group(1) + m.group(2) + b"." + str(i).encode() + b"@" + m.group(3), head, count=1)
    head = (b"Message-ID: <bench-" + str(i).encode() + b"@bench.test>\n"
            b"To: s" + str(box).encode() + b"@example.test\n" + head)
    name = "%d.M%dP1Q%d.bench,S=%d" % (now, i, i, len(head) + len(body) + 2)
    with open(os.path.join(root, "s%d" % box, "new", name), "wb") as f:
        f.write(head + sep + body)
PY
    chown -R mail:mail "$MAILDIR_ROOT"
}

left() {
    local n=0
    for i in $(seq 1 $MB); do
        n=$((n + $(find "$MAILDIR_ROOT/example.test/s$i/new" "$MAILDIR_ROOT/example.test/s$i/cur" -type f | wc -l)))
    done
    echo "$n"
}

cd "$WORK"
for K in "${COUNTS[@]}"; do
    psql -q "$PG_URL" -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null 2>&1
    echo "seeding $N messages over $MB mailboxes..." >&2
    seed
    echo "round: $K instance(s)..." >&2
    PIDS=()
    IDLE0=$(awk '/^cpu / {print $5 + $6}' /proc/stat)
    START=$(date +%s.%N)
    for k in $(seq 1 "$K"); do
        "$BIN" run --instance "node-$k" --config switchboard.toml 2>"$WORK/node-$k.log" &
        PIDS+=($!)
    done
    while [ "$(left)" -gt 0 ]; do sleep 0.1; done
    END=$(date +%s.%N)
    IDLE1=$(awk '/^cpu / {print $5 + $6}' /proc/stat)
    CPU=0
    for p in "${PIDS[@]}"; do
        CPU=$((CPU + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    SPREAD=$(psql -tA "$PG_URL" -c "SELECT string_agg(i.name || ':' || c, ' ') FROM (SELECT holder, COUNT(*) c FROM leases WHERE expires_at > 0 GROUP BY holder) l JOIN instances i ON i.id = l.holder")
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    DONE=$(psql -tA "$PG_URL" -c "SELECT COUNT(*) FROM messages WHERE state = 'done'")
    "$PY" - "$START" "$END" "$N" "$K" "$DONE" "$SPREAD" "$IDLE0" "$IDLE1" "$CPU" "$(getconf CLK_TCK)" "$(nproc)" <<'PY'
import sys
start, end, n, k, done, spread = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
idle = (int(sys.argv[8]) - int(sys.argv[7])) / int(sys.argv[10])
cpu = int(sys.argv[9]) / int(sys.argv[10])
cores = int(sys.argv[11])
secs = end - start
print(f"{k} instance(s): {n} messages in {secs:.1f} s = {n / secs:.0f} msg/s; done {done}; "
      f"switchboard CPU {cpu:.1f} s; machine idle {100 * idle / (secs * cores):.0f}% of {cores} cores; leases at the end {spread}")
PY
done
