#!/usr/bin/env bash
# screen_vs.sh — `cartgate screen --json` of two builds on the same input: CPU seconds (user +
# system) and MB/s of each, the ratio, peak RSS, and whether their outputs are identical.
#
#   bench/screen_vs.sh OLD_CARTGATE NEW_CARTGATE INPUT [RUNS=5] [PASSES=10]
#
# A run screens the input PASSES times in a row (small inputs such as the 10-patient Synthea
# export take a tenth of a second); runs alternate between the builds; medians of RUNS. The
# start-up of each build (criteria, tables: a run over an empty folder, measured the same way)
# is subtracted, so MB/s is what screening the input costs. Both builds get the same
# --criteria and --mappings (this tree's), so only the code differs.
set -euo pipefail
old=${1:?old cartgate} new=${2:?new cartgate} input=${3:?input} runs=${4:-5} passes=${5:-10}
src=$(cd "$(dirname "$0")/.." && pwd)
args=(screen --json --as-of 2026-11-01 --criteria "$src/conf/criteria" --mappings "$src/mappings")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/empty"
bytes=$(find "$input" -maxdepth 1 -type f \( -name '*.json' -o -name '*.ndjson' -o -name '*.jsonl' \) \
  -printf '%s\n' | awk '{s += $1} END {print s}')
"$old" "${args[@]}" "$input" >"$tmp/old.out"
"$new" "${args[@]}" "$input" >"$tmp/new.out"
if cmp -s "$tmp/old.out" "$tmp/new.out"; then same=identical; else same=DIFFERENT; fi
one() { # binary input -> "cpu_seconds peak_kib"
  /usr/bin/time -f '%U %S %M' -o "$tmp/t" bash -c \
    'for ((i = 0; i < $1; i++)); do "$2" "${@:4}" "$3" >/dev/null; done' _ "$passes" "$1" "$2" \
    "${args[@]}"
  awk '{printf "%.3f %d\n", $1 + $2, $3}' "$tmp/t"
}
for f in old new old0 new0; do : >"$tmp/$f"; done
for ((r = 0; r < runs; r++)); do
  one "$old" "$input" >>"$tmp/old"
  one "$new" "$input" >>"$tmp/new"
  one "$old" "$tmp/empty" >>"$tmp/old0"
  one "$new" "$tmp/empty" >>"$tmp/new0"
done
med() { sort -n "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
peak() { sort -k2 -n "$1" | tail -1 | awk '{printf "%.1f", $2 / 1024}'; }
mo=$(med "$tmp/old") mn=$(med "$tmp/new") so=$(med "$tmp/old0") sn=$(med "$tmp/new0")
awk -v b="$bytes" -v p="$passes" -v o="$mo" -v n="$mn" -v so="$so" -v sn="$sn" -v po="$(peak "$tmp/old")" \
    -v pn="$(peak "$tmp/new")" -v same="$same" -v r="$runs" -v src_in="$input" 'BEGIN {
  mb = b * p / 1e6
  printf "input: %s, %.1f MB x %d pass(es), median of %d runs (CPU s)\n", src_in, b / 1e6, p, r
  printf "old  %7.3f s - start-up %.3f s = %.3f s  %7.1f MB/s  peak RSS %6.1f MiB\n", o, so, o - so, mb / (o - so), po
  printf "new  %7.3f s - start-up %.3f s = %.3f s  %7.1f MB/s  peak RSS %6.1f MiB\n", n, sn, n - sn, mb / (n - sn), pn
  printf "new/old throughput: %.2fx (with start-up %.2fx); outputs %s\n", (o - so) / (n - sn), o / n, same
}'
