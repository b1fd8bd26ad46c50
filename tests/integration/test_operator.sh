#!/usr/bin/env bash
# Operations an integrator expects (Mirth-style): the payload a referral sent (or will send) to
# its center, by the CLI on the store and through the API; re-screening one patient or everyone
# now (`cartgate patients rescreen ID|--all`, through the API and on the store), audited with
# the person (one patient: clinician, everyone: admin); store.retention (`cartgate store prune`
# --dry-run / --apply, and the daemon by itself) removing the cached resources of patients
# without a heme diagnosis only, never verdicts, referrals or the audit. A files source (no
# FHIR server needed), a real SQLite store.
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

# the screening stores its proposals without summary, route and package: the first reader
# composes them (the API in the daemon, the CLI with the configuration) and stores them
texts() { sqlite3 "$TMP/cg.db" "SELECT (explanation IS NULL) || (route_json IS NULL) || (package IS NULL) || (payload IS NULL) FROM referrals WHERE id=$1"; }
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM referrals WHERE package IS NOT NULL OR explanation IS NOT NULL OR route_json IS NOT NULL")" = 0 ] ||
  fail "the screening stored a proposal's texts"
id=$(sqlite3 "$TMP/cg.db" "SELECT id FROM referrals ORDER BY id LIMIT 1")
id2=$(sqlite3 "$TMP/cg.db" "SELECT id FROM referrals ORDER BY id LIMIT 1 OFFSET 1")
[ -n "$id" ] && [ -n "$id2" ] || fail "fewer than two referrals"
"$CG" referrals payload "$id2" --db "$TMP/cg.db" >/dev/null 2>"$TMP/p.err" && fail "payload without the configuration"
grep -q "composed when first read" "$TMP/p.err" || fail "no cause: $(cat "$TMP/p.err")"
[ "$(texts "$id2")" = 1111 ] || fail "a reader without the configuration stored something"
api "/api/v1/referrals/$id"; [ "$CODE" = 200 ] || fail "GET referral: $CODE"
[ "$(jget "$TMP/resp" 'typeof d.explanation === "string" && d.explanation.length > 100 && Array.isArray(d.route.candidates)')" = true ] ||
  fail "the API shows no summary or route: $(head -c 300 "$TMP/resp")"
[ "$(texts "$id")" = 0001 ] || fail "the API's read did not store the texts: $(texts "$id")"
"$CG" referrals show "$id2" -c "$TMP/c.conf" --db "$TMP/cg.db" >"$TMP/show2.txt" || fail "show -c"
grep -q '^  summary ' "$TMP/show2.txt" || fail "show -c has no summary: $(head -c 300 "$TMP/show2.txt")"
[ "$(texts "$id2")" = 0001 ] || fail "the CLI's read did not store the texts: $(texts "$id2")"
ok "proposals stored without summary, route and package; composed and stored by the first reader (API $id, CLI -c $id2); without the configuration the CLI says so and stores nothing"
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

# ---- cartgate patients rescreen ----------------------------------------------------------------
vtime() { sqlite3 "$TMP/cg.db" "SELECT updated_ms FROM verdicts WHERE patient_id='$1'"; }
pid2=$(sqlite3 "$TMP/cg.db" "SELECT patient_id FROM verdicts ORDER BY patient_id LIMIT 1 OFFSET 1")
before2=$(vtime "$pid2")
CARTGATE_TOKEN="$TOKEN" "$CG" patients rescreen "$pid2" --admin "$ADMIN" --reason "new labs" >"$TMP/pr.out" 2>"$TMP/pr.err" ||
  fail "patients rescreen ID: $(cat "$TMP/pr.err")"
grep -q "patient $pid2: queued" "$TMP/pr.out" || fail "rescreen ID said: $(cat "$TMP/pr.out")"
again2() { [ "$(vtime "$pid2")" != "$before2" ]; }
wait_for "$pid2 screened again (CLI)" 30 again2
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE action='rescreen' AND detail='$pid2' AND actor='admin-api' AND reason='new labs' AND role='clinician'")" = 1 ] ||
  fail "CLI rescreen not audited: $(sqlite3 "$TMP/cg.db" "SELECT actor, role, action, detail, reason FROM audit WHERE action LIKE 'rescreen%'")"
withdata=$(sqlite3 "$TMP/cg.db" "SELECT count(DISTINCT patient_id) FROM resources WHERE patient_id <> ''")
t0=$(sqlite3 "$TMP/cg.db" "SELECT max(updated_ms) FROM verdicts")
CARTGATE_TOKEN="$TOKEN" "$CG" patients rescreen --all --admin "$ADMIN" >"$TMP/pa.out" 2>"$TMP/pa.err" || fail "rescreen --all: $(cat "$TMP/pa.err")"
grep -q "^$withdata patient(s) queued" "$TMP/pa.out" || fail "rescreen --all said: $(cat "$TMP/pa.out") (patients with data: $withdata)"
all_again() { [ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts WHERE updated_ms > $t0")" = 30 ]; }
wait_for "all 30 patients screened again" 60 all_again
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE action='rescreen-all' AND detail='$withdata patients' AND actor='admin-api' AND role='admin'")" = 1 ] ||
  fail "rescreen --all not audited"
ok "patients rescreen ID and --all through the API: queued, screened again by the daemon ($withdata patients), audited with the token's owner, role and reason"

"$CG" users add dr.cli --role clinician --no-password --db "$TMP/cg.db" >/dev/null 2>&1 || fail "users add"
CTOK=$("$CG" users token dr.cli --db "$TMP/cg.db" 2>/dev/null) || fail "users token"
CARTGATE_TOKEN="$CTOK" "$CG" patients rescreen --all --admin "$ADMIN" >/dev/null 2>"$TMP/p403.err"; rc=$?
[ $rc = 1 ] && grep -q "403 Forbidden" "$TMP/p403.err" || fail "a clinician re-screened everyone: rc=$rc $(cat "$TMP/p403.err")"
CARTGATE_TOKEN="$CTOK" "$CG" patients rescreen "$pid" --admin "$ADMIN" >/dev/null 2>"$TMP/pc.err" || fail "clinician rescreen ID: $(cat "$TMP/pc.err")"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE action='rescreen' AND actor='dr.cli' AND role='clinician' AND user_id > 0")" = 1 ] ||
  fail "clinician rescreen not audited with the person"
CARTGATE_TOKEN="$CTOK" "$CG" patients rescreen no-such-patient --admin "$ADMIN" >/dev/null 2>"$TMP/p404.err"; rc=$?
[ $rc = 1 ] && grep -q "404 Not Found: patient no-such-patient: no such patient" "$TMP/p404.err" || fail "unknown patient: rc=$rc $(cat "$TMP/p404.err")"
"$CG" patients rescreen "$pid" --all --db "$TMP/cg.db" >/dev/null 2>&1; [ $? = 2 ] || fail "ID and --all together not a usage error"
"$CG" patients rescreen "$pid" --db "$TMP/cg.db" --actor ops.night --reason "mapping fixed" >"$TMP/pd.out" 2>&1 || fail "rescreen --db: $(cat "$TMP/pd.out")"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE action='rescreen' AND actor='ops.night' AND reason='mapping fixed' AND detail='$pid'")" = 1 ] ||
  fail "rescreen --db not audited"
ok "a clinician re-screens one patient (audited by name) but not everyone (403); unknown patient 404; --db audited with --actor; ID with --all is a usage error"

# ---- store.retention -----------------------------------------------------------------------------
# Two patients without a heme diagnosis (a breast cancer, a hypertension) arrive; their verdicts
# record no heme diagnosis, the cohort's (heme malignancies) record one.
cat >"$TMP/drop/nonheme.ndjson" <<'ND'
{"resourceType":"Patient","id":"nh-1","birthDate":"1960-02-03","name":[{"family":"Solidtumor","given":["Nora"]}]}
{"resourceType":"Condition","id":"nh-1-c","subject":{"reference":"Patient/nh-1"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"254837009","display":"Malignant neoplasm of breast"}]},"onsetDateTime":"2024-01-10"}
{"resourceType":"Patient","id":"nh-2","birthDate":"1955-07-08","name":[{"family":"Pressure","given":["Hal"]}]}
{"resourceType":"Condition","id":"nh-2-c","subject":{"reference":"Patient/nh-2"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003","display":"Hypertension"}]},"onsetDateTime":"2020-01-10"}
ND
nh_screened() { [ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts WHERE patient_id IN ('nh-1','nh-2') AND heme = 0")" = 2 ]; }
wait_for "the two non-heme patients screened (heme = 0)" 30 nh_screened
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts WHERE heme = 1")" -ge 1 ] || fail "no verdict records a heme diagnosis"
# their data (and one cohort patient's) is made 40 days old
sqlite3 "$TMP/cg.db" "UPDATE resources SET stored_ms = stored_ms - 40*86400000 WHERE patient_id IN ('nh-1','nh-2','$pid')" || fail "ageing"
counts() { sqlite3 "$TMP/cg.db" "SELECT (SELECT count(*) FROM resources) || ' ' || (SELECT count(*) FROM verdicts) || ' ' || (SELECT count(*) FROM referrals) || ' ' || (SELECT count(*) FROM audit)"; }
c0=$(counts)
"$CG" store prune --db "$TMP/cg.db" --days 30 --dry-run >"$TMP/dry.out" 2>&1 || fail "prune --dry-run: $(cat "$TMP/dry.out")"
grep -q ": 2 patient(s) without a heme diagnosis, unchanged for 30 days: 4 cached resource(s) would be removed (dry run)" "$TMP/dry.out" ||
  fail "dry run said: $(cat "$TMP/dry.out")"
[ "$(counts)" = "$c0" ] || fail "the dry run changed the store: $c0 -> $(counts)"
grep -Eq "nh-|Solidtumor|Nora|1960" "$TMP/dry.out" && fail "the dry run names a patient: $(cat "$TMP/dry.out")"
"$CG" store prune --db "$TMP/cg.db" --days 30 >/dev/null 2>&1; [ $? = 2 ] || fail "prune without --dry-run or --apply not a usage error"
ok "store prune --dry-run: 2 patients without a heme diagnosis, 4 resources, counts only, nothing changed"
stop_daemon "$DPID"

# the daemon applies store.retention_days at start (then hourly)
sed -i 's|"store": {"path": "'"$TMP"'/cg.db"}|"store": {"path": "'"$TMP"'/cg.db", "retention_days": 30}|' "$TMP/c.conf"
grep -q '"retention_days": 30' "$TMP/c.conf" || fail "config not edited"
"$CG" check-config -c "$TMP/c.conf" >/dev/null 2>"$TMP/cc.err" || fail "check-config: $(cat "$TMP/cc.err")"
start_daemon d2 "$TMP/c.conf"
pruned() { grep -q 'event="retention.pruned" days="30" patients="2" resources="4"' "$TMP/d2.log"; }
wait_for "the daemon pruned at start" 30 pruned
read -r r0 v0 f0 a0 <<<"$c0"
read -r r1 v1 f1 a1 <<<"$(counts)"
[ "$r1" = $((r0 - 4)) ] && [ "$v1" = "$v0" ] && [ "$f1" = "$f0" ] && [ "$a1" = $((a0 + 1)) ] ||
  fail "resources/verdicts/referrals/audit: $c0 -> $r1 $v1 $f1 $a1"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM resources WHERE patient_id IN ('nh-1','nh-2')")" = 0 ] || fail "non-heme resources left"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM resources WHERE patient_id = '$pid'")" -gt 0 ] || fail "the aged heme patient lost data"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE action='retention-prune' AND actor='retention' AND detail='store.retention 30 days: 2 patients, 4 resources'")" = 1 ] ||
  fail "the prune is not audited"
api /metrics
rm_n=$(awk '$1=="cartgate_retention_pruned_resources_total" {print $2}' "$TMP/resp")
[ "$rm_n" = 4 ] || fail "cartgate_retention_pruned_resources_total: $rm_n"
api "/api/v1/patients/nh-1/rescreen" -X POST; [ "$CODE" = 409 ] || fail "rescreen of a pruned patient: $CODE $(cat "$TMP/resp")"
api "/api/v1/patients/nh-1"; [ "$CODE" = 200 ] || fail "the pruned patient's verdict: $CODE"
api "/api/v1/patients/rescreen" -X POST; [ "$CODE" = 202 ] && [ "$(jget "$TMP/resp" d.patients)" = 30 ] || fail "rescreen all after the prune: $CODE $(cat "$TMP/resp")"
kept() { [ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM daemon_dirty")" = 0 ]; }
wait_for "everyone screened again" 60 kept
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts")" = "$v0" ] || fail "a verdict was lost after the prune"
grep -Eq "Solidtumor|Nora|Pressure|1960-02-03|1955-07-08" "$TMP/d2.log" && fail "the log carries PHI of the pruned patients"
ok "the daemon applied store.retention_days=30 at start: 4 resources of 2 non-heme patients removed, verdicts/referrals kept, audited, counted; their verdicts survive a re-screen of everyone (409 for one)"
stop_daemon "$DPID"
echo "test_operator: $CHECKS checks passed"
