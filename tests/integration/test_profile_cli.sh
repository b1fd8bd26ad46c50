#!/usr/bin/env bash
# `cartgate profile`: NDJSON folder (bulk layout) and Bundle input grouped by patient, text and
# --json output, patients in input order from sorted and unsorted input, --as-of, bad mapping tables reported with file:line, usage exit codes, and
# (when present) the shared Synthea data profiles without error.
set -u
SRC=${CARTGATE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${CARTGATE_BIN:-$SRC/build/cartgate}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
N=0
fail() { echo "FAIL: $*"; exit 1; }
ok() { N=$((N + 1)); echo "ok $N - $*"; }

mkdir -p "$TMP/bulk"
cat >"$TMP/bulk/Patient.000.ndjson" <<'EOF'
{"resourceType":"Patient","id":"pa","gender":"male","birthDate":"1950-03-01"}
{"resourceType":"Patient","id":"pb","gender":"female","birthDate":"1970-01-01"}
EOF
cat >"$TMP/bulk/Condition.000.ndjson" <<'EOF'
{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/pa"},"clinicalStatus":{"coding":[{"code":"active"}]},"code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"C8330"}]},"onsetDateTime":"2022-11-01"}
{"resourceType":"Condition","id":"c2","subject":{"reference":"Patient/pb"},"clinicalStatus":{"coding":[{"code":"active"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"109989006"}]},"onsetDateTime":"2023-01-01"}
EOF
cat >"$TMP/bulk/MedicationAdministration.000.ndjson" <<'EOF'
{"resourceType":"MedicationAdministration","id":"m1","status":"completed","subject":{"reference":"Patient/pa"},"medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"121191"}]},"effectiveDateTime":"2023-01-02"}
{"resourceType":"MedicationAdministration","id":"m2","status":"completed","subject":{"reference":"Patient/pa"},"medicationCodeableConcept":{"text":"Doxorubicin 2 MG/ML"},"effectiveDateTime":"2023-01-02"}
{"resourceType":"MedicationAdministration","id":"m3","status":"completed","subject":{"reference":"Patient/pa"},"medicationCodeableConcept":{"text":"ifosfamide"},"effectiveDateTime":"2023-09-01"}
EOF

"$BIN" profile --as-of 2024-01-01 --json "$TMP/bulk" >"$TMP/out.jsonl" 2>"$TMP/err" || fail "profile --json: $(cat "$TMP/err")"
[ "$(wc -l <"$TMP/out.jsonl")" = 2 ] || fail "expected 2 patients, got: $(cat "$TMP/out.jsonl")"
grep '"patient":"pa"' "$TMP/out.jsonl" | grep -q '"lines":{"known":true,"value":2' || fail "pa should have 2 lines"
grep '"patient":"pa"' "$TMP/out.jsonl" | grep -q '"primary_disease":{"known":true,"value":"dlbcl_nos"' || fail "pa is DLBCL"
grep '"patient":"pa"' "$TMP/out.jsonl" | grep -q '"age":{"known":true,"value":73' || fail "pa age as of 2024-01-01"
grep '"patient":"pb"' "$TMP/out.jsonl" | grep -q '"primary_disease":{"known":true,"value":"mm"' || fail "pb is MM"
ok "NDJSON bulk folder grouped across files, --json one line per patient"

"$BIN" profile --as-of 2022-12-01 "$TMP/bulk" >"$TMP/out.txt" || fail "text output"
grep -q '^patient pa (as of 2022-12-01)' "$TMP/out.txt" || fail "text header: $(head -2 "$TMP/out.txt")"
grep -E '^  lines +0 ' "$TMP/out.txt" >/dev/null || fail "as of 2022-12-01 no therapy yet"
ok "text output and --as-of"

cat >"$TMP/b.json" <<'EOF'
{"resourceType":"Bundle","type":"collection","entry":[
 {"fullUrl":"urn:uuid:aaa","resource":{"resourceType":"Patient","id":"px"}},
 {"fullUrl":"urn:uuid:bbb","resource":{"resourceType":"Condition","id":"cx","subject":{"reference":"urn:uuid:aaa"},
  "code":{"coding":[{"system":"http://snomed.info/sct","code":"443487006"}]},"onsetDateTime":"2020-01-01"}}]}
EOF
"$BIN" profile --json --as-of 2024-01-01 "$TMP/b.json" | grep -q '"patient":"px".*"primary_disease":{"known":true,"value":"mcl"' ||
  fail "Bundle with urn:uuid references"
ok "Bundle input, urn:uuid subject resolved"

mkdir -p "$TMP/maps"
cp "$SRC"/mappings/*.tsv "$TMP/maps/"
printf 'loinc\t1-1\tanc\t10*3/uL\tcount\tx\t1\tbroken\n' >>"$TMP/maps/labs.tsv"
L=$(wc -l <"$TMP/maps/labs.tsv")
"$BIN" profile --mappings "$TMP/maps" "$TMP/b.json" >/dev/null 2>"$TMP/e"
[ $? = 1 ] || fail "bad table should exit 1"
grep -q "labs.tsv:$L:" "$TMP/e" || fail "error should name labs.tsv:$L: $(cat "$TMP/e")"
ok "bad mapping row reported with file:line"

"$BIN" profile >/dev/null 2>&1
[ $? = 2 ] || fail "no input should be a usage error"
"$BIN" profile --as-of 2024-13-45 "$TMP/b.json" >/dev/null 2>&1
[ $? = 2 ] || fail "bad --as-of should be a usage error"
"$BIN" profile "$TMP/nonexistent" >/dev/null 2>"$TMP/e"
[ $? = 1 ] || fail "missing file should exit 1"
grep -q nonexistent "$TMP/e" || fail "error names the file"
ok "usage and input errors"

# Order and streaming: patients print in the order they appear (their Patient resource, else
# their first resource), whether the input is sorted by patient (merged) or not (grouped).
"$BIN" synth --seed 5 --patients 300 --out "$TMP/syn" >/dev/null || fail "synth"
mkdir -p "$TMP/rev"
for f in "$TMP"/syn/*.ndjson; do tac "$f" >"$TMP/rev/$(basename "$f")"; done
printf '%s\n' '{"resourceType":"Condition","id":"cz","subject":{"reference":"Patient/zz-no-patient"},"code":{"coding":[{"system":"http://snomed.info/sct","code":"109989006"}]}}' \
  >>"$TMP/rev/Condition.000.ndjson"
"$BIN" profile --json --as-of 2026-11-01 "$TMP/syn" >"$TMP/syn.jsonl" 2>"$TMP/e" || fail "synth profile: $(cat "$TMP/e")"
"$BIN" profile --json --as-of 2026-11-01 "$TMP/rev" >"$TMP/rev.jsonl" 2>"$TMP/e" || fail "reversed profile: $(cat "$TMP/e")"
[ "$(wc -l <"$TMP/syn.jsonl")" = 300 ] || fail "expected 300 profiles"
head -c 40 "$TMP/syn.jsonl" | grep -q '"patient":"p000000-' || fail "first patient: $(head -c 60 "$TMP/syn.jsonl")"
tail -n 1 "$TMP/rev.jsonl" | grep -q '"patient":"zz-no-patient"' || fail "a patient without a Patient resource comes last"
ids() { grep -o '^{"patient":"[^"]*"' "$1"; }
ids "$TMP/rev.jsonl" | head -n 300 | cmp -s - <(ids "$TMP/syn.jsonl" | tac) || fail "reversed input: not the patients in reversed order"
ok "patients in input order from sorted (merged) and unsorted (grouped) input"

D=${CARTGATE_SHARED_DATA:-}
if [ -n "$D" ] && [ -d "$D/synthea-r4-patient-bundles" ]; then
  "$BIN" profile --json "$D/synthea-r4-patient-bundles" "$D/bulk-ndjson-synthea/10-patients" >"$TMP/s.jsonl" 2>"$TMP/e" ||
    fail "shared data: $(cat "$TMP/e")"
  [ "$(grep -c '"diseases":{"known":true,"value":\["non_heme"\]' "$TMP/s.jsonl")" -ge 4 ] ||
    fail "expected >= 4 patients with an active non-heme cancer"
  ok "shared Synthea bundles and bulk NDJSON profile without error"
else
  echo "ok - # SKIP shared data absent"
fi
echo "1..$N"
