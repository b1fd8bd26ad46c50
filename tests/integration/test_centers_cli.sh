#!/usr/bin/env bash
# `cartgate centers`: nearest center from LAT,LON and (with the shared Census ZCTA copy, when
# present) from a ZIP; exclusions listed; JSON output; file:line errors and usage exit codes.
set -u
SRC=${CARTGATE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${CARTGATE_BIN:-$SRC/build/cartgate}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
N=0
fail() { echo "FAIL: $*"; exit 1; }
ok() { N=$((N + 1)); echo "ok $N - $*"; }
C="$SRC/conf/centers.json"

"$BIN" centers --centers "$C" --near 40.75,-74.00 --product axi-cel --as-of 2026-11-27 >"$TMP/out" ||
  fail "centers --near LAT,LON"
head -3 "$TMP/out" | grep -q ' 1\. east-river-nyc' || fail "nearest to Manhattan should be east-river-nyc: $(head -4 "$TMP/out")"
grep -q 'sonoran-phoenix: capacity is closed' "$TMP/out" || fail "closed center not listed as excluded"
grep -q 'prairie-kansascity: no unexpired accreditation' "$TMP/out" || fail "expired center not excluded"
ok "nearest center from coordinates; closed and expired centers excluded with reasons"
"$BIN" centers --centers "$C" --near 40.75,-74.00 --product axi-cel --date 2026-11-27 >"$TMP/old" 2>"$TMP/e" ||
  fail "the old spelling --date: $(cat "$TMP/e")"
cmp -s "$TMP/out" "$TMP/old" && grep -q -- '--date is deprecated, use --as-of' "$TMP/e" ||
  fail "--date should still work, with a note: $(cat "$TMP/e")"
"$BIN" centers --centers "$C" --near 40.75,-74.00 --as-of 2026-13-01 >/dev/null 2>"$TMP/e"
[ $? = 2 ] && grep -q 'cartgate centers: --as-of: not a date (YYYY-MM-DD): 2026-13-01' "$TMP/e" ||
  fail "a bad --as-of should be a usage error: $(cat "$TMP/e")"
ok "--as-of is strict YYYY-MM-DD; the old spelling --date gives the same answer with a deprecation note"

"$BIN" centers --centers "$C" --near 44.02,-92.47 --product ide-cel --json --as-of 2026-11-27 >"$TMP/j" ||
  fail "--json"
grep -q '"center": "mississippi-minneapolis"' "$TMP/j" || fail "JSON lacks the Minneapolis candidate"
grep -q '"beyond_stay_near": true' "$TMP/j" || fail "JSON lacks a stay-near flag"
grep -q '"does not offer ide-cel' "$TMP/j" 2>/dev/null || grep -q 'does not offer ide-cel' "$TMP/j" ||
  fail "JSON lacks the product exclusion"
ok "JSON output with candidates, stay-near flags and exclusions"

"$BIN" centers --centers "$C" --near 55905 >/dev/null 2>"$TMP/e"
[ $? = 2 ] || fail "ZIP without a ZCTA table should be a usage error"
printf '{"centers": [\n  {"id": "x", "name": "X",\n   "capacity": "full"}]}\n' >"$TMP/bad.json"
"$BIN" centers --centers "$TMP/bad.json" --near 1,1 >/dev/null 2>"$TMP/e"
[ $? = 1 ] && grep -q "bad.json:2: center \"x\": missing required field \"fhir\"\|bad.json:2:" "$TMP/e" ||
  fail "bad directory should fail with file:line: $(cat "$TMP/e")"
ok "usage error without a ZCTA table; directory errors carry file:line"

Z="${CARTGATE_SHARED_DATA:-}/zcta-centroids/Gaz_zcta_national.txt"
if [ -n "${CARTGATE_SHARED_DATA:-}" ] && [ -r "$Z" ]; then
  "$BIN" centers --centers "$C" --zcta "$Z" --near 55905 --as-of 2026-11-27 >"$TMP/z" || fail "--near ZIP"
  grep -q 'centroid of ZIP 55905' "$TMP/z" && head -3 "$TMP/z" | grep -q ' 1\. mississippi-minneapolis' ||
    fail "ZIP 55905 should route to Minneapolis: $(head -4 "$TMP/z")"
  ok "nearest center from a ZIP via the shared Census ZCTA table"
else
  echo "skip - shared ZCTA table absent"
fi
echo "PASS: $N checks"
