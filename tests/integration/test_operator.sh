#!/usr/bin/env bash
# Operations an integrator expects (Mirth-style): the payload a referral sent (or will send) to
# its center, by the CLI on the store and through the API; re-screening one patient now,
# through the API, audited with the person. A files source (no FHIR server needed).
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

mkdir -p "$TMP/drop"
"$CG" synth --seed 5 --patients 30 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"   # nothing listens: sends stay queued
cat >"$TMP/c.conf" <<CONF
{
  "site": {"id": "t-ops", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/cg.db"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]
}
CONF
start_daemon d1 "$TMP/c.conf"
screened() { [ "$(screened_count "$TMP/cg.db" 2>/dev/null)" = 30 ]; }
wait_for "30 patients screened" 60 screened

id=$(sqlite3 "$TMP/cg.db" "SELECT id FROM referrals WHERE payload IS NOT NULL ORDER BY id LIMIT 1")
[ -n "$id" ] || fail "no referral with a package"
"$CG" referrals payload "$id" --db "$TMP/cg.db" >"$TMP/p-db.json" || fail "referrals payload --db"
[ "$(jget "$TMP/p-db.json" 'd.resourceType + "/" + d.type')" = "Bundle/transaction" ] || fail "not the Bundle: $(head -c 200 "$TMP/p-db.json")"
[ "$(jget "$TMP/p-db.json" 'd.entry.some(e=>e.resource.resourceType==="ServiceRequest") && d.entry.some(e=>e.resource.resourceType==="Task")')" = true ] ||
  fail "the Bundle lacks its ServiceRequest or Task"
CARTGATE_TOKEN="$TOKEN" "$CG" referrals payload "$id" --admin "$ADMIN" >"$TMP/p-api.json" || fail "referrals payload --admin"
cmp -s "$TMP/p-db.json" "$TMP/p-api.json" || fail "the API's payload differs from the store's"
api "/api/v1/referrals/$id/payload"; [ "$CODE" = 200 ] || fail "GET payload: $CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' "$ADMIN/api/v1/referrals/$id/payload")
[ "$CODE" = 401 ] || fail "payload without a token: $CODE"
"$CG" referrals payload 999999 --db "$TMP/cg.db" 2>"$TMP/p.err" && fail "payload of a missing referral"
grep -q "referral 999999 does not exist" "$TMP/p.err" || fail "no cause: $(cat "$TMP/p.err")"
ok "referrals payload $id (--db and --admin, same Bundle with its ServiceRequest and Task); 401 without a token; a missing referral is an error"

pid=$(sqlite3 "$TMP/cg.db" "SELECT patient_id FROM verdicts ORDER BY patient_id LIMIT 1")
before=$(sqlite3 "$TMP/cg.db" "SELECT updated_ms FROM verdicts WHERE patient_id='$pid'")
api "/api/v1/patients/$pid/rescreen" -X POST
[ "$CODE" = 202 ] && [ "$(jget "$TMP/resp" d.rescreen)" = queued ] || fail "rescreen: $CODE $(cat "$TMP/resp")"
again() { [ "$(sqlite3 "$TMP/cg.db" "SELECT updated_ms FROM verdicts WHERE patient_id='$pid'")" != "$before" ]; }
wait_for "$pid screened again" 30 again
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE action='rescreen' AND detail='$pid' AND actor='admin-api'")" = 1 ] ||
  fail "rescreen not audited: $(sqlite3 "$TMP/cg.db" "SELECT actor, action, detail FROM audit WHERE action='rescreen'")"
api "/api/v1/patients/no-such-patient/rescreen" -X POST; [ "$CODE" = 404 ] || fail "rescreen of an unknown patient: $CODE"
ok "POST /api/v1/patients/{id}/rescreen: 202, screened again on the next pass, audited with who asked; 404 for an unknown patient"
stop_daemon "$DPID"
echo "test_operator: $CHECKS checks passed"
