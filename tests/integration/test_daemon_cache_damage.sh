#!/usr/bin/env bash
# Screening never silently drops what the cache holds (gateway/daemon/daemon.c res_list_add):
# the demo DLBCL patient in an EHR reference server, cartgate run reading it by search.
#   1. Screened: eligible, from every record (no "partial").
#   2. One cached row damaged with sqlite3 (the diagnosis, Condition/demo-dx-1), the patient
#      marked for screening again (`cartgate patients rescreen --db`), the daemon restarted:
#      the screening fails with a cause naming the row (event=screen.failed, never PHI),
#      cartgate_screen_errors_total counts it, the verdict is kept as it was (same JSON, same
#      time), the row stays cached (not dropped: a dropped row would let the next screening
#      decide on less data without a word), and the API still shows the kept verdict with
#      "profile_error", and the patient page refuses with the cause. Before this, the row was
#      skipped and the patient lost the diagnosis that made him eligible. The Patient row
#      damaged too: the worklist shows the patient as unreadable, not "(no name recorded)".
#   3. The source sends the resource again (a new version at the EHR): the poll replaces the
#      damaged row, the patient is screened again from every record, eligible.
#   4. A second daemon with the per-patient cap lowered by the test hook
#      CARTGATE_TEST_SCREEN_MAX_RESOURCES=4: the verdict is still made, marked partial
#      ("partial":{"read":4,"cached":10}, the explanation's first line "Only the first 4 of
#      10 records in this chart were read; the verdict may miss facts."), event=screen.partial
#      with the counts, cartgate_screen_partial_total 1.
#   5. A third daemon with the memory for one chart lowered by the test hook
#      CARTGATE_TEST_SCREEN_ARENA_MAX=8192 (DAEMON_SCREEN_ARENA_MAX is 512 MiB): the records that
#      fit are read and the verdict is marked partial the same way, nothing fails.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
mkdir -p "$TMP/seed"
demo_seed "$TMP/seed/demo.ndjson"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
source_conf dmg "{\"name\": \"ehr\", \"kind\": \"search\", \"base_url\": \"$EHR\", \"interval_s\": 1, \"page_size\": 50}"
DB="$TMP/dmg.db"
PAT=demo-dlbcl-1
ROW="type='Condition' AND id='demo-dx-1'"
q() { sqlite3 -cmd ".timeout 5000" "$DB" "$1"; }
PW='viewer: correct horse battery'
# page DB [PATH]: a page (default the patient's) signed in as a viewer of that store (body
# $TMP/page.html, status CODE)
page() {
  echo "$PW" | "$CG" users add vera --role viewer --password-stdin --db "$1" >/dev/null 2>&1
  CODE=$(curl -s -D "$TMP/login.h" -o /dev/null -w '%{http_code}' --data-urlencode "username=vera" \
    --data-urlencode "password=$PW" --data-urlencode "next=/ui/" "$ADMIN/auth/login")
  [ "$CODE" = 303 ] || fail "sign-in: $CODE"
  local cookie
  cookie=$(grep -i '^set-cookie: cartgate_session=' "$TMP/login.h" | tr -d '\r' | sed 's/^[^:]*: \(cartgate_session=[^;]*\).*/\1/')
  CODE=$(curl -s -o "$TMP/page.html" -w '%{http_code}' -H "Cookie: $cookie" "$ADMIN${2:-/ui/patients/$PAT}")
}
vstate() { q "SELECT category || '|' || updated_ms || '|' || verdict_json FROM verdicts WHERE patient_id='$PAT'"; }

# ---- 1. screened from every record -----------------------------------------------------------
start_daemon dmg "$TMP/dmg.conf"
screened() { [ "$(q "SELECT category FROM verdicts WHERE patient_id='$PAT'" 2>/dev/null)" = eligible ] &&
  [ "$(q 'SELECT count(*) FROM daemon_dirty')" = 0 ]; }
wait_for "the demo patient screened" 120 screened
# The search asks _lastUpdated=ge<cursor>: the newest Patient and Condition are read again on
# every poll (a damaged copy of them would be replaced at once). Another patient's newer
# Patient and Condition move the cursors past the demo's, so that only a new version of them
# brings them again.
echo '{"resourceType":"Patient","id":"other-1","gender":"male"}' >"$TMP/other-p.json"
echo '{"resourceType":"Condition","id":"other-dx","subject":{"reference":"Patient/other-1"},"code":{"text":"other"}}' >"$TMP/other-c.json"
for r in Patient/other-1:other-p Condition/other-dx:other-c; do
  code=$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/fhir+json' \
    --data-binary @"$TMP/${r#*:}.json" "$EHR/${r%:*}")
  case "$code" in 200 | 201) ;; *) fail "PUT ${r%:*} at the EHR: $code $(head -c 300 "$TMP/put.out")" ;; esac
done
other_cached() { [ "$(q "SELECT count(*) FROM resources WHERE patient_id='other-1'")" = 2 ]; }
wait_for "the other patient cached" 60 other_cached
polls=$(grep -c 'event="poll.done"' "$TMP/dmg.log")
two_more() { [ "$(grep -c 'event="poll.done"' "$TMP/dmg.log")" -ge $((polls + 2)) ]; }
wait_for "two more polls" 60 two_more
wait_for "nothing left to screen" 60 screened
stop_daemon "$DPID"
CACHED=$(q "SELECT count(*) FROM resources WHERE patient_id='$PAT'")
[ "$CACHED" = 10 ] || fail "$CACHED records of $PAT cached, the fixture has 10"
BEFORE=$(vstate)
case "$BEFORE" in *'"partial"'* | *"Only the first"*) fail "a whole chart's verdict says partial: $BEFORE" ;; esac
ok "eligible from all $CACHED records; the verdict does not say partial"

# ---- 2. one row damaged: the screening fails with its cause, the verdict is kept -------------
q "UPDATE resources SET json = X'FB01FF7F00' WHERE $ROW" || fail "damaging the row"
"$CG" patients rescreen "$PAT" --db "$DB" --actor test-operator --reason "damaged row" >"$TMP/rescreen.out" 2>&1 ||
  fail "patients rescreen: $(cat "$TMP/rescreen.out")"
[ "$(q 'SELECT count(*) FROM daemon_dirty')" = 1 ] || fail "the patient is not marked for screening"
start_daemon dmg2 "$TMP/dmg.conf"
failed_logged() { grep -q 'event="screen.failed"' "$TMP/dmg2.log"; }
wait_for "the screening's failure" 60 failed_logged
line=$(grep 'event="screen.failed"' "$TMP/dmg2.log" | head -n1)
case "$line" in
  *"patient=\"$PAT\""*"cached Condition/demo-dx-1 does not decode"*) ;;
  *) fail "screen.failed does not name the patient and the row: $line" ;;
esac
for phi in Riley DEMO-000001 1961-04-12 "Des Moines"; do
  grep -q "$phi" "$TMP/dmg2.log" && fail "the log holds PHI ($phi)"
done
ok "event=screen.failed names the pseudonymous patient id and the damaged row, no PHI"
# counter NAME: its value in /metrics
counter() { api /metrics && grep "^$1 " "$TMP/resp" | awk '{print $2}'; }
[ "$(counter cartgate_screen_errors_total)" = 1 ] || fail "cartgate_screen_errors_total: $(counter cartgate_screen_errors_total)"
ok "cartgate_screen_errors_total counts it"
cleared() { [ "$(q 'SELECT count(*) FROM daemon_dirty')" = 0 ]; }
wait_for "the patient's mark cleared (no retry loop)" 30 cleared
sleep 2 # two more polls: nothing new from the source, nothing screened again
[ "$(vstate)" = "$BEFORE" ] || fail "the verdict changed: $(vstate | head -c 300)"
ok "the verdict is kept as it was (category, time, JSON)"
[ "$(grep -c 'event="screen.failed"' "$TMP/dmg2.log")" = 1 ] || fail "screened again in a loop"
[ "$(q "SELECT hex(json) FROM resources WHERE $ROW")" = FB01FF7F00 ] || fail "the damaged row was dropped or changed"
[ "$(q "SELECT count(*) FROM resources WHERE patient_id='$PAT'")" = "$CACHED" ] || fail "records dropped"
ok "the damaged row stays cached (nothing dropped), the failure not retried in a loop"
api "/api/v1/patients/$PAT"
[ "$CODE" = 200 ] || fail "GET patient: $CODE $(head -c 300 "$TMP/resp")"
[ "$(jget "$TMP/resp" 'd.verdict.category')" = eligible ] || fail "the API's verdict: $(head -c 300 "$TMP/resp")"
case "$(jget "$TMP/resp" 'd.profile_error')" in
  *"cached Condition/demo-dx-1 does not decode"*) ;;
  *) fail "the API does not say why the profile cannot be built: $(head -c 400 "$TMP/resp")" ;;
esac
[ "$(jget "$TMP/resp" 'd.profile')" = null ] || fail "a profile built from part of the chart"
ok "the API shows the kept verdict and why the profile cannot be built now"
page "$DB"
[ "$CODE" = 500 ] && grep -q "cached Condition/demo-dx-1 does not decode" "$TMP/page.html" ||
  fail "the patient page: $CODE $(grep -o '<main[^>]*>.*' "$TMP/page.html" | head -c 400)"
ok "the patient page refuses with the cause instead of showing a chart without its diagnosis"
# the Patient row damaged too: the worklist (the kept verdict) says so, not "no name recorded"
PHEX=$(q "SELECT hex(json) FROM resources WHERE type='Patient' AND id='$PAT'")
q "UPDATE resources SET json = X'FB01FF7F00' WHERE type='Patient' AND id='$PAT'" || fail "damaging the Patient row"
page "$DB" /ui/
[ "$CODE" = 200 ] || fail "the worklist: $CODE"
grep -q "(patient record unreadable: the cached Patient does not decode)</a>" "$TMP/page.html" ||
  fail "the worklist does not say the Patient record is unreadable: $(grep -o "/ui/patients/$PAT[^<]*<" "$TMP/page.html" | head -c 300)"
grep -q "(no name recorded)" "$TMP/page.html" && fail "the worklist says no name is recorded"
q "UPDATE resources SET json = X'$PHEX' WHERE type='Patient' AND id='$PAT'" || fail "restoring the Patient row"
ok "the worklist shows a damaged Patient row as unreadable, not as a patient without a name"

# ---- 3. the source sends it again: the row replaced, screened from every record --------------
curl -s -o "$TMP/cond.json" "$EHR/Condition/demo-dx-1" || fail "reading the Condition at the EHR"
node -e '
const fs=require("fs"), c=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
c.note=[{text:"reviewed"}]; fs.writeFileSync(process.argv[1], JSON.stringify(c));' "$TMP/cond.json"
code=$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/fhir+json' \
  --data-binary @"$TMP/cond.json" "$EHR/Condition/demo-dx-1")
[ "$code" = 200 ] || fail "PUT Condition at the EHR: $code $(head -c 300 "$TMP/put.out")"
repaired() { [ "$(q "SELECT typeof(json) || hex(substr(json,1,2)) FROM resources WHERE $ROW")" = blobFB01 ] &&
  [ "$(q "SELECT length(json) > 5 FROM resources WHERE $ROW")" = 1 ] &&
  [ "$(q "SELECT updated_ms FROM verdicts WHERE patient_id='$PAT'")" != "$(echo "$BEFORE" | cut -d'|' -f2)" ] &&
  [ "$(q 'SELECT count(*) FROM daemon_dirty')" = 0 ]; }
wait_for "the row replaced and the patient screened again" 60 repaired
"$CG" store resource --db "$DB" Condition/demo-dx-1 >"$TMP/shown.json" 2>"$TMP/shown.err" ||
  fail "the replaced row: $(cat "$TMP/shown.err")"
[ "$(jget "$TMP/shown.json" 'd.note[0].text')" = reviewed ] || fail "not the version sent again"
[ "$(q "SELECT category FROM verdicts WHERE patient_id='$PAT'")" = eligible ] || fail "the verdict after the repair: $(vstate | head -c 300)"
[ "$(grep -c 'event="screen.failed"' "$TMP/dmg2.log")" = 1 ] || fail "failed again after the repair"
ok "the source's new version replaced the damaged row; screened again from every record: eligible"
stop_daemon "$DPID"

# ---- 4. past the per-patient cap: a verdict marked partial -----------------------------------
# capped NAME HOOK VALUE WHAT: a daemon NAME (store $TMP/NAME.db, log $TMP/NAME.log) started with
# the test hook HOOK=VALUE, waited for until the patient's verdict is stored and screen.partial
# logged; the hook's own log line checked.
capped() {
  local name=$1 hook=$2 value=$3 what=$4
  source_conf "$name" "{\"name\": \"ehr\", \"kind\": \"search\", \"base_url\": \"$EHR\", \"interval_s\": 1, \"page_size\": 50}"
  export "$hook=$value"
  start_daemon "$name" "$TMP/$name.conf"
  unset "$hook"
  partial_logged() { grep -q 'event="screen.partial"' "$TMP/$name.log" &&
    [ "$(sqlite3 "$TMP/$name.db" "SELECT count(*) FROM verdicts WHERE patient_id='$PAT'")" = 1 ]; }
  wait_for "$what" 120 partial_logged
  grep -q "event=\"daemon.test_hook\" name=\"$hook\" value=\"$value\"" "$TMP/$name.log" ||
    fail "the test hook $hook is not logged"
}
CDB="$TMP/cap.db"
capped cap CARTGATE_TEST_SCREEN_MAX_RESOURCES 4 "the capped screening"
line=$(grep 'event="screen.partial"' "$TMP/cap.log" | head -n1)
case "$line" in
  *"patient=\"$PAT\" read=\"4\" cached=\"10\""*) ;;
  *) fail "screen.partial without the counts: $line" ;;
esac
ok "event=screen.partial with the counts (read 4 of 10)"
sqlite3 "$CDB" "SELECT verdict_json FROM verdicts WHERE patient_id='$PAT'" >"$TMP/cap.verdict.json"
[ "$(jget "$TMP/cap.verdict.json" 'JSON.stringify(d.partial)')" = '{"read":4,"cached":10}' ] ||
  fail "the verdict is not marked partial: $(head -c 400 "$TMP/cap.verdict.json")"
[ "$(jget "$TMP/cap.verdict.json" 'd.explanation[0]')" = \
  "Only the first 4 of 10 records in this chart were read; the verdict may miss facts." ] ||
  fail "the explanation does not say so first: $(jget "$TMP/cap.verdict.json" 'd.explanation[0]')"
ok "the verdict says in plain words that only 4 of the 10 records were read"
[ "$(counter cartgate_screen_partial_total)" = 1 ] || fail "cartgate_screen_partial_total: $(counter cartgate_screen_partial_total)"
ok "cartgate_screen_partial_total 1"
page "$CDB"
[ "$CODE" = 200 ] || fail "the patient page: $CODE"
grep -q '<p class="partial" role="alert"><strong>Only the first 4 of 10 records in this chart were read; the verdict may miss facts.</strong></p>' "$TMP/page.html" ||
  fail "the patient page does not say that part of the chart was read"
ok "the patient page heads the verdict with the same sentence"
RID=$(sqlite3 "$CDB" "SELECT id FROM referrals WHERE patient_id='$PAT'")
[ -n "$RID" ] || fail "no proposal for the partial verdict"
api "/api/v1/referrals/$RID"
[ "$CODE" = 200 ] || fail "GET referral: $CODE"
jget "$TMP/resp" 'd.explanation' | grep -q "Only the first 4 of 10 records in this chart were read" ||
  fail "the proposal's summary does not say so: $(jget "$TMP/resp" 'd.explanation' | head -c 300)"
"$CG" referrals packet "$RID" --db "$CDB" -c "$TMP/cap.conf" >"$TMP/packet.txt" 2>"$TMP/packet.err" ||
  fail "referrals packet: $(cat "$TMP/packet.err")"
grep -q "Only the first 4 of 10 records in this chart were read" "$TMP/packet.txt" ||
  fail "the referral packet does not say so: $(head -c 600 "$TMP/packet.txt")"
ok "the proposal's summary and the referral packet the center reads say so too"
stop_daemon "$DPID"

# ---- 5. past the memory left for one chart: a verdict marked partial too ---------------------
# The arena's cap (DAEMON_SCREEN_ARENA_MAX, 512 MiB) lowered by the test hook: the records that
# fit are read, the verdict says how many of the 10.
MDB="$TMP/mem.db"
capped mem CARTGATE_TEST_SCREEN_ARENA_MAX 8192 "the screening past the memory cap"
line=$(grep 'event="screen.partial"' "$TMP/mem.log" | head -n1)
READ=$(printf '%s\n' "$line" | sed -n 's/.* read="\([0-9]*\)" cached="10".*/\1/p')
[ -n "$READ" ] && [ "$READ" -lt 10 ] || fail "screen.partial past the memory cap without the counts: $line"
ok "event=screen.partial past the memory cap: read $READ of 10"
sqlite3 "$MDB" "SELECT verdict_json FROM verdicts WHERE patient_id='$PAT'" >"$TMP/mem.verdict.json"
[ "$(jget "$TMP/mem.verdict.json" 'JSON.stringify(d.partial)')" = "{\"read\":$READ,\"cached\":10}" ] ||
  fail "the verdict is not marked partial: $(head -c 400 "$TMP/mem.verdict.json")"
[ "$(jget "$TMP/mem.verdict.json" 'd.explanation[0]')" = \
  "Only the first $READ of 10 records in this chart were read; the verdict may miss facts." ] ||
  fail "the explanation does not say so first: $(jget "$TMP/mem.verdict.json" 'd.explanation[0]')"
ok "the verdict says in plain words that only $READ of the 10 records were read"
if grep -q 'event="screen.failed"' "$TMP/mem.log"; then fail "a screening failed past the memory cap: $(grep 'event="screen.failed"' "$TMP/mem.log" | head -n1)"; fi
ok "nothing failed: the records past the cap were left out, said, and counted"
stop_daemon "$DPID"
echo "test_daemon_cache_damage: $CHECKS checks passed"
