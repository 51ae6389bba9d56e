#!/usr/bin/env bash
# Private Dovecot (IMAP + LMTP) and Postfix (SMTP -> LMTP) instances for
# integration tests.
#
# Every instance lives in one directory chosen by the caller and uses free
# loopback ports, so several instances can run side by side (tests run in
# parallel). Nothing of the system-wide configuration (/etc/dovecot,
# /etc/postfix, /var/spool/postfix, /run/dovecot) is used or touched.
#
# Usage:
#   mailservers.sh start DIR [USER...]   write configs, start both, write DIR/env
#   mailservers.sh stop DIR              stop both, wait until they are gone
#   mailservers.sh stop-dovecot DIR      stop Dovecot only (IMAP and LMTP down;
#                                        IMAP clients, even in IDLE, get
#                                        "* BYE Server shutting down.")
#   mailservers.sh start-dovecot DIR     start it again on the same ports
#   mailservers.sh restart-dovecot DIR   stop-dovecot + start-dovecot
#   mailservers.sh stop-postfix DIR      stop Postfix only (SMTP down)
#   mailservers.sh start-postfix DIR     start it again on the same port
#   mailservers.sh status DIR            print which servers are running
#
# DIR must be an absolute path of an existing, empty directory (mode 0755)
# whose every parent is traversable by the users mail, dovecot, dovenull and
# postfix (a directory made with `mktemp -d` under /tmp and chmod 0755 is
# fine; anything under /root is not). Keep DIR short (< 70 characters): the
# servers put Unix sockets below it and socket paths are limited to 107 bytes.
#
# USERs are e-mail addresses; without any, a default set is created. Every
# user has the password "secret". LMTP accepts any address in the mail
# domains (static userdb with allow_all_users), so tests may also deliver to
# addresses that are not listed; only listed users can log in over IMAP.
#
# After `start`, DIR/env holds shell-style KEY=VALUE lines (also printed on
# stdout), e.g.:
#   IMAP_PORT=20143  LMTP_PORT=20024  SMTP_PORT=20025  HOST=127.0.0.1
#   PASSWORD=secret  MAILDIR_ROOT=DIR/mail  USERS=a@x.test,b@y.test  ...
#
# Layout of DIR:
#   env                 ports and paths for the tests (see above)
#   dovecot.conf        Dovecot configuration (use with `doveadm -c`)
#   dovecot-users       passwd-file with the users
#   dovecot/run         Dovecot base_dir (sockets, master.pid)
#   dovecot/state       Dovecot state_dir
#   dovecot.log         Dovecot log (dovecot.stderr.log: early start-up errors)
#   mail/DOMAIN/USER    each user's Maildir, owned by user mail, with
#                       LAYOUT=fs: INBOX is mail/DOMAIN/USER/{cur,new,tmp},
#                       the IMAP folder "Queues/Billing" is the directory
#                       mail/DOMAIN/USER/Queues/Billing (names may contain
#                       "."; "cur", "new" and "tmp" are reserved). Tests may
#                       seed mail by writing files into .../new directly;
#                       whatever they create there must belong to mail:mail
#                       (chown -R mail:mail DIR/mail afterwards), or Dovecot,
#                       running as mail, cannot maintain the Maildir.
#   postfix/            Postfix config_directory (main.cf, master.cf)
#   postfix-queue/      Postfix queue_directory (pid/master.pid inside)
#   postfix-data/       Postfix data_directory (master.lock inside)
#   postfix.log         Postfix log (maillog_file; there is no syslog)
#
# The mail domains are example.test and customer.test (MAIL_DOMAINS below).
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"

readonly PASSWORD=secret
readonly HOST=127.0.0.1
readonly MAIL_DOMAINS="example.test customer.test"
readonly DEFAULT_USERS=(
    support@example.test billing@example.test sales@example.test
    alice@customer.test bob@customer.test carol@customer.test
)
# Seconds to wait for the servers to accept connections / to exit.
readonly START_TIMEOUT=${MAILSERVERS_START_TIMEOUT:-20}
readonly STOP_TIMEOUT=${MAILSERVERS_STOP_TIMEOUT:-10}
# How often `start` picks new ports when one was taken in the meantime.
readonly START_ATTEMPTS=3

die() {
    echo "mailservers: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
    exit 2
}

# ---------------------------------------------------------------------------
# Helpers written in Python (python3 is available on every test machine).
# The system interpreter starts fastest (a pyenv shim costs ~0.2 s a call).
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi

# pick_ports N: print N distinct free TCP ports on 127.0.0.1, one per line.
# Ports are drawn at random from below the kernel's ephemeral range, so that
# outgoing connections (which take ephemeral ports) never occupy them later;
# a port counts as free when a plain bind() (without SO_REUSEADDR) succeeds.
pick_ports() {
    "$PYTHON" - "$1" <<'PY'
import random, socket, sys

n = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo = int(f.read().split()[0])
except OSError:
    eph_lo = 32768
lo, hi = 20000, eph_lo - 1
held, ports = [], []
candidates = list(range(lo, hi)) if hi - lo > 1000 else []
random.shuffle(candidates)
for port in candidates:
    if len(ports) == n:
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(port)
while len(ports) < n:  # fallback: let the kernel choose
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    held.append(s)
    ports.append(s.getsockname()[1])
for s in held:
    s.close()
print("\n".join(map(str, ports)))
PY
}

# wait_ready TIMEOUT PROTO:PORT...: wait until each server answers with its
# greeting (IMAP "* OK", SMTP/LMTP "220"). Exit status 1 on timeout, naming
# the servers that are not ready.
wait_ready() {
    "$PYTHON" - "$@" <<'PY'
import socket, sys, time

timeout = float(sys.argv[1])
pending = [a.split(":") for a in sys.argv[2:]]
deadline = time.monotonic() + timeout

def ready(proto, port):
    try:
        if proto == "imaps":
            # TLS from the first byte: accepting the connection is enough.
            with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
                return True
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2) as s:
            s.settimeout(2)
            greeting = s.recv(512)
            ok = greeting.startswith(b"* OK" if proto == "imap" else b"220")
            s.sendall(b"a LOGOUT\r\n" if proto == "imap" else b"QUIT\r\n")
            return ok
    except OSError:
        return False

while pending:
    pending = [p for p in pending if not ready(*p)]
    if not pending:
        break
    if time.monotonic() >= deadline:
        print("not ready after %gs: %s" % (timeout, " ".join(":".join(p) for p in pending)),
              file=sys.stderr)
        sys.exit(1)
    time.sleep(0.05)
PY
}

# ---------------------------------------------------------------------------
# Process helpers.

# pid_alive PIDFILE COMM: print the pid and succeed when PIDFILE names a live
# (non-zombie) process whose command name is COMM, i.e. our master and not an
# unrelated process that got the pid of a long-gone one.
pid_alive() {
    local pid stat comm
    pid=$(read_pid "$1") || return 1
    read -r stat comm < <(ps -o stat=,comm= -p "$pid" 2>/dev/null) || return 1
    # An exited master that init has not reaped yet is not running.
    [[ "$stat" != Z* && "$comm" == "$2" ]] || return 1
    echo "$pid"
}

# group_members PGID: print the live (non-zombie) processes of a process
# group. Both masters lead their own process group, and their children stay in
# it. Zombies are ignored: an exited daemon whose parent is init stays visible
# to `kill -0` until init reaps it, which can take a second or, with a minimal
# container init, forever.
group_members() {
    ps -e -o pid=,pgid=,stat= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ { print $1 }'
}

# read_pid PIDFILE: print the pid recorded in PIDFILE, alive or not.
read_pid() {
    local pid
    [ -s "$1" ] || return 1
    read -r pid _ <"$1" || true
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

# stop_orphans NAME PGID: the master recorded in the pid file is gone (it
# crashed or a test killed it), but children may survive it: an imap process
# serving an IDLE client, or login processes that still hold the listening
# socket so that the port cannot be bound again. Stop those, if every
# remaining member of the group runs a NAME binary (so that a pid reused by an
# unrelated process group is never touched).
stop_orphans() {
    local name=$1 pgid=$2 p exe members
    members=$(group_members "$pgid")
    [ -n "$members" ] || return 0
    for p in $members; do
        exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
        [[ "$exe" == *"$name"* ]] || return 0
    done
    echo "mailservers: $name master is gone; stopping its leftover processes" >&2
    kill -TERM -- "-$pgid" 2>/dev/null || true
    stop_group "$name" "$pgid"
}

# wait_group_gone TIMEOUT PGID: wait until the process group is empty.
# Returns 1 on timeout.
wait_group_gone() {
    local deadline=$((SECONDS + $1))
    while [ -n "$(group_members "$2")" ]; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}

# stop_group NAME PGID: after the master was told to stop, wait for its whole
# process group to go; SIGKILL whatever is left after STOP_TIMEOUT.
stop_group() {
    local name=$1 pgid=$2
    if ! wait_group_gone "$STOP_TIMEOUT" "$pgid"; then
        echo "mailservers: $name did not stop within ${STOP_TIMEOUT}s, killing it" >&2
        kill -KILL -- "-$pgid" 2>/dev/null || true
        wait_group_gone 5 "$pgid" || die "$name processes survived SIGKILL: $(group_members "$pgid")"
    fi
}

show_logs() {
    local f
    for f in "$@"; do
        if [ -s "$f" ]; then
            echo "----- tail of $f -----" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

# ---------------------------------------------------------------------------
# Instance state.

load_instance() {
    DIR=$1
    [[ "$DIR" = /* ]] || die "DIR must be an absolute path: $DIR"
    DIR=${DIR%/}
    DOVECOT_CONF=$DIR/dovecot.conf
    DOVECOT_BASE=$DIR/dovecot/run
    DOVECOT_PID=$DOVECOT_BASE/master.pid
    DOVECOT_LOG=$DIR/dovecot.log
    DOVECOT_STDERR=$DIR/dovecot.stderr.log
    POSTFIX_CONF=$DIR/postfix
    POSTFIX_QUEUE=$DIR/postfix-queue
    POSTFIX_DATA=$DIR/postfix-data
    POSTFIX_PID=$POSTFIX_QUEUE/pid/master.pid
    POSTFIX_LOG=$DIR/postfix.log
    POSTFIX_STDOUT=$DIR/postfix.stdout.log
    MAILDIR_ROOT=$DIR/mail
}

# read_ports: load IMAP_PORT, LMTP_PORT, SMTP_PORT from DIR/ports.
read_ports() {
    [ -f "$DIR/ports" ] || die "$DIR is not a started instance (no $DIR/ports)"
    # shellcheck source=/dev/null
    . "$DIR/ports"
}

# ---------------------------------------------------------------------------
# Configuration.

write_users() {
    local user
    : >"$DIR/dovecot-users"
    for user in "$@"; do
        [[ "$user" == *@* ]] || die "user must be an e-mail address: $user"
        printf '%s:{PLAIN}%s::::::\n' "$user" "$PASSWORD" >>"$DIR/dovecot-users"
    done
    chmod 0644 "$DIR/dovecot-users"
}

write_dovecot_conf() {
    # Nothing may follow "{" on the same line in Dovecot's configuration.
    cat >"$DOVECOT_CONF" <<EOF
# Dovecot 2.3 test instance; generated by tests/harness/mailservers.sh.
protocols = imap lmtp
listen = $HOST
base_dir = $DOVECOT_BASE
state_dir = $DIR/dovecot/state
log_path = $DOVECOT_LOG
info_log_path = $DOVECOT_LOG
verbose_proctitle = yes

# Plain-text IMAP on loopback, no TLS.
# TLS with a self-signed certificate (made at start): STARTTLS on the imap
# port, implicit TLS on the imaps port. Plaintext LOGIN stays allowed.
ssl = yes
ssl_cert = <$DIR/tls/cert.pem
ssl_key = <$DIR/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0

# Login processes refuse to run as root; mail is stored as user "mail".
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
mail_location = maildir:$MAILDIR_ROOT/%d/%n:LAYOUT=fs

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/dovecot-users
}
# Any address gets a mailbox: LMTP accepts all recipients.
userdb {
  driver = static
  args = uid=mail gid=mail home=$MAILDIR_ROOT/%d/%n allow_all_users=yes
}

# "/" as hierarchy separator and LAYOUT=fs (above): folder "Queues/Billing"
# is the plain path Queues/Billing below the user's Maildir.
namespace inbox {
  inbox = yes
  separator = /
  prefix =
  mailbox Sent {
    special_use = \Sent
  }
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox Trash {
    special_use = \Trash
  }
  mailbox Junk {
    special_use = \Junk
  }
}

service imap-login {
  inet_listener imap {
    address = $HOST
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = $HOST
    port = $IMAPS_PORT
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = $HOST
    port = $LMTP_PORT
  }
}

protocol imap {
  mail_max_userip_connections = 100
}
protocol lmtp {
  postmaster_address = postmaster@example.test
}
EOF
    chmod 0644 "$DOVECOT_CONF"
}

write_postfix_conf() {
    cat >"$POSTFIX_CONF/main.cf" <<EOF
# Postfix 3.7 test instance; generated by tests/harness/mailservers.sh.
# Start/stop with: postfix -c $POSTFIX_CONF start|stop
compatibility_level = 3.6
queue_directory = $POSTFIX_QUEUE
data_directory = $POSTFIX_DATA
mail_owner = postfix
setgid_group = postdrop

# No syslog here: log to a file through the postlog service (master.cf).
maillog_file = $POSTFIX_LOG
maillog_file_prefixes = $DIR/

myhostname = mail.switchboard.test
mydomain = switchboard.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
mynetworks = 127.0.0.0/8
inet_interfaces = $HOST
inet_protocols = ipv4
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
notify_classes =
biff = no

# All mail for these domains goes to Dovecot over LMTP.
virtual_mailbox_domains = $MAIL_DOMAINS
virtual_transport = lmtp:inet:$HOST:$LMTP_PORT
# Nothing leaves the machine: smtpd refuses recipients in any other domain
# at RCPT time (550 5.1.1 ... Recipient address rejected: this test instance
# delivers only to ...), instead of queueing mail that can never be delivered.
default_transport = error:this test instance delivers only to $MAIL_DOMAINS
relay_transport = \$default_transport

# There is no DNS: resolve with /etc/hosts only, never look up MX records.
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no

# Retry deferred mail (e.g. while Dovecot is down) within about a second.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
transport_retry_time = 1s
lmtp_connect_timeout = 5s

# Tests send many messages quickly and provoke errors on purpose.
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_client_connection_count_limit = 0
EOF
    # The standard services, none chrooted, SMTP on our loopback port only.
    cat >"$POSTFIX_CONF/master.cf" <<EOF
# service  type  private unpriv chroot wakeup maxproc command
$HOST:$SMTP_PORT inet n - n - - smtpd
pickup     unix  n       -      n      60     1       pickup
cleanup    unix  n       -      n      -      0       cleanup
qmgr       unix  n       -      n      300    1       qmgr
rewrite    unix  -       -      n      -      -       trivial-rewrite
bounce     unix  -       -      n      -      0       bounce
defer      unix  -       -      n      -      0       bounce
trace      unix  -       -      n      -      0       bounce
verify     unix  -       -      n      -      1       verify
flush      unix  n       -      n      1000?  0       flush
proxymap   unix  -       -      n      -      -       proxymap
proxywrite unix  -       -      n      -      1       proxymap
smtp       unix  -       -      n      -      -       smtp
relay      unix  -       -      n      -      -       smtp
showq      unix  n       -      n      -      -       showq
error      unix  -       -      n      -      -       error
retry      unix  -       -      n      -      -       error
discard    unix  -       -      n      -      -       discard
lmtp       unix  -       -      n      -      -       lmtp
anvil      unix  -       -      n      -      1       anvil
scache     unix  -       -      n      -      1       scache
postlog    unix-dgram n  -      n      -      1       postlogd
EOF
    chmod 0644 "$POSTFIX_CONF/main.cf" "$POSTFIX_CONF/master.cf"
    # `postfix start` stalls for ~2 s when main.cf was modified within the
    # last second (measured with Postfix 3.7); the content is final, so date
    # the files back a little.
    touch -d '3 seconds ago' "$POSTFIX_CONF/main.cf" "$POSTFIX_CONF/master.cf"
}

# make_postfix_queue: create the queue directories with the owners and modes
# that the installed Postfix lists in its postfix-files. `postfix start` would
# create them too (post-install create-missing), but that shell script takes
# 1-2 s for a fresh queue; with the directories in place, `postfix start` only
# verifies them.
make_postfix_queue() {
    local meta line path type owner group mode
    meta=$(postconf -d -h meta_directory)
    while IFS= read -r line; do
        IFS=: read -r path type owner group mode _ <<<"$line"
        [ "$type" = d ] || continue
        path=$POSTFIX_QUEUE${path#\$queue_directory}
        owner=${owner/\$mail_owner/postfix}
        group=${group/\$setgid_group/postdrop}
        mkdir -p "$path"
        if [ "$group" = - ]; then chown "$owner" "$path"; else chown "$owner:$group" "$path"; fi
        chmod "$mode" "$path"
    done < <(grep -s "^[\$]queue_directory" "$meta/postfix-files")
    # An empty queue made just now needs no integrity check: let the first
    # `postfix start` skip it (Postfix's own quick-start marker, removed by
    # that start; later starts check the queue as usual). Saves ~1 s.
    if [ -d "$POSTFIX_QUEUE/pid" ]; then : >"$POSTFIX_QUEUE/quick-start"; fi
}

# ---------------------------------------------------------------------------
# Dovecot.

dovecot_running() { pid_alive "$DOVECOT_PID" dovecot >/dev/null; }

do_start_dovecot() {
    read_ports
    if dovecot_running; then
        wait_ready "$START_TIMEOUT" "imap:$IMAP_PORT" "imaps:$IMAPS_PORT" "lmtp:$LMTP_PORT"
        return
    fi
    do_stop_dovecot # leftovers of a killed master would hold the ports
    # A killed master leaves its master.pid behind, and Dovecot refuses to
    # start ("Dovecot is already running with PID ...") for as long as that
    # pid exists, which includes the time it is a zombie not yet reaped.
    rm -f "$DOVECOT_PID"
    # The master daemonizes but keeps the descriptors it was given: never
    # hand it the caller's pipes, or whoever reads our output waits forever.
    if ! dovecot -c "$DOVECOT_CONF" </dev/null >/dev/null 2>>"$DOVECOT_STDERR"; then
        echo "mailservers: dovecot failed to start" >&2
        show_logs "$DOVECOT_STDERR" "$DOVECOT_LOG"
        return 1
    fi
    if ! wait_ready "$START_TIMEOUT" "imap:$IMAP_PORT" "imaps:$IMAPS_PORT" "lmtp:$LMTP_PORT"; then
        show_logs "$DOVECOT_STDERR" "$DOVECOT_LOG"
        return 1
    fi
}

# do_stop_dovecot [fast]
do_stop_dovecot() {
    local pid
    if ! pid=$(pid_alive "$DOVECOT_PID" dovecot); then
        if pid=$(read_pid "$DOVECOT_PID"); then stop_orphans dovecot "$pid"; fi
        return 0
    fi
    if [ "${1:-}" != fast ]; then
        # Orderly: SIGTERM to the master, as `dovecot -c DOVECOT_CONF stop`
        # does. The master closes the listeners, stops its idle children and
        # exits (about a second). `dovecot stop` would wait too, but counts the
        # exited master as running until init has reaped it (1-2 s more here).
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT))
        while pid_alive "$DOVECOT_PID" dovecot >/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.05
        done
    fi
    # Dovecot 2.3 leaves imap processes with a command in progress (IDLE!)
    # running after the master has gone, and the log and stats processes
    # with them. SIGTERM makes an imap process send "* BYE Server shutting
    # down." and exit, so a full stop looks to clients like a server shutdown.
    # The fast variant (teardown) signals the whole group at once.
    kill -TERM -- "-$pid" 2>/dev/null || true
    stop_group dovecot "$pid"
}

# ---------------------------------------------------------------------------
# Postfix.

postfix_running() { pid_alive "$POSTFIX_PID" master >/dev/null; }

do_start_postfix() {
    read_ports
    if postfix_running; then
        wait_ready "$START_TIMEOUT" "smtp:$SMTP_PORT"
        return
    fi
    do_stop_postfix # leftovers of a killed master
    # `postfix start` checks the queue, starts master and waits for its
    # initialization; keep the caller's pipes away from the daemons.
    if ! postfix -c "$POSTFIX_CONF" start </dev/null >>"$POSTFIX_STDOUT" 2>&1; then
        echo "mailservers: postfix failed to start" >&2
        show_logs "$POSTFIX_STDOUT" "$POSTFIX_LOG"
        return 1
    fi
    if ! wait_ready "$START_TIMEOUT" "smtp:$SMTP_PORT"; then
        show_logs "$POSTFIX_STDOUT" "$POSTFIX_LOG"
        return 1
    fi
}

do_stop_postfix() {
    local pid
    if ! pid=$(pid_alive "$POSTFIX_PID" master); then
        if pid=$(read_pid "$POSTFIX_PID"); then stop_orphans postfix "$pid"; fi
        return 0
    fi
    # `postfix abort` sends the master the same SIGTERM as `postfix stop`
    # (which then polls only once a second, counting a not yet reaped master
    # as running); the master takes its process group down with it.
    postfix -c "$POSTFIX_CONF" abort </dev/null >>"$POSTFIX_STDOUT" 2>&1 ||
        kill -TERM "$pid" 2>/dev/null || true
    stop_group postfix "$pid"
}

# ---------------------------------------------------------------------------
# Commands.

cmd_start() {
    local users=("$@") attempt ports tool f
    [ "${#users[@]}" -gt 0 ] || users=("${DEFAULT_USERS[@]}")

    [ -d "$DIR" ] || die "$DIR does not exist (the caller creates it)"
    [ ! -e "$DIR/ports" ] || die "$DIR already holds an instance; use a fresh directory"
    [ "${#DIR}" -le 70 ] || die "DIR is too long for Unix socket paths (max 70 characters): $DIR"
    for tool in dovecot doveadm postfix "$PYTHON"; do
        command -v "$tool" >/dev/null || die "$tool not found; run scripts/install-test-deps.sh"
    done

    umask 022
    mkdir -p "$DIR/dovecot/run" "$DIR/dovecot/state" "$MAILDIR_ROOT" \
        "$POSTFIX_CONF" "$POSTFIX_QUEUE" "$POSTFIX_DATA"
    chown mail:mail "$MAILDIR_ROOT"
    chown postfix "$POSTFIX_DATA"
    write_users "${users[@]}"
    make_postfix_queue
    # A self-signed certificate for the TLS tests (valid for 127.0.0.1).
    mkdir -p "$DIR/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days 2 -subj "/CN=$HOST" -addext "subjectAltName=IP:$HOST" \
        -keyout "$DIR/tls/key.pem" -out "$DIR/tls/cert.pem" >/dev/null 2>&1 ||
        die "openssl could not make a test certificate"
    chmod 0644 "$DIR/tls/cert.pem" "$DIR/tls/key.pem"

    for attempt in $(seq 1 "$START_ATTEMPTS"); do
        mapfile -t ports < <(pick_ports 4)
        [ "${#ports[@]}" -eq 4 ] || die "could not pick free ports"
        IMAP_PORT=${ports[0]} LMTP_PORT=${ports[1]} SMTP_PORT=${ports[2]} IMAPS_PORT=${ports[3]}
        printf 'IMAP_PORT=%s\nLMTP_PORT=%s\nSMTP_PORT=%s\nIMAPS_PORT=%s\n' \
            "$IMAP_PORT" "$LMTP_PORT" "$SMTP_PORT" "$IMAPS_PORT" >"$DIR/ports"
        write_dovecot_conf
        write_postfix_conf
        if do_start_dovecot && do_start_postfix; then
            break
        fi
        do_stop_postfix
        do_stop_dovecot
        # Another process may have taken a port between picking and binding:
        # try again with new ports; give up on any other failure.
        if [ "$attempt" -lt "$START_ATTEMPTS" ] &&
            grep -qsi 'address already in use' "$DOVECOT_STDERR" "$DOVECOT_LOG" \
                "$POSTFIX_STDOUT" "$POSTFIX_LOG"; then
            echo "mailservers: a port was taken, retrying with other ports" >&2
            for f in "$DOVECOT_STDERR" "$DOVECOT_LOG" "$POSTFIX_STDOUT" "$POSTFIX_LOG"; do
                if [ -f "$f" ]; then mv "$f" "$f.attempt$attempt"; fi
            done
            continue
        fi
        rm -f "$DIR/ports"
        die "start failed (logs in $DIR)"
    done

    local IFS=,
    cat >"$DIR/env.tmp" <<EOF
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
LMTP_PORT=$LMTP_PORT
SMTP_PORT=$SMTP_PORT
HOST=$HOST
PASSWORD=$PASSWORD
MAILDIR_ROOT=$MAILDIR_ROOT
USERS=${users[*]}
DOVECOT_CONF=$DOVECOT_CONF
POSTFIX_CONFIG_DIR=$POSTFIX_CONF
DOVECOT_LOG=$DOVECOT_LOG
POSTFIX_LOG=$POSTFIX_LOG
EOF
    mv "$DIR/env.tmp" "$DIR/env"
    cat "$DIR/env"
}

cmd_stop() {
    # Idempotent: a directory without a running instance is fine.
    [ -d "$DIR" ] || return 0
    do_stop_postfix
    do_stop_dovecot fast
}

cmd_status() {
    local d=stopped p=stopped
    if dovecot_running; then d=running; fi
    if postfix_running; then p=running; fi
    echo "dovecot=$d"
    echo "postfix=$p"
}

main() {
    [ $# -ge 2 ] || usage
    local cmd=$1
    load_instance "$2"
    shift 2
    case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    stop-dovecot) do_stop_dovecot ;;
    start-dovecot) do_start_dovecot ;;
    restart-dovecot) do_stop_dovecot && do_start_dovecot ;;
    stop-postfix) do_stop_postfix ;;
    start-postfix) do_start_postfix ;;
    *) usage ;;
    esac
}

main "$@"
