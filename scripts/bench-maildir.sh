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
mkdir -p "$DIR/Maildir/new" "$DIR/Maildir/cur" "$DIR/Maildir/tmp"
python3 - "$ROOT/examples/demo/Maildir/new" "$DIR/Maildir/new" "$N" <<'PY'
import os, re, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = [open(os.path.join(src, f), "rb").read() for f in sorted(os.listdir(src)) if not f.startswith(".")]
for i in range(n):
    raw = re.sub(rb"(?im)^message-id:\s*<", b"Message-ID: <b%d-" % i, corpus[i % len(corpus)], count=1)
    with open(os.path.join(dst, "1800000000.M%dP1.bench" % i), "wb") as f:
        f.write(raw)
PY
sed -e "s#^rules_dir.*#rules_dir = \"$ROOT/rules\"#" \
    -e "s#^templates_dir.*#templates_dir = \"$ROOT/templates\"#" \
    -e "s#^extra_rules_dirs.*#extra_rules_dirs = [\"$ROOT/examples/demo/rules\"]#" \
    -e "s#^extra_templates_dirs.*#extra_templates_dirs = [\"$ROOT/examples/demo/templates\"]#" \
    -e 's#^\[company\]#auto_reply = false\n\n[company]#' \
    examples/demo/switchboard.toml >"$DIR/switchboard.toml"
# The demo's order lookup reads orders.db next to the config.
cp examples/demo/orders.db "$DIR/"
START=$(date +%s.%N)
/usr/bin/time -o "$DIR/time" -f '%M' target/release/switchboard run --once --config "$DIR/switchboard.toml" 2>"$DIR/once.log" >/dev/null ||
    { tail -20 "$DIR/once.log" >&2; exit 1; }
END=$(date +%s.%N)
python3 -c "import sys; n,s,e,kb=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]); print(f'maildir: {n} messages in {e-s:.2f} s = {n/(e-s):.0f} msg/s; peak RSS {kb/1024:.0f} MiB')" "$N" "$START" "$END" "$(tail -1 "$DIR/time")"
