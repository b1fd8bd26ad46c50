#!/usr/bin/env bash
# screen_same.sh — are two builds' screening outputs byte-identical? For each input, compares
# `cartgate screen --json`, `screen --include-pending` (text), `profile --json` and `profile`
# (text) of OLD and NEW (md5 of each); exit status 1 when any differs. Both builds get this
# tree's --criteria and --mappings, so only the code differs.
#
#   bench/screen_same.sh OLD_CARTGATE NEW_CARTGATE INPUT...
#
# e.g. an NDJSON synth cohort (`cartgate synth --seed 7 --patients 1000 --out DIR --format
# ndjson`) and the shared Synthea data (../shared/data, SOURCES.md).
set -uo pipefail
old=${1:?old cartgate} new=${2:?new cartgate}
shift 2
[ $# -gt 0 ] || { echo "usage: $0 OLD NEW INPUT..." >&2; exit 2; }
src=$(cd "$(dirname "$0")/.." && pwd)
common=(--as-of 2026-11-01 --keep-going --mappings "$src/mappings")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # binary out-prefix input
  "$1" screen "${common[@]}" --criteria "$src/conf/criteria" --json "$3" >"$2.screen.json" 2>&1
  "$1" screen "${common[@]}" --criteria "$src/conf/criteria" --include-pending "$3" >"$2.screen.txt" 2>&1
  "$1" profile "${common[@]}" --json "$3" >"$2.profile.json" 2>&1
  "$1" profile "${common[@]}" "$3" >"$2.profile.txt" 2>&1
}
status=0
for input in "$@"; do
  run "$old" "$tmp/old" "$input"
  run "$new" "$tmp/new" "$input"
  for k in screen.json screen.txt profile.json profile.txt; do
    if cmp -s "$tmp/old.$k" "$tmp/new.$k"; then r=identical; else r=DIFFERENT; status=1; fi
    printf '%s %s %s (%s bytes, md5 %s)\n' "$input" "$k" "$r" "$(wc -c <"$tmp/new.$k")" \
      "$(md5sum <"$tmp/new.$k" | cut -c1-12)"
  done
done
exit $status
