#!/usr/bin/env bash
# Benchmark of the daemon against real Dovecot and Postfix (not run by CI).
#
# Usage: scripts/bench-imap.sh [N] [LATENCY_N]
#   N          messages seeded into the support INBOX for the backlog run
#              (default 10000)
#   LATENCY_N  messages delivered one by one over LMTP, 20-80 ms apart,
#              while the daemon waits in IDLE (default 300); then LAT_SOLO
#              (environment, default 30) messages 0.8 s apart, each alone
#              in its notification
#
# It starts private servers with tests/harness/mailservers.sh, uses the
# shipped rules/, rules/faq/ and templates/ with the demo company settings,
# and reports:
#   1. backlog triage: `switchboard run --once` over N messages already in
#      INBOX — wall time, messages/s, peak RSS (from /usr/bin/time or
#      /proc), and where the messages ended up; then the replies against
#      the raw SMTP floor: the time switchboard spent sending its replies
#      and storing their Sent copies (its "answered" debug lines), and the
#      time a plain Python smtplib client takes to send the same messages
#      (the Sent copies) to the same Postfix over one connection;
#   2. delivery -> action latency with IDLE: time from the LMTP delivery
#      being acknowledged by Dovecot to switchboard recording the message as
#      done (moved, or answered and moved), p50/p90/p99/max; and
#      switchboard's own share of it: from Dovecot's IDLE notification to
#      the end of the pass that filed the mail.
#
# The seeded mail is a mix drawn from the demo corpus (routine questions,
# complaints, automatic mail, non-English...), each copy with a unique
# Message-ID and sender so that per-sender reply limits do not mask work.
# ROUTE_ONLY=1 skips runs 1 and 2 (only the COMPARE rounds).
# BATCH sets the mailbox's batch_size (default 100, the product default).
# POOL sets the SMTP pool_size (default 4, the product default).
# SB_WRAP="perf record -g -o /tmp/sb.perf" prefixes the route-only runs.
# With COMPARE=R, then R interleaved rounds of imapfilter (server-side
# SEARCH + MOVE rules) and switchboard route-only on the same N messages
# (switchboard's rounds also give its CPU time: less noisy than the wall time;
# each round also gives the CPU the whole machine was busy with, so that the
# mail server's share — busy minus the client's own — can be compared).
# Requires root (the harness stores mail as the `mail` user) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-10000}
LAT_N=${2:-300}
LAT_SOLO=${LAT_SOLO:-30}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# PROFILE=dist measures the binary the Debian package ships (thin LTO).
# SB_BIN=path measures that binary instead of building one (to compare builds).
PROFILE=${PROFILE:-release}
if [ -n "${SB_BIN:-}" ]; then
    BIN=$(realpath "$SB_BIN")
else
    echo "building the $PROFILE binary..." >&2
    cargo build --profile "$PROFILE" --quiet
    BIN=$ROOT/target/$PROFILE/switchboard
fi

DIR=$(mktemp -d /tmp/sbbench.XXXXXX)
chmod 0755 "$DIR"
cleanup() {
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true
    "$ROOT/tests/harness/mailservers.sh" stop "$DIR" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap '[ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID"' EXIT
tests/harness/mailservers.sh start "$DIR" support@example.test alice@customer.test >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
# Postfix accepts every reply and discards it, as a relay would accept
# them: the harness otherwise refuses recipients outside its test domains
# at RCPT, and a refusal is not the reply path being measured.
postconf -c "$POSTFIX_CONFIG_DIR" -e 'virtual_mailbox_domains = example.test' \
    'default_transport = discard' 'relay_transport = discard'
postfix -c "$POSTFIX_CONFIG_DIR" reload >/dev/null 2>&1

WORK=$DIR/work
mkdir -p "$WORK"
printf 'secret\n' >"$WORK/pw"
write_config() { # $1 = batch size
    cat >"$WORK/switchboard.toml" <<EOF
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
url = "sqlite://state.db"

[outbound]
kind = "smtp"
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
pool_size = ${POOL:-4}

[[mailbox]]
name = "support"
kind = "imap"
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
username = "support@example.test"
password_file = "pw"
batch_size = $1
EOF
}
write_config "${BATCH:-100}"

INBOX=$MAILDIR_ROOT/example.test/support
seed_inbox() { # a fresh support mailbox holding N messages
    rm -rf "$INBOX"
    mkdir -p "$INBOX/new" "$INBOX/cur" "$INBOX/tmp"
"$PY" - "$ROOT/examples/demo/Maildir/new" "$INBOX/new" "$N" <<'PY'
import os, re, sys, time
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = [open(os.path.join(src, f), "rb").read() for f in sorted(os.listdir(src))]
now = int(time.time())
for i in range(n):
    raw = corpus[i % len(corpus)]
    head, sep, body = raw.partition(b"\n\n")
    # unique Message-ID and sender per copy (threading headers dropped so
    # that every copy is a new conversation)
    lines = [l for l in head.split(b"\n") if not re.match(
        rb"(?i)(message-id|in-reply-to|references|to|delivered-to):", l)]
    head = b"\n".join(lines)
    head = re.sub(rb"(?im)^(from:.*?)([\w.+-]+)@([\w.-]+)",
                  lambda m: m.group(1) + m.group(2) + b"." + str(i).encode() + b"@" + m.group(3), head, count=1)
    head = (b"Message-ID: <bench-" + str(i).encode() + b"@bench.test>\n"
            b"To: support@example.test\n" + head)
    name = "%d.M%dP1Q%d.bench,S=%d" % (now, i, i, len(head) + len(body) + 2)
    with open(os.path.join(dst, name), "wb") as f:
        f.write(head + sep + body)
PY
    chown -R mail:mail "$MAILDIR_ROOT"
}
cd "$WORK"
if [ -z "${ROUTE_ONLY:-}" ]; then
echo "seeding $N messages into $INBOX/new ..." >&2
seed_inbox

echo "backlog run: switchboard run --once over $N messages..." >&2
cd "$WORK"
START=$(date +%s.%N)
export RUST_LOG=${RUST_LOG:-info,switchboard::pipeline=debug}
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" run --once --config switchboard.toml 2>"$WORK/once.log"
    RSS_KB=$(tail -1 "$WORK/rss")
else
    "$BIN" run --once --config switchboard.toml 2>"$WORK/once.log" &
    PID=$!
    RSS_KB=0
    while kill -0 $PID 2>/dev/null; do
        r=$(awk '/VmHWM/ {print $2}' /proc/$PID/status 2>/dev/null || echo 0)
        [ "${r:-0}" -gt "$RSS_KB" ] && RSS_KB=$r
        sleep 0.05
    done
    wait $PID
fi
END=$(date +%s.%N)
unset RUST_LOG
"$PY" - "$START" "$END" "$N" "$RSS_KB" <<'PY'
import sqlite3, sys
start, end, n, rss = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect("state.db")
rows = db.execute("select verdict, state, count(*) from messages group by verdict, state order by 3 desc").fetchall()
done = sum(c for v, s, c in rows if s == "done")
secs = end - start
print(f"backlog: {n} messages in {secs:.1f} s = {n / secs:.0f} msg/s; peak RSS {rss / 1024:.0f} MiB; done {done}")
for v, s, c in rows:
    print(f"  {v:<9} {s:<9} {c}")
PY
INBOX_LEFT=$(find "$INBOX/new" "$INBOX/cur" -type f | wc -l)
echo "  left in INBOX: $INBOX_LEFT"

echo "raw SMTP floor: the same replies over one smtplib connection..." >&2
"$PY" - "$SMTP_PORT" "$INBOX/Sent" "$WORK/once.log" <<'PY'
import email, os, re, smtplib, sys, time
port, sent_dir, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
send_ms = copy_ms = batches = 0
for line in open(log, errors="replace"):
    if " answered " in line:
        m = re.search(r"send_ms=(\d+) copy_ms=(\d+)", line)
        if m:
            send_ms += int(m.group(1)); copy_ms += int(m.group(2)); batches += 1
msgs = []
for sub in ("cur", "new"):
    d = os.path.join(sent_dir, sub)
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        raw = open(os.path.join(d, f), "rb").read()
        to = email.message_from_bytes(raw).get("To", "")
        addr = re.search(r"[\w.+-]+@[\w.-]+", to)
        if addr:
            msgs.append((addr.group(0), raw))
if not msgs:
    sys.exit("no Sent copies found: no reply was sent")
start = time.time()
with smtplib.SMTP("127.0.0.1", port) as s:
    for to, raw in msgs:
        s.sendmail("support@example.test", [to], raw)
floor = time.time() - start
ours = (send_ms + copy_ms) / 1000.0
print(f"replies: {len(msgs)} Sent copies; switchboard sending + Sent copies {ours:.2f} s "
      f"(send {send_ms / 1000:.2f} s, copies {copy_ms / 1000:.2f} s, {batches} batches) = "
      f"{len(msgs) / ours:.0f} replies/s")
print(f"  raw smtplib, one connection, same messages: {floor:.2f} s = {len(msgs) / floor:.0f} replies/s; "
      f"switchboard at {100 * floor / ours:.0f}% of that floor")
PY

echo "latency run: $LAT_N deliveries 20-80 ms apart, then $LAT_SOLO one at a time, while the daemon idles..." >&2
SWITCHBOARD_LOG_FORMAT=json RUST_LOG=${LAT_LOG:-info,switchboard::daemon=debug} \
    "$BIN" run --config switchboard.toml 2>"$WORK/daemon.log" &
DAEMON_PID=$!
sleep 2
"$PY" - "$LMTP_PORT" "$LAT_N" "$LAT_SOLO" "$WORK/daemon.log" <<'PY'
import datetime, json, random, smtplib, sqlite3, sys, time
port, n, solo, log = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
db = sqlite3.connect("state.db")

def deliver(prefix, count, gap):
    sent = {}
    for i in range(count):
        mid = f"{prefix}-{i}@bench.test"
        body = (f"From: Lat Customer {i} <{prefix}{i}@customer.test>\r\nTo: support@example.test\r\n"
                f"Subject: {'What are your opening hours?' if i % 2 else 'My parcel arrived damaged'}\r\n"
                f"Message-ID: <{mid}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
                "Hello, could you help me with this? Thanks, Lat\r\n")
        with smtplib.LMTP("127.0.0.1", port) as s:
            s.sendmail(f"{prefix}{i}@customer.test", ["support@example.test"], body)
        sent[mid] = time.time()
        time.sleep(gap())
    deadline = time.time() + 60
    done = {}
    while time.time() < deadline and len(done) < count:
        for mid, at in db.execute("select message_id, updated_at from messages where state = 'done' and message_id like ?", (prefix + "-%",)):
            if mid in sent:
                done[mid] = at / 1000.0
        time.sleep(0.2)
    return sent, done

def wakes():
    out = []
    for line in open(log, errors="replace"):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("fields", {}).get("message") == "woken by the server":
            t = datetime.datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00"))
            out.append(t.timestamp())
    return sorted(out)

def pct(v):
    v = sorted(v)
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))] * 1000
    return f"p50 {q(0.5):.0f} ms, p90 {q(0.9):.0f} ms, p99 {q(0.99):.0f} ms, max {v[-1] * 1000:.0f} ms"

def report(name, sent, done, count):
    if not done:
        sys.exit(f"{name}: no message was handled")
    lat = [done[m] - sent[m] for m in done]
    print(f"latency ({name}): {len(done)}/{count} handled; delivery -> done {pct(lat)}")
    # Our own share: from the last IDLE notification before the message was
    # done to the message being done.
    # A message delivered while a pass was running and picked up by it
    # without a notification counts from its delivery.
    ws = wakes()
    own = []
    for m, at in done.items():
        before = [w for w in ws if w <= at]
        own.append(at - max([sent[m]] + before[-1:]))
    if own:
        print(f"  own share (notification -> done): {len(own)} messages; {pct(own)}")
    else:
        print("  own share: no notification recorded (server without IDLE?)")

if n:
    sent, done = deliver("lat", n, lambda: random.uniform(0.02, 0.08))
    report("bursts", sent, done, n)
if solo:
    sent, done = deliver("solo", solo, lambda: 0.8)
    report("one at a time", sent, done, solo)
PY
if [ -n "${SAVE_LOG:-}" ]; then cp "$WORK/daemon.log" "$SAVE_LOG"; fi
fi

# Optional: COMPARE=3 runs that many interleaved rounds of imapfilter (six
# server-side SEARCH + MOVE rules, no bodies read, nothing recorded) and
# switchboard route-only (auto_reply = false, fresh state) on the same N.
ROUNDS=${COMPARE:-0}
if [ "$ROUNDS" -gt 0 ]; then
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null || true
    [ -n "${DAEMON_PID:-}" ] && wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
    command -v imapfilter >/dev/null || { echo "imapfilter not installed (apt-get install imapfilter)" >&2; exit 1; }
    cat >"$WORK/imapfilter.lua" <<EOF2
options.timeout = 120
options.create = true
options.starttls = false
acct = IMAP { server = '127.0.0.1', port = $IMAP_PORT, username = 'support@example.test', password = 'secret' }
for _, f in ipairs({ 'F', 'F/Billing', 'F/Automatic', 'F/Complaints', 'F/Legal', 'F/Orders', 'F/Support' }) do
    acct:create_mailbox(f)
end
inbox = acct.INBOX
inbox:contain_subject('refund'):move_messages(acct['F/Billing'])
inbox:contain_from('noreply'):move_messages(acct['F/Automatic'])
inbox:contain_subject('complaint'):move_messages(acct['F/Complaints'])
inbox:contain_body('lawyer'):move_messages(acct['F/Legal'])
inbox:contain_subject('order'):move_messages(acct['F/Orders'])
inbox:select_all():move_messages(acct['F/Support'])
EOF2
    sed -i 's/^\[company\]/auto_reply = false\n\n[company]/' "$WORK/switchboard.toml"
    # CPU time all processes spent during a run (jiffies of /proc/stat:
    # user, nice, system, irq, softirq), and how it splits.
    busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
    split_cpu() { # $1 $2 = busy before/after, $3 = the client's own CPU seconds
        awk -v b="$(($2 - $1))" -v hz="$(getconf CLK_TCK)" -v own="$3" \
            'BEGIN { printf "  machine busy %.2f s of CPU: the client %.2f s, the mail server and the rest %.2f s\n", b / hz, own, b / hz - own }'
    }
    for r in $(seq "$ROUNDS"); do
        seed_inbox
        b0=$(busy)
        /usr/bin/time -o "$WORK/time" -f "round $r imapfilter:  %e s, peak RSS %M KB, CPU %U s user + %S s system" \
            imapfilter -c "$WORK/imapfilter.lua" >/dev/null
        b1=$(busy)
        cat "$WORK/time" >&2
        split_cpu "$b0" "$b1" "$(awk '{print $(NF-6) + $(NF-2)}' "$WORK/time")" >&2
        seed_inbox
        rm -f "$WORK"/state.db*
        b0=$(busy)
        /usr/bin/time -o "$WORK/time" -f "round $r switchboard: %e s, peak RSS %M KB, CPU %U s user + %S s system" \
            ${SB_WRAP:-} "$BIN" run --once --config switchboard.toml 2>"$WORK/once.log" >/dev/null ||
            { tail -5 "$WORK/once.log"; exit 1; }
        b1=$(busy)
        cat "$WORK/time" >&2
        split_cpu "$b0" "$b1" "$(awk '{print $(NF-6) + $(NF-2)}' "$WORK/time")" >&2
        if [ -n "${SAVE_ONCE:-}" ]; then cp "$WORK/once.log" "$SAVE_ONCE.$r"; fi
    done
fi
