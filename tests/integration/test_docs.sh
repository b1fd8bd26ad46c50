#!/usr/bin/env bash
# The README's configuration reference and the OPTIONS of cartgate.conf(5) are the generated
# ones: every row that `cartgate check-config --reference` prints for the option table must be
# in README.md, and the man page's generated section must equal `--reference --man`.
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
[ "$missing" -eq 0 ] || { echo "FAIL: $missing of $n rows differ; run scripts/update-docs"; exit 1; }

# cartgate.conf(5): the OPTIONS section is the roff made from the same rows, verbatim
man=$("$CG" check-config --reference --man) || { echo "FAIL: check-config --reference --man"; exit 1; }
page=$(sed -n '/^\.\\" BEGIN GENERATED OPTIONS/,/^\.\\" END GENERATED OPTIONS/p' "$SRC/docs/man/cartgate.conf.5" | sed '1d;$d')
[ "$(grep -c '^\.TP$' <<<"$man")" -eq "$((n - 1))" ] || { echo "FAIL: the man reference has not one entry per row"; exit 1; }
[ "$page" = "$man" ] || { echo "FAIL: docs/man/cartgate.conf.5 OPTIONS differ from the option table; run scripts/update-docs"; diff <(echo "$page") <(echo "$man") | head; exit 1; }
# both man pages render without groff warnings (when man-db is installed)
if command -v man >/dev/null 2>&1; then
  for p in cartgate.8 cartgate.conf.5; do
    w=$(MANWIDTH=80 man --warnings -l -Tutf8 "$SRC/docs/man/$p" 2>&1 >/dev/null) || { echo "FAIL: man $p"; exit 1; }
    [ -z "$w" ] || { echo "FAIL: man $p: $w"; exit 1; }
  done
fi
echo "$((n + 1)) passed, 0 failed"
