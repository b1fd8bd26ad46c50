#!/usr/bin/env bash
# The README's configuration reference is the generated one: every line that
# `cartgate check-config --reference` prints for the option table must be in README.md.
set -u
SRC=${CARTGATE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
ref=$("$CG" check-config --reference) || { echo "FAIL: check-config --reference"; exit 1; }
n=0 missing=0
while IFS= read -r line; do
  case "$line" in "| "*) ;; *) continue ;; esac
  n=$((n + 1))
  grep -qxF -- "$line" "$SRC/README.md" || { echo "missing from README.md: $line"; missing=$((missing + 1)); }
done <<<"$ref"
[ "$n" -gt 20 ] || { echo "FAIL: only $n reference rows"; exit 1; }
[ "$missing" -eq 0 ] || { echo "FAIL: $missing of $n rows differ; paste the output of cartgate check-config --reference"; exit 1; }
echo "$n passed, 0 failed"
