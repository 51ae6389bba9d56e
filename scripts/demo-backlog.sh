#!/usr/bin/env bash
# Prepares DIR for a route-only backlog run on a local Maildir: DIR/Maildir
# holding N copies of the demo mail (each with a unique Message-ID) and
# DIR/switchboard.toml, the demo config with auto_reply = false and the
# rules and templates of this checkout. Used by the bench-*.sh scripts.
#
# Usage: scripts/demo-backlog.sh DIR N
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$1
N=$2
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
cp examples/demo/orders.db "$DIR/"
