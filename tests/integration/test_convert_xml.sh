#!/usr/bin/env bash
# Integration test of `cartgate convert` across formats with the real binary: a fixed sample
# of the official R4 example pairs (every 8th line of index.tsv plus the hard cases; the
# unit test test_fhir_xml covers all pairs in-process) converts XML -> JSON to the same bytes as JSON -> JSON (except the one
# pair whose decimals are spelled differently in the two files, compared through a second
# round instead), JSON -> XML -> JSON is lossless, stdin works, and hostile XML (XXE,
# billion laughs) is refused with exit 1 and a clear message.
set -u
BIN=${CARTGATE_BIN:-}
DATA=${CARTGATE_SHARED_DATA:-}/fhir-r4-examples
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
  echo "FAIL: CARTGATE_BIN not set or not executable"
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# --- hostile input (needs no shared data) ---
cat >"$TMP/xxe.xml" <<'EOF'
<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>
EOF
out=$("$BIN" convert --to json "$TMP/xxe.xml" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q 'DOCTYPE is not allowed' <<<"$out" && ! grep -q 'root:' <<<"$out"; then
  ok "XXE refused: $out"
else
  bad "XXE: rc=$rc out=$out"
fi
{
  echo '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
  prev=lol
  for i in 1 2 3 4 5 6 7 8 9; do
    printf '<!ENTITY lol%s "' "$i"; for _ in 1 2 3 4 5 6 7 8 9 10; do printf '&%s;' "$prev"; done; echo '">'
    prev=lol$i
  done
  echo ']><Patient xmlns="http://hl7.org/fhir"><id value="&lol9;"/></Patient>'
} >"$TMP/lol.xml"
out=$(timeout 10 "$BIN" convert "$TMP/lol.xml" 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q 'DOCTYPE is not allowed' <<<"$out"; then ok "billion laughs refused"; else bad "billion laughs: rc=$rc $out"; fi
out=$(printf '<Patient xmlns="http://hl7.org/fhir"><foo value="1"/></Patient>' | "$BIN" convert - 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "unknown element 'Patient.foo'" <<<"$out"; then ok "unknown element named"; else bad "unknown element: rc=$rc $out"; fi
"$BIN" convert --to yaml "$TMP/lol.xml" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "bad --to is a usage error" || bad "--to yaml gave rc=$rc"

# --- official example pairs ---
if [ ! -f "$DATA/index.tsv" ]; then
  echo "SKIP: $DATA missing; example conversions not run"
  [ $fails -eq 0 ] && exit 0 || exit 1
fi
n=0; pass=0; line=0
while IFS=$'\t' read -r base _rest; do
  [ "$base" = basename ] && continue
  line=$((line + 1))
  case "$base" in
    observation-decimal|questionnaire-example|bundle-transaction|basic-example-narrative) ;;
    *) [ $((line % 8)) -eq 0 ] || continue ;;
  esac
  n=$((n + 1))
  x="$DATA/xml/$base.xml"; j="$DATA/json/$base.json"
  "$BIN" convert --to json "$j" >"$TMP/a.json" 2>"$TMP/err" || { bad "$base: json->json $(cat "$TMP/err")"; continue; }
  "$BIN" convert --to json "$x" >"$TMP/b.json" 2>"$TMP/err" || { bad "$base: xml->json $(cat "$TMP/err")"; continue; }
  "$BIN" convert --to xml --pretty "$j" >"$TMP/c.xml" 2>"$TMP/err" || { bad "$base: json->xml $(cat "$TMP/err")"; continue; }
  "$BIN" convert --to json - <"$TMP/c.xml" >"$TMP/d.json" 2>"$TMP/err" || { bad "$base: xml(stdin)->json $(cat "$TMP/err")"; continue; }
  if ! cmp -s "$TMP/a.json" "$TMP/d.json"; then bad "$base: json->xml->json differs"; continue; fi
  if ! cmp -s "$TMP/a.json" "$TMP/b.json"; then
    # Decimal spelling differs between the official files (1.0e0 vs 1.0); the tree
    # comparison by value is in the unit test. Here require XML->JSON->XML->JSON stable.
    "$BIN" convert --to xml "$TMP/b.json" | "$BIN" convert --to json - >"$TMP/e.json" 2>"$TMP/err"
    if [ "$base" = observation-decimal ] && cmp -s "$TMP/b.json" "$TMP/e.json"; then
      pass=$((pass + 1)); continue
    fi
    bad "$base: xml->json differs from json->json"; continue
  fi
  pass=$((pass + 1))
done <"$DATA/index.tsv"
echo "convert: $pass/$n sampled example pairs pass both directions"
[ "$pass" -eq "$n" ] || bad "only $pass/$n pairs"
[ $fails -eq 0 ] && exit 0 || exit 1
