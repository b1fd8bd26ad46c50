#!/usr/bin/env bash
# Integration test: a synthetic cohort from `cartgate synth` is accepted by the reference FHIR
# server (tests/fhir-server) with base-R4 validation on. Every patient's transaction Bundle
# (--format bundle) is POSTed and must commit; the NDJSON layout (--format ndjson) seeds a
# second server, and resource counts on both servers match the files.
set -u
. "$(dirname "$0")/lib.sh"
need_tools node curl
need_cartgate

# count BASE TYPE: total of TYPE?_summary=count
count() {
  curl -s -o "$TMP/count.json" "$1/$2?_summary=count" || fail "count $2"
  jget "$TMP/count.json" 'd.total'
}

N=70   # > number of scenarios, so every scenario is in the cohort
"$BIN" synth --seed 11 --patients $N --format bundle --out "$TMP/bundles" 2>"$TMP/synth.err" \
  || fail "cartgate synth --format bundle failed"
"$BIN" synth --seed 11 --patients $N --format ndjson --out "$TMP/ndjson" 2>"$TMP/synth2.err" \
  || fail "cartgate synth --format ndjson failed"
[ "$(ls "$TMP/bundles"/*.json | wc -l)" = $N ] || fail "expected $N bundle files"
ok "synth wrote $N bundles and the NDJSON layout"

start_server validating
VBASE=$BASE
# the server does validate: an invalid Patient is refused
printf '{"resourceType":"Observation","status":"final"}' >"$TMP/bad.json"
code=$(curl -s -o "$TMP/bad.out" -w '%{http_code}' -X POST -H 'Content-Type: application/fhir+json' \
  --data-binary @"$TMP/bad.json" "$VBASE/Observation")
[ "$code" = 400 ] || fail "server accepted an Observation without code (HTTP $code); validation off?"
ok "reference server rejects an invalid resource"

posted=0
for f in "$TMP"/bundles/*.json; do
  code=$(curl -s -o "$TMP/tx.out" -w '%{http_code}' -X POST -H 'Content-Type: application/fhir+json' \
    --data-binary @"$f" "$VBASE")
  if [ "$code" != 200 ]; then
    echo "--- response for $f"; head -c 2000 "$TMP/tx.out"; echo
    fail "transaction $(basename "$f") refused with HTTP $code"
  fi
  bad=$(jget "$TMP/tx.out" 'd.entry.filter(e => !/^20[01]/.test(e.response.status)).length')
  [ "$bad" = 0 ] || fail "transaction $(basename "$f"): $bad entries not created"
  posted=$((posted + 1))
done
[ $posted = $N ] || fail "posted $posted of $N"
ok "all $N transaction Bundles validated and committed"

for t in Patient Condition Observation MedicationRequest MedicationAdministration Procedure Coverage; do
  want=$(wc -l <"$TMP/ndjson/$t.000.ndjson")
  got=$(count "$VBASE" "$t")
  [ "$got" = "$want" ] || fail "$t: server has $got, NDJSON has $want"
done
ok "resource counts on the server match the generated files"

# ground_truth.ndjson is not FHIR: the server's --seed would refuse it, so seed without it
mv "$TMP/ndjson/ground_truth.ndjson" "$TMP/ground_truth.ndjson"
start_server seeded --seed "$TMP/ndjson"
for t in Patient Condition Observation Medication; do
  want=$(wc -l <"$TMP/ndjson/$t.000.ndjson")
  got=$(count "$BASE" "$t")
  [ "$got" = "$want" ] || fail "seeded server: $t has $got, NDJSON has $want"
done
pid=$(head -n1 "$TMP/ndjson/Patient.000.ndjson" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).id))')
curl -s -o "$TMP/conds.json" "$BASE/Condition?subject=Patient/$pid" || fail "search conditions"
[ "$(jget "$TMP/conds.json" 'd.resourceType')" = Bundle ] || fail "Condition search did not return a Bundle"
ok "a server seeded with the NDJSON cohort starts and serves it"

echo "PASS: $CHECKS checks"
