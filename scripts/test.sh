#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. installs what the integration tests need (Dovecot, Postfix and
#      PostgreSQL from Debian's packages; they are started privately on
#      loopback by the tests themselves, never as system services),
#   2. checks formatting, lints and the doc comments' links, and the
#      systemd unit in deploy/,
#   3. runs unit, integration and benchmark-smoke tests,
#   4. builds the Debian package and checks it (scripts/build-deb.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo doc (links in doc comments)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "== scripts/check-deploy.sh"
./scripts/check-deploy.sh
echo "== cargo test"
cargo test --all-targets
cargo test --doc --quiet
echo "== scripts/build-deb.sh"
./scripts/build-deb.sh
