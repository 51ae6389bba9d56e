#!/usr/bin/env bash
# Builds the Debian package target/debian/switchboard_*.deb and checks it.
#
#   scripts/build-deb.sh          build (profile `dist`: LTO, stripped) and check
#   scripts/build-deb.sh --check  check the newest existing package only
#
# Building needs cargo-deb (`cargo install cargo-deb --locked`; installed
# here when missing), lintian and promtool (apt-get, when missing). The
# checks:
#   0. `promtool check rules` on deploy/monitoring/alerts.yml;
#   1. `dpkg-deb --contents`: the binary, unit, sysusers.d/tmpfiles.d files,
#      the example config (a conffile), examples, man pages and completions;
#   2. `lintian`: no errors (warnings are printed);
#   3. `dpkg --root` into a scratch directory, then the installed binary
#      checks the installed example config (pointed at the installed
#      example rules and templates) and prints its version.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin"

# Tools of the checks, from Debian's packages: lintian, and promtool (in
# `prometheus`) for the alerting rules shipped in the package.
if ! command -v lintian >/dev/null || ! command -v promtool >/dev/null; then
    SUDO=()
    [ "$(id -u)" -ne 0 ] && SUDO=(sudo)
    install_tools() {
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            lintian prometheus >/dev/null
    }
    # Stale or missing package lists: update once and retry.
    install_tools || { "${SUDO[@]}" apt-get update -qq >/dev/null && install_tools; }
    # The package's own Prometheus service is not wanted here.
    "${SUDO[@]}" sh -c 'service prometheus stop || pkill -x prometheus' >/dev/null 2>&1 || true
fi

if [ "${1:-}" != "--check" ]; then
    command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
    cargo build --profile dist --locked --quiet
    BIN=target/dist/switchboard
    # Generated assets: the unit with the packaged binary's path, man pages
    # and shell completions from the clap definitions.
    rm -rf target/assets
    mkdir -p target/assets/systemd target/assets/man target/assets/completions
    sed 's#/usr/local/bin/switchboard#/usr/bin/switchboard#g' deploy/switchboard.service \
        >target/assets/systemd/switchboard.service
    "$BIN" man --out target/assets/man
    gzip -9n target/assets/man/*.1
    "$BIN" completions bash >target/assets/completions/switchboard.bash
    "$BIN" completions zsh >target/assets/completions/_switchboard
    "$BIN" completions fish >target/assets/completions/switchboard.fish
    cargo deb --profile dist --no-build --quiet
    echo "binary: $(stat -c %s "$BIN") bytes (profile dist)" >&2
fi

DEB=$(ls -t target/debian/switchboard_*.deb | head -1)
echo "package: $DEB ($(stat -c %s "$DEB") bytes)" >&2

# 0. The alerting rules the package ships.
promtool check rules deploy/monitoring/alerts.yml >/dev/null

# 1. Contents.
CONTENTS=$(dpkg-deb --contents "$DEB")
for f in ./usr/bin/switchboard ./usr/lib/systemd/system/switchboard.service \
    ./usr/lib/sysusers.d/switchboard.conf ./usr/lib/tmpfiles.d/switchboard.conf \
    ./etc/switchboard/switchboard.toml.example \
    ./usr/share/switchboard/examples/rules/30-route.toml \
    ./usr/share/switchboard/examples/rules/faq/ \
    ./usr/share/switchboard/examples/templates/faq/ \
    ./usr/share/man/man1/switchboard.1.gz ./usr/share/man/man1/switchboard-run.1.gz \
    ./usr/share/bash-completion/completions/switchboard \
    ./usr/share/zsh/vendor-completions/_switchboard \
    ./usr/share/fish/vendor_completions.d/switchboard.fish \
    ./usr/share/doc/switchboard/copyright; do
    grep -q " $f" <<<"$CONTENTS" || { echo "missing from the package: $f" >&2; exit 1; }
done
# (Whole outputs are captured before grep: `grep -q` closing a pipe early
# would fail the pipeline under pipefail.)
CONFFILES=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles)
grep -qx /etc/switchboard/switchboard.toml.example <<<"$CONFFILES" ||
    { echo "the example config is not a conffile" >&2; exit 1; }
UNIT=$(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/lib/systemd/system/switchboard.service)
grep -q "^ExecStart=/usr/bin/switchboard run" <<<"$UNIT" ||
    { echo "the packaged unit does not start /usr/bin/switchboard" >&2; exit 1; }
POSTINST=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./postinst)
grep -q "systemctl.*enable\|deb-systemd-helper.*enable" <<<"$POSTINST" ||
    { echo "postinst does not enable the unit" >&2; exit 1; }
if grep -q "deb-systemd-invoke start\|systemctl start" <<<"$POSTINST"; then
    echo "postinst starts the unit (it must only enable it)" >&2
    exit 1
fi

# 2. lintian: errors fail, warnings are shown.
OUT=$(lintian --tag-display-limit 0 "$DEB" || true)
[ -n "$OUT" ] && echo "$OUT" >&2
if grep -q '^E:' <<<"$OUT"; then
    echo "lintian reports errors" >&2
    exit 1
fi

# 3. Install into a scratch root (maintainer scripts are not run there) and
#    smoke-test the installed files.
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/var/lib/dpkg/updates" "$SCRATCH/var/lib/dpkg/info"
touch "$SCRATCH/var/lib/dpkg/status"
dpkg --root="$SCRATCH" --force-script-chrootless --force-not-root --force-depends \
    --no-triggers --unpack "$DEB" >/dev/null
"$SCRATCH/usr/bin/switchboard" --version
# Unpacked but not configured: dpkg leaves conffiles as *.dpkg-new.
CONFNEW=
[ -e "$SCRATCH/etc/switchboard/switchboard.toml.example" ] || CONFNEW=.dpkg-new
sed -e "s#/etc/switchboard/rules#$SCRATCH/usr/share/switchboard/examples/rules#" \
    -e "s#/etc/switchboard/templates#$SCRATCH/usr/share/switchboard/examples/templates#" \
    "$SCRATCH/etc/switchboard/switchboard.toml.example$CONFNEW" >"$SCRATCH/check.toml"
"$SCRATCH/usr/bin/switchboard" check --config "$SCRATCH/check.toml"
COMPLETION=$("$SCRATCH/usr/bin/switchboard" completions bash)
grep -q _switchboard <<<"$COMPLETION"
PAGE=$(zcat "$SCRATCH/usr/share/man/man1/switchboard-check.1.gz")
grep -q "path:line:col" <<<"$PAGE" || { echo "man page without the check description" >&2; exit 1; }
echo "package OK: $DEB" >&2
