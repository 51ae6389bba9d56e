#!/usr/bin/env bash
# CPU work per message, counted in instructions (valgrind's cachegrind):
# unlike wall or CPU time, the count barely moves between runs on a busy
# machine, so it shows changes of a few percent that timings cannot.
#
#   scripts/bench-instructions.sh [BIN ...]
#
# Each binary (default: a fresh release build) runs `run --once`, route
# only, over a Maildir holding the demo corpus twice: SMALL and LARGE
# messages (default 300 and 1300, env SMALL / LARGE). The difference
# divided by LARGE - SMALL is the work per message, without start-up
# (loading the rules and building the FAQ index). Several binaries are
# measured one after the other, e.g. an old and a new build:
#
#   cp target/release/switchboard /tmp/sb-old   # before a change
#   ...change, cargo build --release...
#   scripts/bench-instructions.sh /tmp/sb-old target/release/switchboard
#
# Needs valgrind (apt-get install valgrind). Takes about 10 s per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMALL=${SMALL:-300}
LARGE=${LARGE:-1300}
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 1; }
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$ROOT/target/release/switchboard"
fi
DIR=$(mktemp -d /tmp/sbinstr.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

count() { # $1 = binary, $2 = messages; prints the instructions of one run
    local work=$DIR/run
    rm -rf "$work"
    scripts/demo-backlog.sh "$work" "$2"
    (cd "$work" && valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/cg" \
        "$1" run --once --config "$work/switchboard.toml" 2>"$work/log" >/dev/null) ||
        { tail -20 "$work/log" >&2; exit 1; }
    grep -o "I *refs: *[0-9,]*" "$work/log" | tr -dc '0-9'
}

for bin in "$@"; do
    bin=$(realpath "$bin")
    small=$(count "$bin" "$SMALL")
    large=$(count "$bin" "$LARGE")
    python3 -c "import sys; b,s,l,ns,nl=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]); per=(l-s)/(nl-ns); print(f'{b}: {per/1e6:.3f} M instructions per message; start-up and {ns} messages {s/1e6:.0f} M')" \
        "$bin" "$small" "$large" "$SMALL" "$LARGE"
done
