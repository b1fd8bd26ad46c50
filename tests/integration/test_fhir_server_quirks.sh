#!/usr/bin/env bash
# ctest-label: node  (tests the Node reference server only; scripts/test runs it once)
# Integration test of the reference FHIR server's switchable real-EHR behaviours (quirks,
# POST /admin/quirks) and of what they build on: truncated paging, searchset warnings,
# _lastUpdated / _since ignored, paging links and bulk files on a second origin
# (--alt-port), pre-signed bulk files that refuse an Authorization header, manifest error[]
# and deleted[] entries, type-level _history with deletions, a bulk file failing once
# (status or truncated body), one bulk job at a time, multi-file exports (--bulk-file-max),
# and fault rules filtered by query string.
set -u
. "$(dirname "$0")/lib.sh"
need_tools node curl

TOK=quirk-secret
AUTH=(-H "Authorization: Bearer $TOK")
# req METHOD URL [curl args...]: body to $TMP/resp, headers to $TMP/hdr, status in $CODE.
req() {
  local method=$1 url=$2
  shift 2
  CODE=$(curl -s -o "$TMP/resp" -D "$TMP/hdr" -w '%{http_code}' -X "$method" -H 'Accept: application/fhir+json' "$@" "$url")
}
quirks() { # JSON: replaces the quirk set; status in QCODE
  QCODE=$(curl -s -o "$TMP/quirks" -w '%{http_code}' -X POST -d "$1" "$ADMIN/quirks")
}
# export_manifest KICKOFF_URL: kick-off, poll to completion, manifest in $TMP/manifest.json,
# status URL in $STATUS_URL.
export_manifest() {
  req GET "$1" "${AUTH[@]}" -H 'Prefer: respond-async'
  [ "$CODE" = 202 ] || fail "kick-off $1: $CODE $(cat "$TMP/resp")"
  STATUS_URL=$(grep -i '^Content-Location:' "$TMP/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
  for _ in $(seq 1 100); do
    req GET "$STATUS_URL" "${AUTH[@]}"
    [ "$CODE" = 202 ] || break
    sleep 0.1
  done
  [ "$CODE" = 200 ] || fail "export status: $CODE"
  cp "$TMP/resp" "$TMP/manifest.json"
}

# ---------------------------------------------------------------------------------------------
# Seed: 3 Patients, 120 Observations (old lastUpdated), 10 Conditions, a Group of two patients.
mkdir -p "$TMP/seed"
node -e '
const out = [];
for (let p = 0; p < 3; p++) out.push({ resourceType: "Patient", id: "qp" + p, meta: { lastUpdated: "2021-01-01T00:00:00Z" } });
for (let i = 0; i < 120; i++) out.push({ resourceType: "Observation", id: "qo" + i, status: "final", code: { text: "q" },
  subject: { reference: "Patient/qp" + (i % 3) }, meta: { lastUpdated: "2021-01-01T00:00:00Z" } });
for (let i = 0; i < 10; i++) out.push({ resourceType: "Condition", id: "qc" + i, code: { text: "c" },
  subject: { reference: "Patient/qp" + (i % 3) }, meta: { lastUpdated: "2021-01-01T00:00:00Z" } });
out.push({ resourceType: "Group", id: "qg", type: "person", actual: true,
  member: [{ entity: { reference: "Patient/qp0" } }, { entity: { reference: "Patient/qp1" } }] });
require("fs").writeFileSync(process.argv[1], out.map((r) => JSON.stringify(r)).join("\n") + "\n");
' "$TMP/seed/q.ndjson"

start_server q --seed "$TMP/seed" --token "$TOK" --alt-port 0 --bulk-file-max 50
ALT_PORT=$(sed -n 2p "$TMP/q.out")
[[ "$ALT_PORT" =~ ^[0-9]+$ ]] && [ "$ALT_PORT" != "$PORT" ] || fail "no alt port on stdout line 2: '$ALT_PORT'"
ADMIN="http://127.0.0.1:$PORT/admin"
ALT="http://127.0.0.1:$ALT_PORT"
curl -s "$ADMIN/quirks" >"$TMP/q.json"
[ "$(jget "$TMP/q.json" 'd.alt_origin+" "+JSON.stringify(d.quirks)')" = "$ALT {}" ] || fail "GET /admin/quirks: $(cat "$TMP/q.json")"
req GET "$ALT/fhir/Patient/qp0" "${AUTH[@]}"
[ "$CODE" = 200 ] || fail "alt origin read: $CODE"
req GET "$ALT/fhir/Patient/qp0"
[ "$CODE" = 401 ] || fail "alt origin without token: $CODE"
ok "--alt-port: second origin on port $ALT_PORT (stdout line 2) serves /fhir with the same auth"

quirks '{"nonsense":true}'
[ "$QCODE" = 400 ] && grep -q "unknown quirk 'nonsense'" "$TMP/quirks" || fail "unknown quirk: $QCODE $(cat "$TMP/quirks")"
quirks '{"bulk_errors":{}}'
[ "$QCODE" = 400 ] && grep -q 'bulk_errors needs types' "$TMP/quirks" || fail "bulk_errors without types: $QCODE"
quirks '{"search_truncate":{"page":0}}'
[ "$QCODE" = 400 ] || fail "page 0 accepted: $QCODE"
ok "invalid quirks -> 400 with the reason"

# --- search_truncate: a page without next while total says more -------------------------------
quirks '{"search_truncate":{"page":2,"types":["Observation"]}}'
[ "$QCODE" = 200 ] || fail "set search_truncate: $QCODE $(cat "$TMP/quirks")"
req GET "$BASE/Observation?code:text=q&_count=50" "${AUTH[@]}"
NEXT=$(jget "$TMP/resp" '((d.link||[]).find(l=>l.relation==="next")||{}).url||""')
[ -n "$NEXT" ] && [ "$(jget "$TMP/resp" 'd.total+" "+d.entry.length')" = "120 50" ] || fail "page 1: $(jget "$TMP/resp" 'd.total')"
req GET "$NEXT" "${AUTH[@]}"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.total+" "+d.entry.length+" "+(d.link||[]).map(l=>l.relation).join()')" = "120 50 self,previous" ] \
  || fail "page 2: $CODE $(jget "$TMP/resp" 'd.total+" "+(d.link||[]).map(l=>l.relation).join()')"
req GET "$BASE/Condition?_count=5" "${AUTH[@]}"
jget "$TMP/resp" '(d.link||[]).map(l=>l.relation).join()' | grep -q next || fail "truncation applied to Condition"
curl -s "$ADMIN/quirks" >"$TMP/q.json"
[ "$(jget "$TMP/q.json" 'd.quirks.search_truncate.fired')" = 1 ] || fail "fired: $(cat "$TMP/q.json")"
ok "search_truncate: Observation page 2 of 3 has no next link (total 120, 100 delivered); other types untouched"

# --- search_warning -------------------------------------------------------------------------------
quirks '{"search_warning":{"text":"parameter code:text is not indexed"}}'
req GET "$BASE/Observation?code:text=q&_count=100" "${AUTH[@]}"
[ "$(jget "$TMP/resp" 'd.total+" "+d.entry.filter(e=>e.search.mode==="match").length')" = "120 100" ] || fail "warning page"
[ "$(jget "$TMP/resp" 'JSON.stringify(d.entry.filter(e=>e.search.mode==="outcome").map(e=>[e.resource.resourceType,e.resource.issue[0].severity,e.resource.issue[0].details.text]))')" = \
  '[["OperationOutcome","warning","parameter code:text is not indexed"]]' ] || fail "outcome entry: $(cat "$TMP/resp" | head -c 300)"
ok "search_warning: one OperationOutcome entry (search.mode outcome, warning) per page"

# --- search_ignore_last_updated ---------------------------------------------------------------------
quirks '{"search_ignore_last_updated":true}'
req GET "$BASE/Patient?_lastUpdated=gt2030-01-01" "${AUTH[@]}"
[ "$(jget "$TMP/resp" 'd.total')" = 3 ] || fail "ignored _lastUpdated: total $(jget "$TMP/resp" 'd.total')"
jget "$TMP/resp" 'd.link[0].url' | grep -q '_lastUpdated=gt2030' || fail "self link lost _lastUpdated"
curl -s -X DELETE "$ADMIN/quirks" >/dev/null
req GET "$BASE/Patient?_lastUpdated=gt2030-01-01" "${AUTH[@]}"
[ "$(jget "$TMP/resp" 'd.total')" = 0 ] || fail "_lastUpdated after DELETE /admin/quirks"
ok "search_ignore_last_updated: _lastUpdated=gt2030 returns all 3 Patients; DELETE /admin/quirks restores it"

# --- paging_origin ------------------------------------------------------------------------------------
quirks '{"paging_origin":{"origin":"alt"}}'
req GET "$BASE/Observation?code:text=q&_count=50" "${AUTH[@]}"
NEXT=$(jget "$TMP/resp" '((d.link||[]).find(l=>l.relation==="next")||{}).url||""')
[[ "$NEXT" == "$ALT/fhir/Observation?"* ]] || fail "next link not on the alt origin: $NEXT"
req GET "$NEXT" "${AUTH[@]}"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.entry.length')" = 50 ] || fail "alt page: $CODE"
jget "$TMP/resp" 'd.entry[0].fullUrl' | grep -q "^$BASE/Observation/" || fail "fullUrl moved to the alt origin"
ok "paging_origin: next links on $ALT, served there; fullUrl stays on the base"
curl -s -X DELETE "$ADMIN/quirks" >/dev/null

# --- fault rule filtered by query string: every page but the first fails -------------------------
curl -s -X POST "$ADMIN/faults" -d '{"mode":"status","status":500,"query":"_offset="}' >/dev/null
req GET "$BASE/Observation?code:text=q&_count=50" "${AUTH[@]}"
[ "$CODE" = 200 ] || fail "first page under query fault: $CODE"
req GET "$(jget "$TMP/resp" 'd.link.find(l=>l.relation==="next").url')" "${AUTH[@]}"
[ "$CODE" = 500 ] || fail "second page under query fault: $CODE"
curl -s -X DELETE "$ADMIN/faults" >/dev/null
ok "fault rule with query \"_offset=\": page 1 served, page 2 answered 500"

# --- bulk: deleted[] after _since ----------------------------------------------------------------
req DELETE "$BASE/Condition/qc9" "${AUTH[@]}"
[ "$CODE" = 200 ] || fail "delete qc9: $CODE"
sleep 0.05
T1=$(node -e 'process.stdout.write(new Date().toISOString())')
sleep 0.05
req DELETE "$BASE/Condition/qc0" "${AUTH[@]}"
req DELETE "$BASE/Condition/qc2" "${AUTH[@]}"  # patient qp2: not in Group qg
req DELETE "$BASE/Observation/qo1" "${AUTH[@]}"
export_manifest "$BASE/Group/qg/\$export?_since=$T1"
[ "$(jget "$TMP/manifest.json" 'd.deleted.map(f=>f.type+":"+f.count).join()+" "+d.error.length+" "+d.output.length')" = "Bundle:1,Bundle:1 0 0" ] \
  || fail "deleted manifest: $(cat "$TMP/manifest.json")"
: >"$TMP/deleted.txt"
for u in $(jget "$TMP/manifest.json" 'd.deleted.map(f=>f.url).join(" ")'); do
  req GET "$u" "${AUTH[@]}"
  [ "$CODE" = 200 ] || fail "deleted file: $CODE"
  jget "$TMP/resp" 'd.resourceType+" "+d.type+" "+d.entry.map(e=>e.request.method+" "+e.request.url).join()' >>"$TMP/deleted.txt"
  echo >>"$TMP/deleted.txt"
done
[ "$(sort "$TMP/deleted.txt" | tr '\n' '|')" = "Bundle transaction DELETE Condition/qc0|Bundle transaction DELETE Observation/qo1|" ] \
  || fail "deleted content: $(cat "$TMP/deleted.txt")"
req DELETE "$STATUS_URL" "${AUTH[@]}"
export_manifest "$BASE/Group/qg/\$export"
[ "$(jget "$TMP/manifest.json" 'd.deleted.length')" = 0 ] || fail "deleted[] without _since"
req DELETE "$STATUS_URL" "${AUTH[@]}"
ok "bulk deleted[]: deletions after _since in the group (Condition/qc0, Observation/qo1) as DELETE Bundles; earlier ones and other patients' not; none without _since"

# --- type history: versions and deletions since an instant ---------------------------------------
req GET "$BASE/Condition/_history?_since=$T1" "${AUTH[@]}"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.type+" "+d.total+" "+d.entry.map(e=>e.request.method+" "+e.request.url+" "+e.response.status+" "+(e.resource?"res":"none")).sort().join()')" = \
  "history 2 DELETE Condition/qc0 410 Gone none,DELETE Condition/qc2 410 Gone none" ] || fail "type history: $CODE $(head -c 400 "$TMP/resp")"
req PUT "$BASE/Condition/qc1" "${AUTH[@]}" -H 'Content-Type: application/fhir+json' \
  --data '{"resourceType":"Condition","id":"qc1","code":{"text":"changed"},"subject":{"reference":"Patient/qp1"}}'
[ "$CODE" = 200 ] || fail "update qc1: $CODE"
req GET "$BASE/Condition/_history?_since=$T1&_count=2" "${AUTH[@]}"
[ "$(jget "$TMP/resp" 'd.total+" "+d.entry[0].request.method+" "+d.entry[0].request.url+" "+d.entry[0].resource.code.text+" "+d.link.some(l=>l.relation==="next")')" = "3 PUT Condition/qc1 changed true" ] \
  || fail "type history after update: $(head -c 400 "$TMP/resp")"
req GET "$BASE/Condition/_history?_count=1000" "${AUTH[@]}"
[ "$(jget "$TMP/resp" 'd.total')" = 14 ] || fail "full type history: $(jget "$TMP/resp" 'd.total')"
ok "GET Condition/_history?_since: deletions as DELETE entries (410, no resource), updates as PUT, newest first, paged; without _since every version"

# --- bulk_errors -----------------------------------------------------------------------------------
quirks '{"bulk_errors":{"types":["Condition"],"text":"database timeout"}}'
export_manifest "$BASE/Group/qg/\$export?_type=Patient,Condition,Observation"
[ "$(jget "$TMP/manifest.json" 'd.output.map(f=>f.type).sort().join()+" "+d.error.map(f=>f.type+":"+f.count).join()')" = "Observation,Observation,Patient OperationOutcome:1" ] \
  || fail "bulk_errors manifest: $(cat "$TMP/manifest.json")"
req GET "$(jget "$TMP/manifest.json" 'd.error[0].url')" "${AUTH[@]}"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.resourceType+" "+d.issue[0].severity+" "+d.issue[0].details.text')" = "OperationOutcome error Condition: database timeout" ] \
  || fail "error file: $CODE $(cat "$TMP/resp")"
req DELETE "$STATUS_URL" "${AUTH[@]}"
quirks '{"bulk_errors":{"types":["Condition"],"severity":"information","text":"slow"}}'
export_manifest "$BASE/Group/qg/\$export?_type=Condition"
[ "$(jget "$TMP/manifest.json" 'd.output.map(f=>f.type+":"+f.count).join()+" "+d.error.length')" = "Condition:5 1" ] \
  || fail "informational error: $(cat "$TMP/manifest.json")"
req DELETE "$STATUS_URL" "${AUTH[@]}"
ok "bulk_errors: error[] OperationOutcome file (error: output dropped; information: output kept)"

# --- bulk_ignore_since ---------------------------------------------------------------------------
quirks '{"bulk_ignore_since":true}'
export_manifest "$BASE/Group/qg/\$export?_type=Patient&_since=2030-01-01T00:00:00Z"
[ "$(jget "$TMP/manifest.json" 'd.output.map(f=>f.type+":"+f.count).join()')" = "Patient:2" ] || fail "ignored _since: $(cat "$TMP/manifest.json")"
req DELETE "$STATUS_URL" "${AUTH[@]}"
ok "bulk_ignore_since: _since=2030 still exports both group patients"

# --- bulk_files: pre-signed on the alt origin, no token ------------------------------------------
quirks '{"bulk_files":{"origin":"alt","requires_access_token":false}}'
export_manifest "$BASE/Group/qg/\$export?_type=Observation"
[ "$(jget "$TMP/manifest.json" 'd.requiresAccessToken')" = false ] || fail "requiresAccessToken: $(cat "$TMP/manifest.json")"
FILE_URL=$(jget "$TMP/manifest.json" 'd.output[0].url')
[[ "$FILE_URL" == "$ALT/files/"*"?sig="* ]] || fail "file URL: $FILE_URL"
req GET "$FILE_URL" "${AUTH[@]}"
[ "$CODE" = 400 ] && grep -q 'Authorization header must not be sent' "$TMP/resp" || fail "pre-signed with Authorization: $CODE"
req GET "$FILE_URL"
[ "$CODE" = 200 ] && [ "$(grep -c '"resourceType":"Observation"' "$TMP/resp")" = 50 ] || fail "pre-signed without Authorization: $CODE"
req GET "${FILE_URL%%\?*}?sig=0000"
[ "$CODE" = 403 ] || fail "bad signature: $CODE"
curl -s "$ADMIN/stats" >"$TMP/stats"
[ "$(jget "$TMP/stats" 'JSON.stringify(d.files.by_status)')" = '{"200":1,"400":1,"403":1}' ] || fail "files stats: $(jget "$TMP/stats" 'd.files')"
req DELETE "$STATUS_URL" "${AUTH[@]}"
quirks '{"bulk_files":{"origin":"alt","requires_access_token":true}}'
export_manifest "$BASE/Group/qg/\$export?_type=Observation"
FILE_URL=$(jget "$TMP/manifest.json" 'd.output[0].url')
[ "$(jget "$TMP/manifest.json" 'd.requiresAccessToken')" = true ] && [[ "$FILE_URL" == "$ALT/fhir/\$export-file/"* ]] || fail "alt with token: $FILE_URL"
req GET "$FILE_URL"
[ "$CODE" = 401 ] || fail "alt file without token: $CODE"
req GET "$FILE_URL" "${AUTH[@]}"
[ "$CODE" = 200 ] || fail "alt file with token: $CODE"
req DELETE "$STATUS_URL" "${AUTH[@]}"
ok "bulk_files: pre-signed alt-origin files refuse a token (400), need the signature (403), serve without; requiresAccessToken true on the alt origin needs the token"

# --- bulk_file_fail ------------------------------------------------------------------------------
curl -s -X DELETE "$ADMIN/quirks" >/dev/null
quirks '{"bulk_file_fail":{"how":"truncate","types":["Observation"]}}'
export_manifest "$BASE/Group/qg/\$export?_type=Patient,Observation"
[ "$(jget "$TMP/manifest.json" 'd.output.map(f=>f.type+":"+f.count).join()')" = "Patient:2,Observation:50,Observation:29" ] || fail "multi-file manifest"
OBS_URL=$(jget "$TMP/manifest.json" 'd.output.find(f=>f.type==="Observation").url')
PAT_URL=$(jget "$TMP/manifest.json" 'd.output.find(f=>f.type==="Patient").url')
req GET "$PAT_URL" "${AUTH[@]}"
[ "$CODE" = 200 ] || fail "Patient file under Observation failure: $CODE"
curl -s -o "$TMP/obs1" "${AUTH[@]}" "$OBS_URL"
rc=$?
[ $rc = 18 ] || fail "truncated file: curl exit $rc (expected 18, partial file)"
[ -s "$TMP/obs1" ] || fail "truncated file: no bytes before the drop"
curl -s -o "$TMP/obs2" "${AUTH[@]}" "$OBS_URL" || fail "second download: curl exit $?"
[ "$(wc -l <"$TMP/obs2")" = 50 ] && [ "$(wc -c <"$TMP/obs1")" -lt "$(wc -c <"$TMP/obs2")" ] || fail "retry content"
req DELETE "$STATUS_URL" "${AUTH[@]}"
quirks '{"bulk_file_fail":{"how":"status","status":503,"file":1,"limit":2}}'
export_manifest "$BASE/Group/qg/\$export?_type=Patient,Observation"
F1=$(jget "$TMP/manifest.json" 'd.output[1].url')
codes=""
for _ in 1 2 3; do req GET "$F1" "${AUTH[@]}"; codes="$codes$CODE,"; done
[ "$codes" = "503,503,200," ] || fail "status fail limit 2: $codes"
req DELETE "$STATUS_URL" "${AUTH[@]}"
ok "bulk_file_fail: truncated body once (curl exit 18, retry complete); 503 twice then 200 (file index, limit)"

# --- bulk_one_job --------------------------------------------------------------------------------
quirks '{"bulk_one_job":{"retry_after":3}}'
export_manifest "$BASE/Group/qg/\$export?_type=Patient"
FIRST=$STATUS_URL
req GET "$BASE/Group/qg/\$export?_type=Patient" "${AUTH[@]}" -H 'Prefer: respond-async'
[ "$CODE" = 429 ] && grep -qi '^Retry-After: 3' "$TMP/hdr" || fail "second job: $CODE"
[ "$(jget "$TMP/resp" 'd.issue[0].code')" = throttled ] && grep -q 'already running' "$TMP/resp" || fail "second job body: $(cat "$TMP/resp")"
req DELETE "$FIRST" "${AUTH[@]}"
export_manifest "$BASE/Group/qg/\$export?_type=Patient"
req DELETE "$STATUS_URL" "${AUTH[@]}"
quirks '{"bulk_one_job":{"status":409,"retry_after":null}}'
export_manifest "$BASE/Patient/\$export?_type=Patient"
req GET "$BASE/Patient/\$export?_type=Patient" "${AUTH[@]}" -H 'Prefer: respond-async'
[ "$CODE" = 409 ] && ! grep -qi '^Retry-After' "$TMP/hdr" && [ "$(jget "$TMP/resp" 'd.issue[0].code')" = business-rule ] || fail "409 variant: $CODE"
req DELETE "$STATUS_URL" "${AUTH[@]}"
curl -s "$ADMIN/quirks" >"$TMP/q.json"
[ "$(jget "$TMP/q.json" 'd.quirks.bulk_one_job.fired')" = 1 ] || fail "one_job fired"
ok "bulk_one_job: a second kick-off while a job exists -> 429 + Retry-After + OperationOutcome; after DELETE a new job starts; 409 variant without Retry-After"

echo "PASS: $CHECKS checks"
