#!/usr/bin/env bash
# Instructions per egress absolute-form request, counted by callgrind (bench/micro_egress.py: the
# egress listener, a minimal origin and a client on one loop, over loopback sockets): repeatable
# on a noisy machine where wall-clock figures are not. Two runs of different lengths are
# subtracted so start-up cost cancels out. The client's and the origin's share (and the
# syscalls' user-side work) is in the figure too, the same in an A/B comparison.
#   bench/count_egress_instructions.sh            -> "N instructions per egress request"
#   bench/count_egress_instructions.sh --inbound  -> the same harness through the inbound listener
#                                                    (the `sidegate` row's path, to compare with)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$PWD}
count() {
    local out
    out=$(mktemp)
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out" "$ROOT/.venv/bin/python" \
        bench/micro_egress.py --requests "$1" "${EXTRA[@]}" >/dev/null 2>&1
    awk '/^summary:/ {print $2}' "$out"
    rm -f "$out"
}
EXTRA=("$@")
WHAT=egress
[[ " $* " == *" --inbound "* ]] && WHAT=inbound
small=$(count 1000)
large=$(count 6000)
echo "$(( (large - small) / 5000 )) instructions per $WHAT request (with the client's and origin's share)"
