#!/usr/bin/env bash
# End-to-end check of tests/harness/mailservers.sh against the real servers.
#
#   tests/harness/selftest.sh
#
# Installs Dovecot/Postfix if needed (scripts/install-test-deps.sh), then:
#  1. starts an instance (timed) with its output captured through a pipe
#     (a daemon holding the pipe open would hang here);
#  2. sends a mail over SMTP and finds it in INBOX over IMAP; checks that
#     CAPABILITY lists IDLE, MOVE and UIDPLUS;
#  3. IDLE: a new delivery is announced with EXISTS;
#  4. creates Queues/Billing and UID MOVEs the message there; APPENDs to Sent;
#  5. stops Dovecot while a client IDLEs (it must get "* BYE"), sends a mail
#     (Postfix queues it), starts Dovecot again and waits for the queued mail
#     to arrive (timed); restarts each server once more;
#  6. kills both masters with SIGKILL and checks start-dovecot/start-postfix
#     recover (leftover children, stale pid files);
#  7. runs a second instance at the same time and checks the two are separate;
#  8. stops everything (timed, twice: stop is idempotent) and checks that no
#     master process of either instance is left.
# Exits 0 on success; prints timings. Must run as root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HARNESS=$HERE/mailservers.sh

"$ROOT/scripts/install-test-deps.sh"

# Instance directories: fresh, mode 0755, in a parent the mail users can
# traverse (the system temporary directory, never /root).
TMP_PARENT=${TMPDIR:-/tmp}
mkinstance() {
    local d
    d=$(mktemp -d "$TMP_PARENT/mailsrv.XXXXXX")
    chmod 0755 "$d"
    echo "$d"
}
A=$(mkinstance)
B=$(mkinstance)

cleanup() {
    "$HARNESS" stop "$A" >/dev/null 2>&1 || true
    "$HARNESS" stop "$B" >/dev/null 2>&1 || true
    if [ "${KEEP_DIRS:-0}" != 1 ]; then rm -rf "$A" "$B"; fi
}
trap cleanup EXIT

fail() {
    echo "SELFTEST FAILED: $*" >&2
    for d in "$A" "$B"; do
        for f in "$d/dovecot.log" "$d/postfix.log"; do
            if [ -s "$f" ]; then
                echo "----- tail of $f -----" >&2
                tail -n 20 "$f" >&2
            fi
        done
    done
    exit 1
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# Mail client operations, in Python (smtplib/imaplib from the standard library).
PY=$(cat <<'PY'
import imaplib, re, smtplib, socket, sys, time
from email.message import EmailMessage

HOST = "127.0.0.1"
PASSWORD = "secret"

def send(port, sender, rcpt, subject):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg["Message-ID"] = "<%s@selftest.example.test>" % re.sub(r"\W", "-", subject)
    msg.set_content("Hello from the self-test: %s\n" % subject)
    with smtplib.SMTP(HOST, int(port), timeout=10) as s:
        s.send_message(msg)

def login(port, user):
    m = imaplib.IMAP4(HOST, int(port), timeout=10)
    m.login(user, PASSWORD)
    return m

def uids_with_subject(m, folder, subject):
    typ, _ = m.select('"%s"' % folder)
    assert typ == "OK", (folder, typ)
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"%s"' % subject)
    assert typ == "OK", data
    return data[0].split()

def wait_for(port, user, folder, subject, timeout):
    """Poll until a message with SUBJECT is in FOLDER; print seconds waited."""
    start = time.monotonic()
    m = login(port, user)
    try:
        while True:
            if uids_with_subject(m, folder, subject):
                print("%.2f" % (time.monotonic() - start))
                return
            if time.monotonic() - start > float(timeout):
                sys.exit("%r not in %s/%s after %ss" % (subject, user, folder, timeout))
            time.sleep(0.05)
    finally:
        m.logout()

def absent(port, user, folder, subject):
    m = login(port, user)
    try:
        if uids_with_subject(m, folder, subject):
            sys.exit("%r unexpectedly in %s/%s" % (subject, user, folder))
    finally:
        m.logout()

def idle_until_bye(port, user, timeout):
    """IDLE in INBOX, print READY, then wait for the server's BYE."""
    m = login(port, user)
    m.select("INBOX")
    m.send(b"i1 IDLE\r\n")
    assert m.readline().startswith(b"+")
    print("READY", flush=True)
    m.sock.settimeout(float(timeout))
    while True:
        line = m.readline()
        if line.startswith(b"* BYE"):
            print("BYE", line.decode().strip(), flush=True)
            return
        if not line:
            sys.exit("connection closed without BYE")

def imap_checks(port, smtp_port):
    user = "support@example.test"
    m = login(port, user)
    typ, data = m.capability()
    caps = data[0].decode().upper().split()
    for cap in ("IDLE", "MOVE", "UIDPLUS"):
        assert cap in caps, "capability %s missing: %s" % (cap, caps)

    # A wrong password is refused at once (auth_failure_delay = 0).
    t = time.monotonic()
    bad = imaplib.IMAP4(HOST, int(port), timeout=10)
    try:
        bad.login(user, "wrong")
        sys.exit("login with a wrong password succeeded")
    except imaplib.IMAP4.error:
        pass
    bad.shutdown()
    assert time.monotonic() - t < 1.5, "failed login took %.1fs" % (time.monotonic() - t)

    # IDLE: a delivery is announced by an untagged EXISTS.
    m.select("INBOX")
    tag = m._new_tag().decode()
    m.send(("%s IDLE\r\n" % tag).encode())
    line = m.readline()
    assert line.startswith(b"+"), line
    send(smtp_port, "alice@customer.test", user, "idle probe")
    t = time.monotonic()
    m.sock.settimeout(10)
    while True:
        line = m.readline()
        if re.match(rb"\* \d+ EXISTS", line):
            break
        assert line, "connection closed during IDLE"
    idle_s = time.monotonic() - t
    m.send(b"DONE\r\n")
    while not m.readline().startswith(tag.encode()):
        pass
    m.sock.settimeout(10)

    # UID MOVE into a nested folder (hierarchy separator "/").
    typ, data = m.create('"Queues/Billing"')
    assert typ == "OK", data
    uids = uids_with_subject(m, "INBOX", "first mail")
    assert len(uids) == 1, uids
    typ, data = m.uid("MOVE", uids[0].decode(), '"Queues/Billing"')
    assert typ == "OK", data
    assert not uids_with_subject(m, "INBOX", "first mail"), "still in INBOX after MOVE"
    assert len(uids_with_subject(m, "Queues/Billing", "first mail")) == 1, "not moved"

    # APPEND to Sent (APPENDUID comes back thanks to UIDPLUS).
    typ, data = m.create("Sent")
    assert typ == "OK", data
    raw = (b"From: support@example.test\r\nTo: alice@customer.test\r\n"
           b"Subject: appended reply\r\nMessage-ID: <appended@selftest.example.test>\r\n"
           b"\r\nThanks!\r\n")
    typ, data = m.append("Sent", r"(\Seen)", None, raw)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    assert len(uids_with_subject(m, "Sent", "appended reply")) == 1, "append not found"

    typ, data = m.list()
    names = b" ".join(data)
    assert b'"/" Queues/Billing' in names and b"\\Sent" in names, data
    m.logout()
    print("%.2f" % idle_s)

if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
PY
)
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
py() { "$PYTHON" -c "$PY" "$@"; }

# live_group PGID: live (non-zombie) processes of a process group.
live_group() { ps -e -o pid=,pgid=,stat=,args= | awk -v g="$1" '$2 == g && $3 !~ /^Z/'; }

load_env() {
    # shellcheck source=/dev/null
    . "$1/env"
}

echo "== start instance A"
t0=$(now)
out_a=$("$HARNESS" start "$A") || fail "start A"
start_a=$(elapsed "$t0")
echo "$out_a"
grep -q '^IMAP_PORT=[0-9]' <<<"$out_a" || fail "start printed no IMAP_PORT"
cmp -s <(echo "$out_a") "$A/env" || fail "printed lines differ from $A/env"
load_env "$A"
A_IMAP=$IMAP_PORT A_SMTP=$SMTP_PORT
echo "started in ${start_a}s"

echo "== SMTP -> LMTP -> INBOX"
py send "$A_SMTP" alice@customer.test support@example.test "first mail" || fail "SMTP send"
first_s=$(py wait_for "$A_IMAP" support@example.test INBOX "first mail" 10) || fail "first mail not delivered"
echo "delivered in ${first_s}s"
[ -n "$(ls -A "$MAILDIR_ROOT/example.test/support/new" "$MAILDIR_ROOT/example.test/support/cur")" ] ||
    fail "no message file under $MAILDIR_ROOT/example.test/support"

echo "== CAPABILITY, IDLE, UID MOVE, APPEND"
idle_s=$(py imap_checks "$A_IMAP" "$A_SMTP") || fail "IMAP checks"
echo "IDLE EXISTS after ${idle_s}s"
[ -d "$MAILDIR_ROOT/example.test/support/Queues/Billing/cur" ] || fail "Queues/Billing is not a plain path"

echo "== Dovecot outage: IDLE client gets BYE; Postfix queues, delivers after restart"
py idle_until_bye "$A_IMAP" support@example.test 10 >"$A/idle.out" 2>&1 &
idle_pid=$!
for _ in $(seq 200); do
    if grep -q READY "$A/idle.out"; then break; fi
    sleep 0.05
done
grep -q READY "$A/idle.out" || fail "IDLE client did not start: $(cat "$A/idle.out")"
t0=$(now)
"$HARNESS" stop-dovecot "$A" || fail "stop-dovecot"
dovecot_stop=$(elapsed "$t0")
wait "$idle_pid" || fail "IDLE client got no BYE: $(cat "$A/idle.out")"
grep BYE "$A/idle.out"
py send "$A_SMTP" bob@customer.test billing@example.test "while down" || fail "SMTP send while Dovecot down"
for _ in $(seq 100); do
    if grep -q 'status=deferred' "$A/postfix.log"; then break; fi
    sleep 0.05
done
grep -q 'status=deferred' "$A/postfix.log" || fail "mail was not deferred while Dovecot was down"
t0=$(now)
"$HARNESS" start-dovecot "$A" || fail "start-dovecot"
dovecot_start=$(elapsed "$t0")
queued_s=$(py wait_for "$A_IMAP" billing@example.test INBOX "while down" 10) || fail "queued mail not delivered"
echo "dovecot restarted in ${dovecot_start}s; queued mail arrived ${queued_s}s later"
"$HARNESS" restart-dovecot "$A" || fail "restart-dovecot"
"$HARNESS" stop-postfix "$A" || fail "stop-postfix"
"$HARNESS" start-postfix "$A" || fail "start-postfix"
py send "$A_SMTP" carol@customer.test sales@example.test "after restarts" || fail "SMTP after restarts"
py wait_for "$A_IMAP" sales@example.test INBOX "after restarts" 10 >/dev/null || fail "mail after restarts"

echo "== crash: kill -9 both masters, start-* recover"
read -r dpid _ <"$A/dovecot/run/master.pid"
read -r ppid _ <"$A/postfix-queue/pid/master.pid"
kill -KILL "$dpid" "$ppid"
"$HARNESS" start-dovecot "$A" 2>/dev/null || fail "start-dovecot after kill -9"
"$HARNESS" start-postfix "$A" 2>/dev/null || fail "start-postfix after kill -9"
py send "$A_SMTP" carol@customer.test sales@example.test "after crash" || fail "SMTP after crash"
py wait_for "$A_IMAP" sales@example.test INBOX "after crash" 10 >/dev/null || fail "mail after crash"

echo "== second instance B alongside A"
t0=$(now)
"$HARNESS" start "$B" carol@customer.test >/dev/null || fail "start B"
start_b=$(elapsed "$t0")
load_env "$B"
B_IMAP=$IMAP_PORT B_SMTP=$SMTP_PORT
if [ "$B_IMAP" = "$A_IMAP" ] || [ "$B_SMTP" = "$A_SMTP" ]; then fail "B shares ports with A"; fi
py send "$B_SMTP" alice@customer.test carol@customer.test "only in B" || fail "SMTP send B"
py wait_for "$B_IMAP" carol@customer.test INBOX "only in B" 10 >/dev/null || fail "B delivery"
py absent "$A_IMAP" carol@customer.test INBOX "only in B" || fail "B's mail leaked into A"
py send "$A_SMTP" alice@customer.test support@example.test "A still fine" || fail "SMTP send A"
py wait_for "$A_IMAP" support@example.test INBOX "A still fine" 10 >/dev/null || fail "A delivery"
echo "B started in ${start_b}s while A was running"

echo "== stop"
masters=()
for d in "$A" "$B"; do
    for f in "$d/dovecot/run/master.pid" "$d/postfix-queue/pid/master.pid"; do
        read -r pid _ <"$f" || fail "no pid in $f"
        masters+=("$pid")
    done
done
t0=$(now)
"$HARNESS" stop "$A" || fail "stop A"
stop_a=$(elapsed "$t0")
"$HARNESS" stop "$B" || fail "stop B"
"$HARNESS" stop "$A" || fail "second stop A (must be idempotent)"
for pid in "${masters[@]}"; do
    # The masters lead their process groups: nothing of the group may remain.
    left=$(live_group "$pid")
    if [ -n "$left" ]; then fail "processes of master $pid are still running: $left"; fi
done
if pgrep -af -- "-c ($A|$B)/" >/dev/null; then
    fail "left over: $(pgrep -af -- "-c ($A|$B)/")"
fi
echo "stopped in ${stop_a}s"

echo "timing: start=${start_a}s start_second=${start_b}s first_delivery=${first_s}s" \
    "idle_exists=${idle_s}s dovecot_stop=${dovecot_stop}s dovecot_start=${dovecot_start}s queued_delivery=${queued_s}s stop=${stop_a}s"
echo "selftest: 1 passed, 0 failed"
