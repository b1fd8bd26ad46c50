#!/usr/bin/env bash
# What `cartgate screen` and `profile` read, as a newcomer tries them: FHIR XML (a file and a
# folder) gives the verdicts JSON gives; a file in a folder that is not FHIR by name is
# reported, not silently skipped; a broken XML file is an error naming the path once; a bulk
# export folder with its manifest.json reads as the same folder named by type; a
# not-eligible row says why in a few words; `referrals --db` on a path that does not exist is an
# error, not a new empty database. No FHIR server needed.
set -u
. "$(dirname "$0")/lib.sh"
need_cartgate

mkdir -p "$TMP/json" "$TMP/xml"
for v in 01-lbcl-relapse-11-months-after-first-line 12-lbcl-relapse-patient-deceased 51-colon-cancer-only; do
  cp "$SRC/tests/vignettes/$v.json" "$TMP/json/"
  "$CG" convert --to xml "$SRC/tests/vignettes/$v.json" >"$TMP/xml/$v.xml" || fail "convert $v"
done
echo "notes of a clinic visit" >"$TMP/xml/notes.txt"
"$CG" screen --json --as-of 2026-12-05 "$TMP/json" >"$TMP/json.out" 2>"$TMP/json.err" || fail "screen json: $(cat "$TMP/json.err")"
"$CG" screen --json --as-of 2026-12-05 "$TMP/xml" >"$TMP/xml.out" 2>"$TMP/xml.err" || fail "screen xml: $(cat "$TMP/xml.err")"
[ "$(wc -l <"$TMP/xml.out")" = 3 ] || fail "XML folder: $(wc -l <"$TMP/xml.out") patients"
cmp -s "$TMP/json.out" "$TMP/xml.out" || fail "XML and JSON verdicts differ: $(diff "$TMP/json.out" "$TMP/xml.out" | head -5)"
"$CG" screen --json --as-of 2026-12-05 "$TMP/xml/01-lbcl-relapse-11-months-after-first-line.xml" >"$TMP/one.out" || fail "one XML file"
head -n1 "$TMP/json.out" | cmp -s - "$TMP/one.out" || fail "one XML file: a different verdict"
ok "screen reads FHIR XML, a file and a folder, with the verdicts of the same JSON (3 patients)"

grep -q "ignored 1 file(s) not named \*.json, \*.ndjson, \*.jsonl or \*.xml (first: $TMP/xml/notes.txt)" "$TMP/xml.err" ||
  fail "the ignored file was not reported: $(cat "$TMP/xml.err")"
"$CG" profile --as-of 2026-12-05 "$TMP/xml" >/dev/null 2>"$TMP/prof.err" || fail "profile xml"
grep -q "ignored 1 file(s)" "$TMP/prof.err" || fail "profile did not report the ignored file"
ok "a file that is not FHIR by name is reported by screen and profile"

printf '<Patient xmlns="http://hl7.org/fhir"><nonsense value="1"/></Patient>' >"$TMP/xml/zz-bad.xml"
"$CG" screen "$TMP/xml" >/dev/null 2>"$TMP/bad.err" && fail "a broken XML file was accepted"
[ "$(grep -o "$TMP/xml/zz-bad.xml" "$TMP/bad.err" | wc -l)" = 1 ] || fail "the path is not named exactly once: $(cat "$TMP/bad.err")"
grep -q "unknown element 'Patient.nonsense'" "$TMP/bad.err" || fail "no cause: $(cat "$TMP/bad.err")"
rm "$TMP/xml/zz-bad.xml"
ok "a broken XML file: exit 1, the path once and the cause"

"$CG" screen --as-of 2026-12-05 "$TMP/json" >"$TMP/table.out" || fail "table"
grep -E '^vig51 +not_eligible .* - \(no CAR T indication for the diagnosis on record\)' "$TMP/table.out" >/dev/null ||
  fail "colon cancer row: $(grep vig51 "$TMP/table.out")"
grep -E '^vig12 +not_eligible .* - \(axi-cel:LBCL-2L needs: patient alive\)' "$TMP/table.out" >/dev/null ||
  fail "deceased patient row: $(grep vig12 "$TMP/table.out")"
ok "not-eligible rows say why (no indication for the diagnosis; the gate an indication needs)"
# A bulk export saved with its manifest and files named by number, not by type: the manifest
# gives each file's type (files of types screening never reads are not opened; here they hold
# lines that would be refused if read) and is not itself read as FHIR.
"$CG" synth --seed 9 --patients 40 --out "$TMP/typed" >/dev/null || fail "synth"
mkdir -p "$TMP/bulk"
i=0
entries=""
for f in "$TMP"/typed/*.000.ndjson; do
  i=$((i + 1))
  cp "$f" "$TMP/bulk/$i.ndjson"
  entries="$entries{\"type\":\"$(basename "$f" .000.ndjson)\",\"url\":\"https://ehr.example/bulk/$i.ndjson\"},"
done
echo 'not FHIR: a DocumentReference export this reader must not open' >"$TMP/bulk/99.ndjson"
printf '{"transactionTime":"2026-12-05T00:00:00Z","request":"https://ehr.example/$export","requiresAccessToken":true,"output":[%s{"type":"DocumentReference","url":"https://ehr.example/bulk/99.ndjson?part=1"}],"error":[]}\n' \
  "$entries" >"$TMP/bulk/manifest.json"
"$CG" screen --json --as-of 2026-12-05 "$TMP/typed" >"$TMP/typed.out" 2>"$TMP/typed.err" || fail "screen typed: $(cat "$TMP/typed.err")"
"$CG" screen --json --as-of 2026-12-05 "$TMP/bulk" >"$TMP/bulk.out" 2>"$TMP/bulk.err" || fail "screen with a manifest: $(cat "$TMP/bulk.err")"
[ "$(wc -l <"$TMP/bulk.out")" = 40 ] || fail "manifest folder: $(wc -l <"$TMP/bulk.out") patients"
cmp -s "$TMP/typed.out" "$TMP/bulk.out" || fail "manifest folder: verdicts differ from the typed folder"
[ ! -s "$TMP/bulk.err" ] || fail "manifest folder: $(cat "$TMP/bulk.err")"
"$CG" profile --json --as-of 2026-12-05 "$TMP/bulk" >"$TMP/bulkp.out" 2>"$TMP/bulkp.err" || fail "profile with a manifest: $(cat "$TMP/bulkp.err")"
"$CG" profile --json --as-of 2026-12-05 "$TMP/typed" | cmp -s - "$TMP/bulkp.out" || fail "manifest folder: profiles differ"
ok "a bulk export folder with its manifest.json: types from the manifest, the typed folder's verdicts and profiles"

"$CG" referrals list --db "$TMP/typo.db" >/dev/null 2>"$TMP/db.err" && fail "referrals --db on a missing file succeeded"
grep -q "$TMP/typo.db: no such database" "$TMP/db.err" || fail "no cause: $(cat "$TMP/db.err")"
[ ! -e "$TMP/typo.db" ] || fail "a database was created by a typo"
ok "referrals --db on a path that does not exist: an error, nothing created"
echo "test_cli_inputs: $CHECKS checks passed"
