#!/usr/bin/env bash
# What the daemon refuses on ingest and how it keeps the store private, with a files source
# (no FHIR server needed): a resource whose id is not a FHIR id (a newline that would forge a
# log line, a space) is not stored, counted and logged without the id; a reference to such an
# id names no patient; the store and its -wal/-shm files are 0600 whatever the caller's umask.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

mkdir -p "$TMP/drop"
"$CG" synth --seed 7 --patients 5 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
# one Patient with a forged-log-line id, one with a space, and an Observation pointing at it
cat >"$TMP/drop/zz-bad.ndjson" <<'NDJSON'
{"resourceType":"Patient","id":"evil\nts=\"x\" level=\"error\" event=\"forged\"","gender":"female"}
{"resourceType":"Patient","id":"has space","gender":"male"}
{"resourceType":"Observation","id":"o-bad-subject","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/has space"}}
NDJSON
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
cat >"$TMP/c.conf" <<CONF
{
  "site": {"id": "t-ids", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/cg.db"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]
}
CONF
umask 022
start_daemon d1 "$TMP/c.conf"
screened() { [ "$(screened_count "$TMP/cg.db" 2>/dev/null)" = 5 ]; }
wait_for "the 5 synthetic patients screened" 60 screened
moved() { [ -f "$TMP/drop/done/zz-bad.ndjson" ] || [ -f "$TMP/drop/failed/zz-bad.ndjson" ]; }
wait_for "the bad file read" 20 moved
stop_daemon "$DPID"

[ "$(grep -c 'event="ingest.refused" source="drop" type="Patient" reason=' "$TMP/d1.log")" = 2 ] ||
  fail "two Patients refused expected: $(grep ingest.refused "$TMP/d1.log")"
! grep -q 'event="forged"' "$TMP/d1.log" || fail "a log line was forged"
! grep -q 'has space\|evil' "$TMP/d1.log" || fail "the refused id reached the log"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM resources WHERE id LIKE 'evil%' OR id = 'has space'")" = 0 ] ||
  fail "a refused resource was stored"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM resources WHERE id = 'o-bad-subject' AND patient_id = ''")" = 1 ] ||
  fail "the Observation referring to a refused id: $(sqlite3 "$TMP/cg.db" "SELECT id, patient_id FROM resources WHERE id = 'o-bad-subject'")"
[ "$(screened_count "$TMP/cg.db")" = 5 ] || fail "a patient was made of a refused id"
ok "ids that are not FHIR ids refused (2), counted and logged without the id; no forged log line; a reference to one names no patient"

for f in "$TMP/cg.db" "$TMP/cg.db-wal" "$TMP/cg.db-shm"; do
  [ -e "$f" ] || continue
  m=$(stat -c %a "$f")
  [ "$m" = 600 ] || fail "$(basename "$f") has mode $m under umask 022"
done
ok "the store and its journals are 0600 under umask 022"
echo "test_daemon_ingest_ids: $CHECKS checks passed"
