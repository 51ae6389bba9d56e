#!/usr/bin/env bash
# Checks the systemd deployment files in deploy/ (see deploy/README.md):
#
#   1. `systemd-analyze verify` on deploy/switchboard.service. Any message it
#      prints fails the check (verify exits 0 on most warnings, e.g. unknown
#      or misspelled keys, so its output is inspected, not just its status).
#   2. `systemd-analyze security --offline=yes`: the unit's exposure level
#      must be at most 2.0 ("OK").
#   3. As root only: deploy/sysusers.d and deploy/tmpfiles.d are applied to a
#      scratch root directory (never to this machine), and the resulting
#      owners and modes are checked.
#
# Usage: scripts/check-deploy.sh [SWITCHBOARD_BINARY]
#
# verify insists that every Exec*= program exists and is executable. The
# checked copy of the unit therefore has /usr/local/bin/switchboard replaced
# by SWITCHBOARD_BINARY (default: target/debug/switchboard of this checkout),
# or by /bin/true when that does not exist (as in CI, where this runs before
# anything is built). Only the path is replaced; every other line is checked
# as shipped. Needs systemd-analyze (Debian package `systemd`), but no running
# systemd.
set -euo pipefail

# Highest acceptable exposure, in the tenths systemd-analyze computes with:
# it prints the exposure as X.Y and `--threshold=N` fails when the exposure is
# above N/10 (systemd 252: 1.2 passes --threshold=12, fails --threshold=11).
MAX_EXPOSURE=20

# Messages of `systemd-analyze verify` that are accepted, as extended regular
# expressions matched against whole lines. Each entry needs a reason. None is
# needed at present: the missing `switchboard` user (created by sysusers.d on
# a real host) does not make verify complain, and missing executables are
# handled by rewriting the paths (above and below) rather than by ignoring
# the message.
VERIFY_WHITELIST=()

fail() {
    echo "check-deploy: FAILED: $*" >&2
    exit 1
}

# Resolve the binary argument against the caller's directory, before cd.
bin=${1:-}
if [ -n "$bin" ] && [ "${bin#/}" = "$bin" ]; then
    bin="$PWD/$bin"
fi
cd "$(dirname "$0")/.."
repo=$PWD
if [ -z "$bin" ]; then
    bin="$repo/target/debug/switchboard"
fi

unit=deploy/switchboard.service
sysusers=deploy/sysusers.d/switchboard.conf
tmpfiles=deploy/tmpfiles.d/switchboard.conf
for f in "$unit" "$sysusers" "$tmpfiles"; do
    [ -f "$f" ] || fail "$f is missing"
done
command -v systemd-analyze >/dev/null 2>&1 ||
    fail "systemd-analyze not found; install the Debian package \`systemd\` (scripts/install-test-deps.sh does)"

# A path that cannot be written into an Exec*= line as is (whitespace,
# specifiers, quotes) would test the rewriting, not the unit.
if [ ! -x "$bin" ] || [ -d "$bin" ] || [[ "$bin" =~ [[:space:]%\$\\\"\'\;] ]]; then
    echo "check-deploy: note: $bin is not a usable executable; checking ExecStart= with /bin/true"
    bin=/bin/true
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The copy that is checked. It keeps the name switchboard.service: verify
# and security derive the unit name from the file name.
unit_text=$(<"$unit")
unit_text=${unit_text//\/usr\/local\/bin\/switchboard/"$bin"}
# /bin/kill (ExecReload=) comes from procps, which every normal Debian
# system has (priority "important") but minimal container images lack.
if [ ! -x /bin/kill ]; then
    echo "check-deploy: note: /bin/kill is missing here (package procps); checking ExecReload= with /bin/true"
    unit_text=${unit_text//\/bin\/kill /"/bin/true "}
fi
printf '%s\n' "$unit_text" >"$tmp/switchboard.service"

export SYSTEMD_LOG_COLOR=0 SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat

# --- 1. verify ---------------------------------------------------------------
echo "check-deploy: systemd-analyze verify $unit"
set +e
# --man=no: a Documentation=man:… entry would otherwise need man-db here.
(cd "$tmp" && systemd-analyze verify --man=no ./switchboard.service) >"$tmp/verify.out" 2>&1
verify_rc=$?
set -e
unexpected=$(
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        ok=0
        for re in "${VERIFY_WHITELIST[@]}"; do
            if [[ "$line" =~ $re ]]; then
                ok=1
                break
            fi
        done
        [ "$ok" = 1 ] || printf '%s\n' "$line"
    done <"$tmp/verify.out"
)
if [ "$verify_rc" -ne 0 ] || [ -n "$unexpected" ]; then
    echo "systemd-analyze verify (exit status $verify_rc) reported:" >&2
    # Point at the shipped file, not at the temporary copy.
    sed "s#$tmp/#deploy/#g; s#^\./switchboard.service#$unit#" "$tmp/verify.out" >&2
    fail "$unit does not pass systemd-analyze verify (every warning counts; see VERIFY_WHITELIST in $0)"
fi

# --- 2. security exposure ----------------------------------------------------
echo "check-deploy: systemd-analyze security --offline=yes --threshold=$MAX_EXPOSURE $unit"
set +e
(cd "$tmp" && systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" \
    --no-pager ./switchboard.service) >"$tmp/security.out" 2>&1
security_rc=$?
set -e
overall=$(grep -a 'Overall exposure level' "$tmp/security.out" || true)
exposure=$(printf '%s\n' "$overall" | sed -n 's/.*: \([0-9][0-9]*\.[0-9]\) .*/\1/p')
if [ -z "$exposure" ]; then
    cat "$tmp/security.out" >&2
    fail "could not read the exposure level from systemd-analyze security"
fi
# The settings that still cost exposure (the justified ones are explained in
# the unit's comments: network access, AF_UNIX for sd_notify, ...).
grep -a '^✗' "$tmp/security.out" | sed 's/  */ /g; s/^/    /' || true
if [ "$security_rc" -ne 0 ]; then
    cat "$tmp/security.out" >&2
    fail "exposure level of $unit is $exposure, above the allowed $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10))"
fi
echo "check-deploy: exposure $exposure (at most $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10)) allowed)"

# --- 3. sysusers.d and tmpfiles.d in a scratch root ----------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "check-deploy: note: not root, skipping the sysusers.d/tmpfiles.d check (it needs chown)"
else
    echo "check-deploy: systemd-sysusers + systemd-tmpfiles --create in a scratch root"
    root="$tmp/root"
    mkdir -p "$root/etc" "$root/var/lib"
    systemd-sysusers --root="$root" "$repo/$sysusers" >"$tmp/sysusers.out" 2>&1 || {
        cat "$tmp/sysusers.out" >&2
        fail "systemd-sysusers rejected $sysusers"
    }
    # sysusers reports what it creates ("Creating user ..."); anything else
    # is a warning about the file.
    if grep -av '^Creating \(user\|group\) ' "$tmp/sysusers.out" | grep -q .; then
        cat "$tmp/sysusers.out" >&2
        fail "systemd-sysusers warned about $sysusers"
    fi
    systemd-tmpfiles --root="$root" --create "$repo/$tmpfiles" >"$tmp/tmpfiles.out" 2>&1 || {
        cat "$tmp/tmpfiles.out" >&2
        fail "systemd-tmpfiles rejected $tmpfiles"
    }
    if [ -s "$tmp/tmpfiles.out" ]; then
        cat "$tmp/tmpfiles.out" >&2
        fail "systemd-tmpfiles warned about $tmpfiles"
    fi
    # Owners are compared numerically, with the ids from the scratch root's
    # passwd/group (the host's may differ or lack the user).
    uid=$(awk -F: '$1 == "switchboard" { print $3 }' "$root/etc/passwd")
    gid=$(awk -F: '$1 == "switchboard" { print $3 }' "$root/etc/group")
    if [ -z "$uid" ] || [ -z "$gid" ]; then
        fail "$sysusers did not create the user and group switchboard"
    fi
    expect() {
        local got
        got=$(stat -c '%a %u %g' "$root$1" 2>/dev/null) || fail "$tmpfiles did not create $1"
        [ "$got" = "$2" ] || fail "$1 has mode/uid/gid $got, expected $2"
    }
    expect /var/lib/switchboard "750 $uid $gid"
    expect /etc/switchboard "750 0 $gid"
    expect /etc/switchboard/credentials "700 0 0"
fi

echo "check-deploy: OK"
