#!/usr/bin/env bash
# Install the servers used by the integration tests (Debian 12):
#   dovecot-imapd, dovecot-lmtpd (Dovecot 2.3) and postfix (Postfix 3.7),
#   postgresql (15: tests/harness/postgres.sh runs private clusters),
# and systemd for systemd-analyze (scripts/check-deploy.sh checks the unit in
# deploy/; no systemd needs to be running).
#
# Idempotent and quiet on success: does nothing when `dovecot`, `postfix`,
# `doveadm` and `systemd-analyze` are already on PATH. Must run as root (or
# with sudo available).
#
# The tests never use the packages' system-wide instances (/etc/dovecot,
# /etc/postfix): tests/harness/mailservers.sh runs private instances with
# their own configuration. Whatever the package scripts started is stopped
# again here, so that no system daemon occupies ports 25/143/993.
set -euo pipefail

# chromium: the report test renders the HTML report in a headless browser.
PACKAGES=(dovecot-imapd dovecot-lmtpd postfix openssl systemd postgresql chromium)
PATH="$PATH:/usr/sbin:/sbin"

have_all() {
    command -v dovecot >/dev/null 2>&1 &&
        command -v postfix >/dev/null 2>&1 &&
        command -v doveadm >/dev/null 2>&1 &&
        command -v openssl >/dev/null 2>&1 &&
        command -v systemd-analyze >/dev/null 2>&1 &&
        command -v chromium >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_all; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-test-deps: must run as root (or with sudo) to install ${PACKAGES[*]}" >&2
        exit 1
    fi
fi

log=$(mktemp)
# Keep the package scripts from starting the system instances at all: a
# policy-rc.d that denies every action (only if the machine has none; it is
# removed again afterwards).
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
    rm -f "$log"
    if [ "$own_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Temporary, from install-test-deps.sh: start no services.\nexit 101\n' |
        "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 0755 "$policy"
    own_policy=1
fi

# Keep postfix's postinst from asking how mail should be configured.
echo "postfix postfix/main_mailer_type select No configuration" |
    "${SUDO[@]}" debconf-set-selections

apt_install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1
}

# Try without refreshing the package lists first (fast when they are current);
# on failure (e.g. lists missing or stale) update once and retry.
if ! apt_install; then
    if ! { "${SUDO[@]}" apt-get update -q >>"$log" 2>&1 && apt_install; }; then
        echo "install-test-deps: installing ${PACKAGES[*]} failed:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
fi

# Stop the system instances in case something started them anyway (e.g. a
# policy-rc.d of the machine's own that allows it). Errors are irrelevant: in
# the usual case nothing is running.
"${SUDO[@]}" postfix stop >/dev/null 2>&1 || true
"${SUDO[@]}" dovecot stop >/dev/null 2>&1 || true
if [ -x /etc/init.d/postfix ]; then
    "${SUDO[@]}" /etc/init.d/postfix stop >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/dovecot ]; then
    "${SUDO[@]}" /etc/init.d/dovecot stop >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/postgresql ]; then
    "${SUDO[@]}" /etc/init.d/postgresql stop >/dev/null 2>&1 || true
fi

if ! have_all; then
    echo "install-test-deps: packages installed but dovecot/postfix/doveadm/systemd-analyze/initdb not found" >&2
    exit 1
fi
