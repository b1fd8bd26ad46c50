#!/usr/bin/env bash
# ctest-label: node  (tests the Node reference server only; scripts/test runs it once)
# Integration test of the reference FHIR server (tests/fhir-server): starts it on a random
# loopback port and checks CRUD, validation, paging, conditional create, atomic transactions,
# _lastUpdated, SMART Backend Services (RS384 signed with openssl, ES384 with node:crypto),
# fault injection and its counters, and a clean SIGTERM stop.
set -u
. "$(dirname "$0")/lib.sh"
need_tools node curl openssl

# req METHOD URL [BODY_FILE] [extra curl args...]: body to $TMP/resp, status in $CODE.
req() {
  local method=$1 url=$2 body=${3:-}
  shift 3 2>/dev/null || shift $#
  local args=(-s -o "$TMP/resp" -D "$TMP/hdr" -w '%{http_code}' -X "$method" -H 'Accept: application/fhir+json')
  [ -n "$body" ] && args+=(-H 'Content-Type: application/fhir+json' --data-binary "@$body")
  CODE=$(curl "${args[@]}" "$@" "$url")
}

# ---------------------------------------------------------------------------------------------
# Seed data: 1,000 Observations (NDJSON) and two Patients with old lastUpdated (JSON Bundle).
mkdir -p "$TMP/seed/sub"
node -e '
const lines = [];
for (let i = 0; i < 1000; i++) lines.push(JSON.stringify({ resourceType: "Observation", id: "obs-" + i,
  status: "final", code: { text: "seeded" }, subject: { reference: "Patient/p-old-" + (i % 2) },
  identifier: [{ system: "urn:test:obs", value: String(i) }] }));
require("fs").writeFileSync(process.argv[1], lines.join("\n") + "\n");
' "$TMP/seed/obs.ndjson"
cat >"$TMP/seed/sub/patients.json" <<'EOF'
{"resourceType":"Bundle","type":"collection","entry":[
 {"resource":{"resourceType":"Patient","id":"p-old-0","meta":{"lastUpdated":"2020-01-01T00:00:00Z"},"identifier":[{"system":"urn:test:mrn","value":"old0"}]}},
 {"resource":{"resourceType":"Patient","id":"p-old-1","meta":{"lastUpdated":"2022-06-01T00:00:00Z"},"identifier":[{"system":"urn:test:mrn","value":"old1"}]}}
]}
EOF

start_server main --seed "$TMP/seed" --bulk-delay-ms 3000
ok "server started on port $PORT with seed"

req GET "$BASE/metadata"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.resourceType+" "+d.fhirVersion')" = "CapabilityStatement 4.0.1" ] || fail "metadata: $CODE"
ok "metadata returns a CapabilityStatement"

# --- create / read -----------------------------------------------------------------------------
cat >"$TMP/pat.json" <<'EOF'
{"resourceType":"Patient","id":"ignored","name":[{"family":"Test","given":["A"]}],"gender":"female","birthDate":"1970-01-01",
 "identifier":[{"system":"urn:test:mrn","value":"crud-1"}]}
EOF
req POST "$BASE/Patient" "$TMP/pat.json"
[ "$CODE" = 201 ] || fail "create: $CODE $(cat "$TMP/resp")"
PID1=$(jget "$TMP/resp" 'd.id')
[ -n "$PID1" ] && [ "$PID1" != ignored ] || fail "create kept client id '$PID1'"
grep -qi "^Location: $BASE/Patient/$PID1/_history/" "$TMP/hdr" || fail "create: no Location header"
grep -qi '^ETag: W/"' "$TMP/hdr" || fail "create: no ETag"
ok "create returns 201, Location, ETag, server id"
req GET "$BASE/Patient/$PID1"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.name[0].family')" = Test ] || fail "read: $CODE"
ok "read returns the created resource"
req GET "$BASE/Patient/does-not-exist"
[ "$CODE" = 404 ] && [ "$(jget "$TMP/resp" 'd.resourceType')" = OperationOutcome ] || fail "read missing: $CODE"
ok "read of unknown id is 404 with OperationOutcome"

# --- validation ----------------------------------------------------------------------------------
echo '{"resourceType":"Patient","gender":"female","notAField":true}' >"$TMP/bad.json"
req POST "$BASE/Patient" "$TMP/bad.json"
[ "$CODE" = 400 ] && [ "$(jget "$TMP/resp" 'd.resourceType')" = OperationOutcome ] || fail "invalid create: $CODE"
ok "invalid resource rejected with 400 + OperationOutcome"
echo '{"resourceType":"Observation","status":"final"}' >"$TMP/bad2.json"
req POST "$BASE/Observation" "$TMP/bad2.json"
[ "$CODE" = 400 ] || fail "Observation without code accepted: $CODE"
ok "missing required element (Observation.code) rejected with 400"
echo '{"resourceType":"Patient","birthDate":"not-a-date"}' >"$TMP/bad3.json"
req POST "$BASE/Patient" "$TMP/bad3.json"
[ "$CODE" = 400 ] || fail "bad date accepted: $CODE"
ok "malformed date rejected with 400"

# --- paging: 1,000 seeded Observations at _count=37 -----------------------------------------
URL="$BASE/Observation?code:text=seeded&_count=37"
: >"$TMP/ids"
pages=0
while [ -n "$URL" ] && [ $pages -lt 100 ]; do
  req GET "$URL"
  [ "$CODE" = 200 ] || fail "page $pages: $CODE"
  jget "$TMP/resp" '[((d.link||[]).find(l=>l.relation==="next")||{}).url||"", (d.entry||[]).length,
    ...(d.entry||[]).map(e=>e.resource.id+" "+(e.fullUrl===e.resource.resourceType+"/"+e.resource.id?"rel":"abs"))].join("\n")' >"$TMP/page"
  echo >>"$TMP/page"
  URL=$(sed -n 1p "$TMP/page")
  n=$(sed -n 2p "$TMP/page")
  sed -n '3,$p' "$TMP/page" >>"$TMP/ids"
  pages=$((pages + 1))
  [ -n "$URL" ] && [ "$n" != 37 ] && fail "page $pages has $n entries, expected 37"
done
total_ids=$(grep -c . "$TMP/ids")
distinct=$(grep . "$TMP/ids" | sort -u | wc -l)
[ "$total_ids" = 1000 ] && [ "$distinct" = 1000 ] || fail "paging: $total_ids ids, $distinct distinct over $pages pages"
[ "$pages" = 28 ] || fail "paging: $pages pages, expected 28"
grep -q ' rel$' "$TMP/ids" && fail "paging: relative fullUrl"
ok "paging 1,000 resources at _count=37: 28 pages, 1,000 distinct ids, absolute fullUrl"

# --- search parameters -------------------------------------------------------------------------
req GET "$BASE/Observation?patient=Patient/p-old-1&_count=1000"
[ "$(jget "$TMP/resp" 'd.total+" "+d.entry.length')" = "500 500" ] || fail "patient search: $(jget "$TMP/resp" 'd.total')"
req GET "$BASE/Observation?subject=Patient/p-old-0&_summary=count"
[ "$(jget "$TMP/resp" 'd.total')" = 500 ] || fail "subject search"
ok "patient= and subject= search per resource type"
req GET "$BASE/Observation?identifier=urn:test:obs|42"
[ "$(jget "$TMP/resp" 'd.entry.map(e=>e.resource.id).join()')" = obs-42 ] || fail "identifier search"
req GET "$BASE/Observation?_id=obs-7,obs-8"
[ "$(jget "$TMP/resp" 'd.total')" = 2 ] || fail "_id search"
ok "identifier= and _id= search"
req GET "$BASE/Patient?_lastUpdated=gt2021-01-01&identifier=urn:test:mrn|old0,urn:test:mrn|old1"
[ "$(jget "$TMP/resp" 'd.entry.map(e=>e.resource.id).join()')" = p-old-1 ] || fail "_lastUpdated gt"
req GET "$BASE/Patient?_lastUpdated=lt2021-01-01"
[ "$(jget "$TMP/resp" 'd.entry.map(e=>e.resource.id).join()')" = p-old-0 ] || fail "_lastUpdated lt"
req GET "$BASE/Patient?_lastUpdated=ge2022-06-01T00:00:00Z&_lastUpdated=lt2023-01-01"
[ "$(jget "$TMP/resp" 'd.entry.map(e=>e.resource.id).join()')" = p-old-1 ] || fail "_lastUpdated ge+lt"
ok "_lastUpdated gt / lt / ge (seeded meta.lastUpdated kept)"
req GET "$BASE/Patient?not-a-param=1"
[ "$CODE" = 400 ] || fail "unknown search parameter: $CODE"
ok "unknown search parameter is 400"

# --- conditional create ------------------------------------------------------------------------
cat >"$TMP/cc.json" <<'EOF'
{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"cond-1"}]}
EOF
req POST "$BASE/Patient" "$TMP/cc.json" -H 'If-None-Exist: identifier=urn:test:mrn|cond-1'
[ "$CODE" = 201 ] || fail "conditional create 1: $CODE"
C1=$(jget "$TMP/resp" 'd.id')
req POST "$BASE/Patient" "$TMP/cc.json" -H 'If-None-Exist: identifier=urn:test:mrn|cond-1'
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.id')" = "$C1" ] || fail "conditional create 2: $CODE"
req GET "$BASE/Patient?identifier=urn:test:mrn|cond-1"
[ "$(jget "$TMP/resp" 'd.total')" = 1 ] || fail "conditional create left $(jget "$TMP/resp" 'd.total')"
ok "conditional create twice -> 201 then 200, one resource"

# --- transactions --------------------------------------------------------------------------------
cat >"$TMP/tx-ok.json" <<'EOF'
{"resourceType":"Bundle","type":"transaction","entry":[
 {"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"tx-1"}]},
  "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:test:mrn|tx-1"}},
 {"fullUrl":"urn:uuid:22222222-2222-4222-8222-222222222222","resource":{"resourceType":"Observation","status":"final","code":{"text":"tx"},
  "subject":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"}},"request":{"method":"POST","url":"Observation"}}
]}
EOF
req POST "$BASE" "$TMP/tx-ok.json"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.type')" = transaction-response ] || fail "transaction: $CODE $(cat "$TMP/resp")"
TXP=$(jget "$TMP/resp" 'd.entry[0].resource.id')
[ "$(jget "$TMP/resp" 'd.entry[1].resource.subject.reference')" = "Patient/$TXP" ] || fail "urn:uuid not rewritten"
[ "$(jget "$TMP/resp" 'd.entry[0].response.status')" = "201 Created" ] || fail "transaction entry status"
ok "transaction creates and rewrites urn:uuid references"
req POST "$BASE" "$TMP/tx-ok.json"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.entry[0].resource.id')" = "$TXP" ] || fail "transaction ifNoneExist"
[ "$(jget "$TMP/resp" 'd.entry[0].response.status')" = "200 OK" ] || fail "ifNoneExist entry status"
[ "$(jget "$TMP/resp" 'd.entry[1].resource.subject.reference')" = "Patient/$TXP" ] || fail "urn -> existing"
ok "transaction ifNoneExist resolves to the existing resource"

# A transaction with an invalid entry leaves nothing behind (fails validation).
cat >"$TMP/tx-bad.json" <<'EOF'
{"resourceType":"Bundle","type":"transaction","entry":[
 {"fullUrl":"urn:uuid:33333333-3333-4333-8333-333333333333","resource":{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"tx-bad"}]},"request":{"method":"POST","url":"Patient"}},
 {"resource":{"resourceType":"Observation","status":"final","code":{"text":"tx-bad"},"subject":{"reference":"urn:uuid:33333333-3333-4333-8333-333333333333"}},"request":{"method":"POST","url":"Observation"}},
 {"resource":{"resourceType":"Observation","status":"not-a-status","code":{"text":"tx-bad"},"bogus":1},"request":{"method":"POST","url":"Observation"}}
]}
EOF
req POST "$BASE" "$TMP/tx-bad.json"
[ "$CODE" = 400 ] || fail "bad transaction: $CODE"
req GET "$BASE/Patient?identifier=urn:test:mrn|tx-bad&_summary=count"
[ "$(jget "$TMP/resp" 'd.total')" = 0 ] || fail "bad transaction left a Patient"
req GET "$BASE/Observation?code:text=tx-bad&_summary=count"
[ "$(jget "$TMP/resp" 'd.total')" = 0 ] || fail "bad transaction left an Observation"
ok "transaction with one invalid entry -> 400 and nothing stored"

# A transaction failing while applying (If-Match mismatch on PUT, applied after the POSTs)
# is rolled back, including the already-applied creates and the update.
req GET "$BASE/Patient/$PID1"
cp "$TMP/resp" "$TMP/p1.json"
node -e 'const fs=require("fs");const p=JSON.parse(fs.readFileSync(process.argv[1]));p.name[0].family="Changed";
const b={resourceType:"Bundle",type:"transaction",entry:[
 {resource:{resourceType:"Patient",identifier:[{system:"urn:test:mrn",value:"tx-roll"}]},request:{method:"POST",url:"Patient"}},
 {resource:p,request:{method:"PUT",url:"Patient/"+p.id}},
 {resource:p,request:{method:"PUT",url:"Patient/"+p.id,ifMatch:"W/\"stale\""}}]};
fs.writeFileSync(process.argv[2],JSON.stringify(b));' "$TMP/p1.json" "$TMP/tx-roll.json"
req POST "$BASE" "$TMP/tx-roll.json"
[ "$CODE" = 412 ] || fail "rollback transaction: $CODE $(cat "$TMP/resp")"
req GET "$BASE/Patient?identifier=urn:test:mrn|tx-roll&_summary=count"
[ "$(jget "$TMP/resp" 'd.total')" = 0 ] || fail "rolled back transaction left a Patient"
req GET "$BASE/Patient/$PID1"
[ "$(jget "$TMP/resp" 'd.name[0].family')" = Test ] || fail "rolled back update is visible"
[ "$(jget "$TMP/resp" 'd.meta.versionId')" = "$(jget "$TMP/p1.json" 'd.meta.versionId')" ] || fail "version changed"
ok "transaction failing at apply time (412) is rolled back completely"

# Batch: entries independent.
cat >"$TMP/batch.json" <<'EOF'
{"resourceType":"Bundle","type":"batch","entry":[
 {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"batch-1"}]},"request":{"method":"POST","url":"Patient"}},
 {"resource":{"resourceType":"Patient","bogus":1},"request":{"method":"POST","url":"Patient"}},
 {"request":{"method":"GET","url":"Patient?identifier=urn:test:mrn|batch-1"}}
]}
EOF
req POST "$BASE" "$TMP/batch.json"
[ "$CODE" = 200 ] || fail "batch: $CODE"
[ "$(jget "$TMP/resp" 'd.entry.map(e=>e.response.status.split(" ")[0]).join()')" = "201,400,200" ] || fail "batch statuses"
[ "$(jget "$TMP/resp" 'd.entry[2].resource.total')" = 1 ] || fail "batch GET"
ok "batch: per-entry results 201,400,200"

# --- update / delete ---------------------------------------------------------------------------
node -e 'const fs=require("fs");const p=JSON.parse(fs.readFileSync(process.argv[1]));p.name[0].family="Updated";fs.writeFileSync(process.argv[2],JSON.stringify(p));' "$TMP/p1.json" "$TMP/p1u.json"
req PUT "$BASE/Patient/$PID1" "$TMP/p1u.json"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.name[0].family')" = Updated ] || fail "update: $CODE"
req DELETE "$BASE/Patient/$PID1"
[ "$CODE" = 200 ] || fail "delete: $CODE"
req GET "$BASE/Patient/$PID1"
[ "$CODE" = 410 ] || fail "read after delete: $CODE"
ok "update 200, delete 200, read after delete 410"

# --- concurrency: 40 parallel conditional creates of one identifier -> one resource ----------
echo '{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"race-1"}]}' >"$TMP/race.json"
seq 1 40 | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/fhir+json' \
  -H 'If-None-Exist: identifier=urn:test:mrn|race-1' --data-binary "@$TMP/race.json" "$BASE/Patient" >"$TMP/race.codes"
[ "$(grep -c '^201$' "$TMP/race.codes")" = 1 ] && [ "$(grep -c '^200$' "$TMP/race.codes")" = 39 ] || fail "race: $(sort "$TMP/race.codes" | uniq -c | tr '\n' ' ')"
req GET "$BASE/Patient?identifier=urn:test:mrn|race-1&_summary=count"
[ "$(jget "$TMP/resp" 'd.total')" = 1 ] || fail "race left $(jget "$TMP/resp" 'd.total') resources"
ok "40 concurrent conditional creates (16 in flight): one 201, 39 200, one resource"

# --- Bulk Data $export ------------------------------------------------------------------------
echo '{"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p-old-0"}}]}' >"$TMP/group.json"
req PUT "$BASE/Group/g1" "$TMP/group.json"
[ "$CODE" = 201 ] || fail "PUT-create of Group: $CODE $(cat "$TMP/resp")"
req GET "$BASE/Group/g1/\$export?_type=Patient,Observation" "" -H 'Prefer: respond-async'
[ "$CODE" = 202 ] || fail "export kick-off: $CODE $(cat "$TMP/resp")"
STATUS_URL=$(grep -i '^Content-Location:' "$TMP/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
[[ "$STATUS_URL" == "$BASE/"* ]] || fail "no Content-Location: '$STATUS_URL'"
req GET "$STATUS_URL"
[ "$CODE" = 202 ] && grep -qi '^X-Progress:' "$TMP/hdr" && grep -qi '^Retry-After:' "$TMP/hdr" || fail "status in progress: $CODE"
for _ in $(seq 1 150); do req GET "$STATUS_URL"; [ "$CODE" = 202 ] || break; sleep 0.1; done
[ "$CODE" = 200 ] || fail "export status: $CODE"
[ "$(jget "$TMP/resp" 'd.output.map(o=>o.type+":"+o.count).sort().join()')" = "Observation:500,Patient:1" ] || fail "manifest: $(cat "$TMP/resp")"
cp "$TMP/resp" "$TMP/manifest.json"
OBS_URL=$(jget "$TMP/manifest.json" 'd.output.find(o=>o.type==="Observation").url')
req GET "$OBS_URL"
[ "$CODE" = 200 ] && grep -qi '^Content-Type: application/fhir+ndjson' "$TMP/hdr" || fail "ndjson file: $CODE"
[ "$(grep -c '"Patient/p-old-0"' "$TMP/resp")" = 500 ] && [ "$(wc -l <"$TMP/resp")" = 500 ] || fail "ndjson content"
req DELETE "$STATUS_URL"
[ "$CODE" = 202 ] || fail "export delete: $CODE"
req GET "$STATUS_URL"
[ "$CODE" = 404 ] || fail "status after delete: $CODE"
ok "Group \$export: 202 + Content-Location, X-Progress, manifest (1 Patient, 500 Observations), NDJSON, DELETE"
req GET "$BASE/Patient/\$export?_type=Patient&_since=2021-01-01T00:00:00Z"
STATUS_URL=$(grep -i '^Content-Location:' "$TMP/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
for _ in $(seq 1 150); do req GET "$STATUS_URL"; [ "$CODE" = 202 ] || break; sleep 0.1; done
[ "$CODE" = 200 ] || fail "patient export: $CODE"
req GET "$(jget "$TMP/resp" 'd.output[0].url')"
grep -q '"p-old-1"' "$TMP/resp" && ! grep -q '"p-old-0"' "$TMP/resp" || fail "_since not applied"
ok "Patient \$export with _since excludes older resources"
req GET "$BASE/Patient/\$export?_type=NotAType"
[ "$CODE" = 400 ] || fail "bad _type: $CODE"
ok "unknown _type -> 400"

# --- fault injection ---------------------------------------------------------------------------
curl -s -X DELETE "http://127.0.0.1:$PORT/admin/stats" >/dev/null
curl -s -X POST "http://127.0.0.1:$PORT/admin/faults" -d '{"mode":"status","every":2,"status":503,"methods":["GET"]}' >"$TMP/f"
codes=""
for _ in 1 2 3 4; do req GET "$BASE/Patient/p-old-0"; codes="$codes$CODE,"; done
[ "$codes" = "200,503,200,503," ] || fail "every-2nd 503: $codes"
req POST "$BASE/Patient" "$TMP/cc.json"
[ "$CODE" = 201 ] || fail "fault applied to POST despite methods filter: $CODE"
curl -s "http://127.0.0.1:$PORT/admin/stats" >"$TMP/stats"
[ "$(jget "$TMP/stats" 'd.fhir.by_method_status["GET 503"]+" "+d.fhir.by_method_status["GET 200"]+" "+d.fhir.by_method.POST+" "+d.faults.injected')" = "2 2 1 2" ] \
  || fail "stats: $(cat "$TMP/stats")"
ok "every-Nth 503 on GET only; /admin/stats counts by method/status"

# "after": the write is performed, then 500 is answered; the retry finds it (conditional create).
curl -s -X POST "http://127.0.0.1:$PORT/admin/faults" -d '{"mode":"after","status":500,"methods":["POST"],"limit":1}' >/dev/null
echo '{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"after-1"}]}' >"$TMP/after.json"
req POST "$BASE/Patient" "$TMP/after.json" -H 'If-None-Exist: identifier=urn:test:mrn|after-1'
[ "$CODE" = 500 ] || fail "after mode: $CODE"
req POST "$BASE/Patient" "$TMP/after.json" -H 'If-None-Exist: identifier=urn:test:mrn|after-1'
[ "$CODE" = 200 ] || fail "retry after 'after' fault: $CODE"
req GET "$BASE/Patient?identifier=urn:test:mrn|after-1&_summary=count"
[ "$(jget "$TMP/resp" 'd.total')" = 1 ] || fail "after mode: $(jget "$TMP/resp" 'd.total') resources"
ok "'after' fault performs the write then answers 500; conditional retry leaves one resource"

# Connection reset: curl sees an empty reply (exit 52) or a reset (56).
curl -s -X POST "http://127.0.0.1:$PORT/admin/faults" -d '{"mode":"reset","every":1,"limit":1}' >/dev/null
curl -s -o /dev/null "$BASE/Patient/p-old-0"
rc=$?
[ $rc = 52 ] || [ $rc = 56 ] || fail "reset: curl exit $rc"
req GET "$BASE/Patient/p-old-0"
[ "$CODE" = 200 ] || fail "after reset limit: $CODE"
ok "connection reset (curl exit $rc), limit honoured"

# 429 with Retry-After.
curl -s -X POST "http://127.0.0.1:$PORT/admin/faults" -d '{"mode":"429","retry_after":7,"every":1}' >/dev/null
req GET "$BASE/Patient/p-old-0"
[ "$CODE" = 429 ] && grep -qi '^Retry-After: 7' "$TMP/hdr" || fail "429: $CODE"
ok "429 with Retry-After: 7"

# Random rate with a seed is reproducible: same seed -> same sequence.
seq_for_seed() {
  curl -s -X POST "http://127.0.0.1:$PORT/admin/faults" -d '{"seed":42,"rules":[{"mode":"status","rate":0.5,"status":500}]}' >/dev/null
  local s=""
  for _ in $(seq 1 12); do req GET "$BASE/Patient/p-old-0"; s="$s${CODE:0:1}"; done
  echo "$s"
}
s1=$(seq_for_seed)
s2=$(seq_for_seed)
[ "$s1" = "$s2" ] || fail "seeded random faults differ: $s1 vs $s2"
[[ "$s1" == *2* && "$s1" == *5* ]] || fail "rate 0.5 gave $s1"
ok "random faults with seed 42 reproducible ($s1)"
curl -s "http://127.0.0.1:$PORT/admin/faults" >"$TMP/f"
[ "$(jget "$TMP/f" 'd.rules[0].seen')" = 12 ] || fail "GET /admin/faults"
curl -s -X DELETE "http://127.0.0.1:$PORT/admin/faults" >/dev/null
req GET "$BASE/Patient/p-old-0"
[ "$CODE" = 200 ] || fail "faults not cleared"
curl -s -X POST "http://127.0.0.1:$PORT/admin/faults" -d '{"mode":"nonsense"}' -o /dev/null -w '%{http_code}' >"$TMP/f"
[ "$(cat "$TMP/f")" = 400 ] || fail "bad fault rule accepted"
ok "GET/DELETE /admin/faults; invalid rule -> 400"

# --- SIGTERM ------------------------------------------------------------------------------------
kill -TERM "$PID"
rc=0
for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
wait "$PID"
rc=$?
[ $rc = 0 ] || fail "SIGTERM exit code $rc"
ok "SIGTERM stops the server with exit 0"

# --- SMART Backend Services --------------------------------------------------------------------
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rsa.pem" 2>/dev/null || fail "openssl rsa"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$TMP/ec.pem" 2>/dev/null || fail "openssl ec"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$TMP/ec-other.pem" 2>/dev/null || fail "openssl ec2"
JWT="$SERVER_DIR/tools/jwt.mjs"
node "$JWT" jwks "rsa-1:$TMP/rsa.pem" "ec-1:$TMP/ec.pem" >"$TMP/jwks.json" || fail "jwks"
start_server smart --smart-client cartgate-test --smart-jwks "$TMP/jwks.json" --token-ttl 300
TOKEN_URL="http://127.0.0.1:$PORT/auth/token"

curl -s "$BASE/.well-known/smart-configuration" >"$TMP/sc"
[ "$(jget "$TMP/sc" 'd.token_endpoint')" = "$TOKEN_URL" ] || fail "smart-configuration token_endpoint"
[ "$(jget "$TMP/sc" 'd.token_endpoint_auth_methods_supported.join()+" "+d.token_endpoint_auth_signing_alg_values_supported.join()')" = "private_key_jwt RS384,ES384" ] || fail "smart-configuration"
ok "smart-configuration advertises $TOKEN_URL, private_key_jwt, RS384/ES384"

req GET "$BASE/Patient"
[ "$CODE" = 401 ] || fail "no token: $CODE"
ok "no token -> 401"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# RS384 assertion signed with openssl only (independent of node).
openssl_rs384_jwt() { # AUD EXP_IN JTI
  local now h c
  now=$(date +%s)
  h=$(printf '{"alg":"RS384","typ":"JWT","kid":"rsa-1"}' | b64url)
  c=$(printf '{"iss":"cartgate-test","sub":"cartgate-test","aud":"%s","exp":%d,"jti":"%s"}' "$1" $((now + $2)) "$3" | b64url)
  printf '%s.%s.%s' "$h" "$c" "$(printf '%s.%s' "$h" "$c" | openssl dgst -sha384 -sign "$TMP/rsa.pem" -binary | b64url)"
}
token_req() { # JWT -> status in CODE, body in $TMP/resp
  CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
    --data "$(node "$JWT" assertion-form "$1" 'system/*.read')" "$TOKEN_URL")
}

RS_JWT=$(openssl_rs384_jwt "$TOKEN_URL" 240 "jti-rs-1")
token_req "$RS_JWT"
[ "$CODE" = 200 ] || fail "RS384 token: $CODE $(cat "$TMP/resp")"
[ "$(jget "$TMP/resp" 'd.token_type+" "+d.expires_in+" "+d.scope')" = "bearer 300 system/*.read" ] || fail "token response $(cat "$TMP/resp")"
TOK=$(jget "$TMP/resp" 'd.access_token')
req GET "$BASE/Patient" "" -H "Authorization: Bearer $TOK"
[ "$CODE" = 200 ] || fail "RS384 token refused: $CODE"
ok "RS384 assertion (signed with openssl) -> token -> /fhir 200"

token_req "$RS_JWT"
[ "$CODE" = 401 ] && [ "$(jget "$TMP/resp" 'd.error')" = invalid_client ] || fail "replayed jti: $CODE"
ok "replayed jti refused (invalid_client)"

ES_JWT=$(node "$JWT" sign --key "$TMP/ec.pem" --alg ES384 --kid ec-1 --iss cartgate-test --aud "$TOKEN_URL" --exp-in 240)
token_req "$ES_JWT"
[ "$CODE" = 200 ] || fail "ES384 token: $CODE $(cat "$TMP/resp")"
TOK2=$(jget "$TMP/resp" 'd.access_token')
req GET "$BASE/Patient" "" -H "Authorization: Bearer $TOK2"
[ "$CODE" = 200 ] || fail "ES384 token refused: $CODE"
ok "ES384 assertion -> token -> /fhir 200"

refused() { # DESCRIPTION JWT
  token_req "$2"
  { [ "$CODE" = 401 ] || [ "$CODE" = 400 ]; } && [ "$(jget "$TMP/resp" 'd.error')" = invalid_client ] \
    || fail "$1 not refused: $CODE $(cat "$TMP/resp")"
  ok "$1 refused ($CODE invalid_client: $(jget "$TMP/resp" 'd.error_description'))"
}
refused "wrong key" "$(node "$JWT" sign --key "$TMP/ec-other.pem" --alg ES384 --kid ec-1 --iss cartgate-test --aud "$TOKEN_URL")"
refused "wrong aud" "$(openssl_rs384_jwt "http://127.0.0.1:$PORT/fhir" 240 jti-rs-2)"
refused "expired assertion" "$(openssl_rs384_jwt "$TOKEN_URL" -30 jti-rs-3)"
refused "exp more than 5 minutes ahead" "$(openssl_rs384_jwt "$TOKEN_URL" 3600 jti-rs-4)"
refused "unknown kid" "$(node "$JWT" sign --key "$TMP/ec.pem" --alg ES384 --kid nope --iss cartgate-test --aud "$TOKEN_URL")"
refused "wrong client id" "$(node "$JWT" sign --key "$TMP/ec.pem" --alg ES384 --kid ec-1 --iss someone-else --aud "$TOKEN_URL")"
refused "RS384 key used with ES384 kid" "$(node "$JWT" sign --key "$TMP/rsa.pem" --alg RS384 --kid ec-1 --iss cartgate-test --aud "$TOKEN_URL")"

CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
  --data "grant_type=password&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=$ES_JWT" "$TOKEN_URL")
[ "$CODE" = 400 ] && [ "$(jget "$TMP/resp" 'd.error')" = unsupported_grant_type ] || fail "grant_type: $CODE"
ok "wrong grant_type -> 400 unsupported_grant_type"

curl -s -X POST "http://127.0.0.1:$PORT/admin/tokens/expire" >/dev/null
req GET "$BASE/Patient" "" -H "Authorization: Bearer $TOK"
[ "$CODE" = 401 ] && grep -qi 'WWW-Authenticate: Bearer.*invalid_token' "$TMP/hdr" || fail "expired token: $CODE"
ok "expired token -> 401 invalid_token"
kill -TERM "$PID"
wait "$PID"

# Real expiry with a 3 s TTL, and a PEM public key instead of a JWKS, plus a static token.
openssl pkey -in "$TMP/rsa.pem" -pubout -out "$TMP/rsa.pub.pem" 2>/dev/null
start_server smart2 --smart-client cartgate-test --smart-public-key "$TMP/rsa.pub.pem" --token-ttl 3 --token static-secret
TOKEN_URL="http://127.0.0.1:$PORT/auth/token"
FORM=$(node "$JWT" assertion-form "$(openssl_rs384_jwt "$TOKEN_URL" 240 jti-pem-1)")
# No node between getting the token and using it (slow under load): extract with sed.
CODE=$(curl -s -o "$TMP/tokresp" -w '%{http_code}' -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data "$FORM" "$TOKEN_URL")
TOK=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$TMP/tokresp")
req GET "$BASE/Patient" "" -H "Authorization: Bearer $TOK"
FRESH=$CODE
[ "$FRESH" = 200 ] || fail "fresh 3 s token: $FRESH ($(cat "$TMP/tokresp"))"
grep -q '"expires_in":3,' "$TMP/tokresp" || fail "expires_in: $(cat "$TMP/tokresp")"
sleep 3.5
req GET "$BASE/Patient" "" -H "Authorization: Bearer $TOK"
[ "$CODE" = 401 ] || fail "token not expired after its TTL: $CODE"
req GET "$BASE/Patient" "" -H "Authorization: Bearer static-secret"
[ "$CODE" = 200 ] || fail "static token: $CODE"
req GET "$BASE/Patient" "" -H "Authorization: Bearer wrong"
[ "$CODE" = 401 ] || fail "wrong static token: $CODE"
ok "PEM public key; token expires after --token-ttl; static --token works alongside"


# --- HTTPS ------------------------------------------------------------------------------------
kill -TERM "$PID"
wait "$PID"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/tls.key" -out "$TMP/tls.crt" -days 1 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null || fail "openssl req"
node "$SERVER_DIR/server.mjs" --port 0 --tls-cert "$TMP/tls.crt" --tls-key "$TMP/tls.key" >"$TMP/tls.out" 2>"$TMP/tls.err" &
PID=$!
PIDS+=("$PID")
for _ in $(seq 1 300); do
  PORT=$(head -n1 "$TMP/tls.out" 2>/dev/null)
  [ -n "$PORT" ] && [ "$(curl -s --cacert "$TMP/tls.crt" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/healthz")" = 200 ] && break
  sleep 0.1
done
CODE=$(curl -s --cacert "$TMP/tls.crt" -o "$TMP/resp" -w '%{http_code}' "https://127.0.0.1:$PORT/fhir/metadata")
[ "$CODE" = 200 ] || fail "https with CA: $CODE"
[ "$(jget "$TMP/resp" 'd.implementation.url')" = "https://127.0.0.1:$PORT/fhir" ] || fail "https base URL"
curl -s -o /dev/null "https://127.0.0.1:$PORT/fhir/metadata"
rc=$?
[ $rc = 60 ] || fail "https without CA: curl exit $rc"
ok "HTTPS (--tls-cert/--tls-key): verified with the CA, refused without (curl exit 60)"


# mTLS: --tls-client-ca requires a client certificate signed by that CA.
kill -TERM "$PID"
wait "$PID"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/ca.key" -out "$TMP/ca.crt" -days 1 -subj /CN=test-ca 2>/dev/null || fail "ca"
openssl req -newkey rsa:2048 -nodes -keyout "$TMP/client.key" -out "$TMP/client.csr" -subj /CN=cartgate-client 2>/dev/null || fail "csr"
openssl x509 -req -in "$TMP/client.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial -out "$TMP/client.crt" -days 1 2>/dev/null || fail "client cert"
node "$SERVER_DIR/server.mjs" --port 0 --tls-cert "$TMP/tls.crt" --tls-key "$TMP/tls.key" --tls-client-ca "$TMP/ca.crt" >"$TMP/mtls.out" 2>"$TMP/mtls.err" &
PID=$!
PIDS+=("$PID")
MTLS=(--cacert "$TMP/tls.crt" --cert "$TMP/client.crt" --key "$TMP/client.key")
for _ in $(seq 1 300); do
  PORT=$(head -n1 "$TMP/mtls.out" 2>/dev/null)
  [ -n "$PORT" ] && [ "$(curl -s "${MTLS[@]}" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/healthz")" = 200 ] && break
  sleep 0.1
done
CODE=$(curl -s "${MTLS[@]}" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/fhir/metadata")
[ "$CODE" = 200 ] || fail "mTLS with client cert: $CODE"
CODE=$(curl -s --cacert "$TMP/tls.crt" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/fhir/metadata")
[ "$CODE" = 000 ] || fail "mTLS without client cert: $CODE"
ok "mTLS (--tls-client-ca): served with a client certificate, refused without"

echo "PASS: $CHECKS checks"
