#!/usr/bin/env bash
# Backlog benchmark on a local Maildir (no server): N copies of the demo
# mail (unique Message-IDs), the demo config with auto_reply = false,
# `switchboard run --once`; prints wall time, messages/s and peak RSS.
#
# Usage: scripts/bench-maildir.sh [N]     (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-10000}
cargo build --release --quiet
DIR=$(mktemp -d /tmp/sbmaildir.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
scripts/demo-backlog.sh "$DIR" "$N"
START=$(date +%s.%N)
/usr/bin/time -o "$DIR/time" -f '%M' target/release/switchboard run --once --config "$DIR/switchboard.toml" 2>"$DIR/once.log" >/dev/null ||
    { tail -20 "$DIR/once.log" >&2; exit 1; }
END=$(date +%s.%N)
python3 -c "import sys; n,s,e,kb=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]); print(f'maildir: {n} messages in {e-s:.2f} s = {n/(e-s):.0f} msg/s; peak RSS {kb/1024:.0f} MiB')" "$N" "$START" "$END" "$(tail -1 "$DIR/time")"
