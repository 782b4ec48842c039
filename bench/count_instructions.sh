#!/usr/bin/env bash
# Instructions per proxied request (Python work only), counted by callgrind: repeatable on a
# noisy machine where wall-clock micro benchmarks are not. Two runs of different lengths are
# subtracted so start-up cost cancels out.
#   bench/count_instructions.sh            -> "N instructions per request"
#   bench/count_instructions.sh --extra F  -> the same with F's YAML added to the config
#   bench/count_instructions.sh --auth     -> the jwt + rate_limit route of bench/configs/auth.yaml
#   bench/count_instructions.sh --token-only -> the plain route, sent the same bearer token
#   bench/count_instructions.sh --cache    -> instructions per cache hit (bench/micro_cache.py)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$PWD}
SCRIPT=bench/micro_proxy.py
WHAT="proxied request"
if [[ "${1:-}" == "--cache" ]]; then
    SCRIPT=bench/micro_cache.py  # one miss fills the store, then every request is a hit
    WHAT="cache hit"
    shift
fi
count() {
    local out
    out=$(mktemp)
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out" "$ROOT/.venv/bin/python" "$SCRIPT" --requests "$1" "${EXTRA[@]}" \
        >/dev/null 2>&1
    awk '/^summary:/ {print $2}' "$out"
    rm -f "$out"
}
EXTRA=("$@")
if [[ " $* " == *" --auth "* || " $* " == *" --token-only "* ]]; then
    # One RSA key for both runs: making one costs a random number of instructions.
    keys=$(mktemp -d)
    trap 'rm -rf "$keys"' EXIT
    EXTRA+=(--auth-dir "$keys")
    "$ROOT/.venv/bin/python" bench/micro_proxy.py --requests 1 "${EXTRA[@]}" >/dev/null  # makes them
fi
small=$(count 1000)
large=$(count 6000)
echo "$(( (large - small) / 5000 )) instructions per $WHAT (Python work only)"
