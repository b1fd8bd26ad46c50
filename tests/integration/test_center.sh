#!/usr/bin/env bash
# cartgate at a CAR T center (role center, gateway/intake) with a referring site's cartgate,
# both on loopback, and the reference EHR (a synth cohort):
#   - refusals at the center: token requests from an unknown client, with a bad assertion
#     (signed by another key), the wrong audience and a replayed jti -> 401 invalid_client
#     saying which; FHIR requests without a token -> 401 OperationOutcome; a Bundle without
#     ServiceRequest, one with a reference that does not resolve -> 422 OperationOutcome
#     saying what is wrong; nothing stored by any of them;
#   - the site approves its proposals (API, a clinician's act) -> every referral reaches the
#     center once (SMART Backend Services token, transaction with ifNoneExist), each one
#     inbox row; the same Bundle posted again answers with the same ids and stores nothing;
#   - the intake team works the inbox in real headless Chromium (tests/browser/intake_test.mjs,
#     axe-core, screenshots in build/artifacts/browser-intake): accepts one referral, then
#     schedules its consult; declines another with a coded reason; asks for more information
#     on a third -> the site's referrals move to scheduled / declined, the on-hold Task is in
#     the site's history, and the EHR gets the write-back (Communication per state);
#   - a referral unanswered for longer than intake.waiting_business_days is highlighted in the
#     inbox and noticed once;
#   - a notice to the intake team per new referral (webhook), with its number, urgency and
#     link and no PHI of the cohort;
#   - a Bundle over the listener's 1 MiB (a report with its document) is stored; one over
#     intake.max_body_mib is refused 413 with an OperationOutcome, nothing stored;
#   - /metrics: the intake counters (received, repeated, refused by reason) and the inbox by
#     Task status, waiting and the oldest wait, HELP/TYPE (promtool), no PHI;
#   - credentials before the body: POST /fhir heads declaring 30 MiB without a site token get
#     their 401 at once, the body never read; over 32 MiB with the token 413 unread.
set -u
. "$(dirname "$0")/daemon_lib.sh"
. "$(dirname "$0")/center_lib.sh"
daemon_need_tools
NOTIFY_DIR="$SRC/tests/notify"
N=${CARTGATE_CENTER_PATIENTS:-40}
cohort "$TMP" 7 "$N"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
center_keys
CPORT=$(free_port)
CBASE="http://127.0.0.1:$CPORT"
centers_smart "$CPORT" "$TMP/centers.json"

# the intake team's webhook
mkdir -p "$TMP/hooks"
node "$NOTIFY_DIR/webhook.mjs" "$TMP/hooks" 0 >"$TMP/webhook.out" 2>"$TMP/webhook.err" &
PIDS+=("$!")
WPORT=""
for _ in $(seq 1 300); do
  WPORT=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$TMP/webhook.out" 2>/dev/null)
  [ -n "$WPORT" ] && break
  sleep 0.1
done
[ -n "$WPORT" ] || fail "webhook receiver did not start"

CDB="$TMP/center.db"
center_conf "$TMP/center.conf" "$CDB" "$CPORT" \
  "\"notify\": {\"public_url\": \"https://intake.center.example\", \"retry_s\": 1, \"digest_hour\": 0, \"webhook\": {\"url\": \"http://127.0.0.1:$WPORT/hook\"}}"
"$CG" check-config -c "$TMP/center.conf" >/dev/null 2>"$TMP/cc.err" || fail "check-config (center): $(cat "$TMP/cc.err")"
start_center center "$TMP/center.conf" "$CPORT"
CP=$CPID
q() { sqlite3 -cmd ".timeout 5000" "$CDB" "$1"; }
stored() { q "SELECT (SELECT count(*) FROM intake_resources) || ':' || (SELECT count(*) FROM intake_referrals)"; }

# ---- refusals ---------------------------------------------------------------------------------
token "$TMP/site.pem" site-b
[ "$CODE" = 401 ] && [ "$(jget "$TMP/tok.json" d.error)" = invalid_client ] &&
  jget "$TMP/tok.json" d.error_description | grep -q 'unknown client site-b' || fail "unknown client: $CODE $(cat "$TMP/tok.json")"
token "$TMP/other.pem"
[ "$CODE" = 401 ] && jget "$TMP/tok.json" d.error_description | grep -q 'bad client assertion' ||
  fail "assertion signed by another key: $CODE $(cat "$TMP/tok.json")"
token "$TMP/site.pem" site-a "http://127.0.0.1:$CPORT/other/token"
[ "$CODE" = 401 ] && jget "$TMP/tok.json" d.error_description | grep -q 'wrong audience' ||
  fail "wrong audience: $CODE $(cat "$TMP/tok.json")"
token "$TMP/site.pem" site-a "$CBASE/fhir/auth/token" "jti-once-$$"
[ "$CODE" = 200 ] || fail "a good assertion: $CODE $(cat "$TMP/tok.json")"
CTOK=$(jget "$TMP/tok.json" d.access_token)
token "$TMP/site.pem" site-a "$CBASE/fhir/auth/token" "jti-once-$$"
[ "$CODE" = 401 ] && jget "$TMP/tok.json" d.error_description | grep -q 'replay' || fail "replayed jti: $CODE $(cat "$TMP/tok.json")"
ok "token endpoint: unknown client, another key, wrong audience and a replayed jti refused (401 invalid_client, saying which); a good assertion gets a token"

SAVE=$CTOK
CTOK=not-a-token
fhir POST "" --data-binary '{"resourceType":"Bundle","type":"transaction","entry":[]}'
[ "$CODE" = 401 ] && [ "$(jget "$TMP/f.json" d.resourceType)" = OperationOutcome ] || fail "no token: $CODE $(cat "$TMP/f.json")"
CTOK=$SAVE
node -e '
const b={resourceType:"Bundle",type:"transaction",entry:[
 {fullUrl:"urn:uuid:p1",resource:{resourceType:"Patient",identifier:[{system:"urn:t",value:"p1"}]},request:{method:"POST",url:"Patient"}},
 {fullUrl:"urn:uuid:t1",resource:{resourceType:"Task",status:"requested",intent:"order",for:{reference:"urn:uuid:p1"}},request:{method:"POST",url:"Task"}}]};
require("fs").writeFileSync(process.argv[1]+"/nosr.json", JSON.stringify(b));
b.entry.push({fullUrl:"urn:uuid:s1",resource:{resourceType:"ServiceRequest",status:"active",intent:"order",
  subject:{reference:"urn:uuid:p1"},requester:{reference:"Practitioner/9"}},request:{method:"POST",url:"ServiceRequest"}});
b.entry[1].resource.focus={reference:"urn:uuid:s1"};
require("fs").writeFileSync(process.argv[1]+"/badref.json", JSON.stringify(b));' "$TMP"
fhir POST "" --data-binary "@$TMP/nosr.json"
[ "$CODE" = 422 ] && [ "$(jget "$TMP/f.json" 'd.issue[0].diagnostics')" = "the Bundle has no ServiceRequest: a referral needs a ServiceRequest and a Task" ] ||
  fail "Bundle without ServiceRequest: $CODE $(cat "$TMP/f.json")"
fhir POST "" --data-binary "@$TMP/badref.json"
[ "$CODE" = 422 ] && jget "$TMP/f.json" 'd.issue[0].diagnostics' | grep -q 'reference "Practitioner/9" at ServiceRequest.requester.reference does not resolve within the Bundle' ||
  fail "unresolvable reference: $CODE $(cat "$TMP/f.json")"
[ "$(stored)" = "0:0" ] || fail "refused requests stored something: $(stored)"
ok "no token -> 401 OperationOutcome; no ServiceRequest, an unresolvable reference -> 422 OperationOutcome saying what is wrong; nothing stored"

# ---- the site ---------------------------------------------------------------------------------
SDB="$TMP/site.db"
cat >"$TMP/site.conf" <<EOF2
{
  "site": {"id": "t-site", "name": "Prairie Community Hospital", "location": {"lat": 41.59, "lon": -93.62},
           "referrer": {"name": "Dr. A. Rivera, hematology-oncology", "phone": "555-0100"}},
  "store": {"path": "$SDB"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"mode": "approval", "send_interval_s": 1, "task_poll_s": 1,
               "writeback": "communication", "writeback_source": "ehr"},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 3600, "page_size": 500}]
}
EOF2
"$CG" check-config -c "$TMP/site.conf" >/dev/null 2>"$TMP/cc.err" || fail "check-config (site): $(cat "$TMP/cc.err")"
start_daemon site "$TMP/site.conf"
SP=$DPID
wait_for "$N patients screened at the site" 180 all_screened "$SDB"
n_ref=$(sqlite3 "$SDB" "SELECT count(*) FROM referrals WHERE state='pending_approval'")
[ "$n_ref" -ge 3 ] || fail "only $n_ref proposals: the cohort is too small for this test"
for id in $(sqlite3 "$SDB" "SELECT id FROM referrals WHERE state='pending_approval' ORDER BY id"); do
  api "/api/v1/referrals/$id/approve" -X POST -H 'Content-Type: application/json' -d '{"reason":"approved in the center test"}'
  [ "$CODE" = 200 ] || fail "approve $id: $CODE $(cat "$TMP/resp")"
done
all_sent() { [ "$(sqlite3 "$SDB" "SELECT count(*) FROM referrals WHERE state='sent'")" = "$n_ref" ]; }
wait_for "$n_ref referrals sent to the center" 120 all_sent
[ "$(q "SELECT count(*) FROM intake_referrals")" = "$n_ref" ] || fail "center inbox: $(q "SELECT count(*) FROM intake_referrals") for $n_ref"
[ "$(q "SELECT count(*) FROM (SELECT value FROM intake_identifiers WHERE type='ServiceRequest' GROUP BY system, value HAVING count(DISTINCT resource_id) > 1)")" = 0 ] ||
  fail "a ServiceRequest identifier stored twice"
# every site referral's placer identifier is at the center exactly once, its Task reference the center's
sqlite3 "$SDB" "SELECT placer_id || '|' || center_task_ref FROM referrals ORDER BY 1" >"$TMP/site-refs.txt"
while IFS='|' read -r placer tref; do
  n=$(q "SELECT count(*) FROM intake_identifiers WHERE type='ServiceRequest' AND value='$placer'")
  [ "$n" = 1 ] || fail "referral $placer: $n ServiceRequests at the center"
  tid=${tref#Task/}
  [ "$(q "SELECT count(*) FROM intake_referrals WHERE task_id=$tid AND client_id='site-a'")" = 1 ] || fail "referral $placer: Task $tref not in the inbox"
done <"$TMP/site-refs.txt"
grep -q 'event="intake.token" client="site-a"' "$TMP/center.log" || fail "the site got no token"
ok "$n_ref approved referrals delivered with SMART Backend Services: each in the center's inbox exactly once, the site holding the center's Task"

# the same Bundle again: the same ids, nothing stored
id1=$(sqlite3 "$SDB" "SELECT id FROM referrals ORDER BY id LIMIT 1")
api "/api/v1/referrals/$id1/payload"
cp "$TMP/resp" "$TMP/payload.json"
before=$(stored)
fhir POST "" --data-binary "@$TMP/payload.json"
[ "$CODE" = 200 ] || fail "repeat POST: $CODE $(cat "$TMP/f.json")"
[ "$(jget "$TMP/f.json" 'd.entry.every(e=>e.response.status==="200 OK")')" = true ] || fail "repeat POST created: $(cat "$TMP/f.json")"
want_task=$(sqlite3 "$SDB" "SELECT center_task_ref FROM referrals WHERE id=$id1")
jget "$TMP/f.json" 'd.entry.map(e=>e.response.location).join(" ")' | grep -q "$want_task/_history/" || fail "repeat POST: not the same Task ($want_task)"
[ "$(stored)" = "$before" ] || fail "repeat POST stored something: $before -> $(stored)"
fhir GET "/ServiceRequest?identifier=$(sqlite3 "$SDB" "SELECT placer_id FROM referrals WHERE id=$id1" | sed 's/|/%7C/')"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/f.json" 'd.total')" = 1 ] || fail "search by identifier: $CODE $(cat "$TMP/f.json")"
fhir GET "/Task?_lastUpdated=ge2020-01-01"
[ "$(jget "$TMP/f.json" 'd.total')" = "$n_ref" ] || fail "search by _lastUpdated: $(jget "$TMP/f.json" d.total)"
fhir GET "/Task?_count=x"
[ "$CODE" = 400 ] && grep -q "_count must be a number" "$TMP/f.json" || fail "search with _count=x: $CODE $(cat "$TMP/f.json")"
fhir GET "/$want_task/_history"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/f.json" 'd.type+" "+d.total+" "+d.entry[0].resource.meta.versionId')" = "history 1 1" ] ||
  fail "the Task's history: $CODE $(head -c 400 "$TMP/f.json")"
fhir GET "/$want_task/_history?_count=0"
[ "$CODE" = 400 ] && grep -q "_count must be a number of 1 or more" "$TMP/f.json" || fail "history with _count=0: $CODE $(cat "$TMP/f.json")"
fhir GET "/Task/999999/_history"
[ "$CODE" = 404 ] || fail "the history of a Task that is not there: $CODE"
ok "the same Bundle posted again: 200 with the same ids, nothing stored; search by identifier and _lastUpdated; a Task's history, _count checked"


# ---- the intake team, in the browser ---------------------------------------------------------
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || fail "chromium not installed (scripts/bootstrap installs it)"
[ -d "$SRC/tests/browser/node_modules/puppeteer-core" ] || fail "tests/browser packages missing (scripts/bootstrap runs npm ci)"
PW_KIM='kim: intake nurse at the center'
echo "$PW_KIM" | "$CG" users add nurse.kim --role intake --password-stdin --db "$CDB" >/dev/null 2>&1 || fail "add nurse.kim"
ART="${CARTGATE_BUILD_DIR:-$SRC/build}/artifacts/browser-intake"
rm -rf "$ART"
# the PDF renderer (pango, cairo) is loaded when the first PDF is drawn: neither daemon, which
# composed, sent and received the packets, maps it yet; the browser downloads a packet's PDF
for p in "$CP" "$SP"; do
  [ -z "$(pdf_libs /proc/$p/maps)" ] || fail "daemon $p maps the PDF renderer before drawing a PDF: $(pdf_libs /proc/$p/maps)"
done
# The site is paused while the intake team answers: it reads each Task again only afterwards,
# two versions on for the referral accepted and then scheduled, and finds both steps in the
# Task's history (GET Task/{id}/_history), not only the last one.
unread() { sqlite3 "$SDB" "SELECT count(*) FROM referrals r WHERE center_task_ref IS NOT NULL AND NOT EXISTS (SELECT 1 FROM task_seen t WHERE t.referral_id = r.id)"; }
all_read() { [ "$(unread)" = 0 ]; }
wait_for "the site reads each Task it sent once" 30 all_read
kill -STOP "$SP"
CENTER_UI="$CBASE" ARTIFACTS="$ART" DB="$CDB" CHROMIUM="$CHROMIUM" PW_KIM="$PW_KIM" \
  node "$SRC/tests/browser/intake_test.mjs" >"$TMP/browser.out" 2>&1
rc=$?
kill -CONT "$SP"
cat "$TMP/browser.out"
[ $rc = 0 ] || fail "intake browser checks failed (above); screenshots in $ART"
for lib in libpangocairo-1.0 libpango-1.0 libcairo libfontconfig; do
  grep -q "/$lib\.so" "/proc/$CP/maps" || fail "the center drew the packet's PDF without $lib mapped"
done
ok "intake in Chromium: $(ls "$ART"/*.png | wc -l) pages checked with axe-core, screenshots in $ART; the center mapped pango/cairo only once it drew the packet PDF"

# ---- the answer reaches the site and its EHR -------------------------------------------------
read -r A B C <<<"$(q "SELECT group_concat(id, ' ') FROM (SELECT id FROM intake_referrals ORDER BY urank, received_ms, id LIMIT 3)")"
site_of_intake() { sqlite3 "$SDB" "SELECT id FROM referrals WHERE center_task_ref='Task/$(q "SELECT task_id FROM intake_referrals WHERE id=$1")'"; }
SA=$(site_of_intake "$A"); SB=$(site_of_intake "$B"); SC=$(site_of_intake "$C")
[ -n "$SA" ] && [ -n "$SB" ] && [ -n "$SC" ] || fail "the site's referrals of the center's $A $B $C"
state_of() { sqlite3 "$SDB" "SELECT state FROM referrals WHERE id=$1"; }
followed() { [ "$(state_of "$SA")" = scheduled ] && [ "$(state_of "$SB")" = declined ] &&
  [ "$(sqlite3 "$SDB" "SELECT task_status FROM referrals WHERE id=$SC")" = on-hold ]; }
wait_for "the site follows the center's answers" 60 followed
sqlite3 "$SDB" "SELECT to_state FROM audit WHERE referral_id=$SA AND action='task-update' ORDER BY id" | tr '\n' ' ' | grep -q 'accepted scheduled' ||
  fail "the site's history of $SA: $(sqlite3 "$SDB" "SELECT action, to_state, detail FROM audit WHERE referral_id=$SA")"
# the acceptance came from the Task's history (the site was paused through both steps): its
# audit row names the time the center accepted; the version read last is remembered
sqlite3 "$SDB" "SELECT detail FROM audit WHERE referral_id=$SA AND action='task-update' AND to_state='accepted'" |
  grep -Eq '^Task.status=accepted businessStatus=3.0 \(at the center [0-9]{4}-[0-9]{2}-[0-9]{2}T' ||
  fail "the acceptance of $SA was not read from the Task's history: $(sqlite3 "$SDB" "SELECT action, to_state, detail FROM audit WHERE referral_id=$SA")"
api "/ui/referrals/$SA"
[ "$CODE" = 200 ] && grep -Eq "task is accepted \(BSeR 3\.0\), at the center on [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} UTC" "$TMP/resp" ||
  fail "the site's referral page does not say when the center accepted: $CODE $(grep -o 'task is [^<]*' "$TMP/resp" | head -5)"
[ "$(sqlite3 "$SDB" "SELECT version FROM task_seen WHERE referral_id=$SA")" = 3 ] ||
  fail "the site's last-read version of $SA's Task: '$(sqlite3 "$SDB" "SELECT version FROM task_seen WHERE referral_id=$SA")', not 3"
sqlite3 "$SDB" "SELECT detail FROM audit WHERE referral_id=$SC AND action='task-observed'" | grep -q 'Task.status=on-hold' ||
  fail "the request for information is not in the site's history of $SC"
ok "the site followed: referral $SA accepted then scheduled (both read from the Task's history after a pause), $SB declined, $SC on hold (more information requested) in its history"
count_of() { curl -s "$1?_summary=count" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(String(JSON.parse(s).total)))'; }
comm_for() { # PLACER STATE: Communications in the EHR for that referral and state
  curl -s "$EHR/Communication?identifier=urn:cartgate:writeback%7C$1-$2" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(String(JSON.parse(s).total??(JSON.parse(s).entry||[]).length)))'
}
PA=$(sqlite3 "$SDB" "SELECT placer_id FROM referrals WHERE id=$SA"); PB=$(sqlite3 "$SDB" "SELECT placer_id FROM referrals WHERE id=$SB")
written() { [ "$(comm_for "$PA" accepted)" = 1 ] && [ "$(comm_for "$PA" scheduled)" = 1 ] && [ "$(comm_for "$PB" declined)" = 1 ]; }
wait_for "the write-back of accepted, scheduled and declined to the EHR" 60 written
ok "the EHR holds one Communication each for $PA accepted and scheduled and $PB declined"

# ---- a referral waiting too long: highlighted in the inbox, noticed once ---------------------
D=$(q "SELECT id FROM intake_referrals WHERE task_status='received' ORDER BY id LIMIT 1")
[ -n "$D" ] || fail "no unanswered referral left"
# received ten days ago (more than intake.waiting_business_days = 2 business days)
q "UPDATE intake_referrals SET received_ms = received_ms - 10 * 86400000 WHERE id = $D"
waited() { grep -l "referral no\. $D (.*) waiting" "$TMP/hooks"/hook-*.json >/dev/null 2>&1; }
wait_for "a notice of referral $D waiting too long" 60 waited
jar="$TMP/kim.cookies"
curl -s -o /dev/null -c "$jar" -b "$jar" -H "Origin: $CBASE" --data-urlencode username=nurse.kim \
  --data-urlencode "password=$PW_KIM" "$CBASE/auth/login"
curl -s -b "$jar" "$CBASE/ui/intake" >"$TMP/inbox.html"
grep -q "<tr class=\"late\"><td class=\"num\"><a href=\"/ui/intake/$D\">" "$TMP/inbox.html" || fail "referral $D not highlighted in the inbox"
[ "$(grep -c '<tr class="late">' "$TMP/inbox.html")" = 1 ] || fail "other referrals highlighted: $(grep -c '<tr class="late">' "$TMP/inbox.html")"
ok "referral $D, unanswered for 10 days: highlighted in the inbox and noticed as waiting too long"

# ---- notices to the intake team ---------------------------------------------------------------
noticed() { [ "$(ls "$TMP/hooks"/hook-*.json 2>/dev/null | wc -l)" -ge $((n_ref + 1)) ]; }
wait_for "a notice per new referral and one of the waiting referral" 60 noticed
[ "$(q "SELECT count(*) FROM notify_notices WHERE kind='intake_waiting'")" = 1 ] || fail "waiting notices: $(q "SELECT count(*) FROM notify_notices WHERE kind='intake_waiting'")"
for i in $(q "SELECT id FROM intake_referrals"); do
  grep -l "referral no. $i (" "$TMP/hooks"/hook-*.json >/dev/null || fail "no notice of referral $i"
done
[ "$(q "SELECT count(*) FROM notify_notices WHERE kind='intake_new_referral'")" = "$n_ref" ] || fail "notices: $(q "SELECT kind, count(*) FROM notify_notices GROUP BY kind")"
for f in "$TMP/hooks"/hook-*.json; do
  # the daily digest (from notify.digest_hour on, 07:00 by default) may come too: it carries counts only
  jget "$f" 'd.event==="digest" || /^https:\/\/intake\.center\.example\/ui\/intake\/[0-9]+$/.test(d.link) && /CAR T referral no\. [0-9]+ \((routine|urgent|asap|stat)\)/.test(d.text)' | grep -qx true ||
    fail "notice body $(cat "$f")"
done
phi_terms "$TMP/cohort/Patient.000.ndjson" "$TMP/phi.txt" all
cat "$TMP/hooks"/hook-*.json >"$TMP/all-notices.txt"
if grep -F -w -f "$TMP/phi.txt" "$TMP/all-notices.txt" >"$TMP/phi-hits.txt"; then
  head -5 "$TMP/phi-hits.txt"
  fail "PHI in the intake notices"
fi
if grep -F -w -f "$TMP/phi.txt" "$TMP/center.log" >"$TMP/phi-log.txt"; then
  head -5 "$TMP/phi-log.txt"
  fail "PHI in the center's log"
fi
ok "one notice per new referral (number, urgency, link to the inbox); no name, MRN, birth date, address or patient id of the cohort in any notice or in the center's log"
# the center's daily digest (digest_hour 0: at its first scan) is the intake inbox's: counts by
# Task status, linked to the inbox; nothing of a site's digest (verdicts, site referrals)
dg=$(grep -l '"event":"digest"' "$TMP/hooks"/hook-*.json)
[ "$(echo "$dg" | grep -c .)" = 1 ] || fail "center digests: $(echo "$dg" | grep -c .)"
jget "$dg" 'd.link==="https://intake.center.example/ui/intake" && /^daily digest [0-9-]+: the intake inbox by status$/.test(d.text) &&
  JSON.stringify(Object.keys(d.counts))===JSON.stringify(["received","accepted","on_hold","in_progress","rejected","cancelled","completed","other"]) &&
  Object.values(d.counts).every(v => Number.isInteger(v))' | grep -qx true || fail "center digest: $(cat "$dg")"
ok "the center's daily digest: the intake inbox by status (counts only), linked to /ui/intake"

# ---- a Bundle over the listener's 1 MiB: its own cap (intake.max_body_mib, 32) -------------
# a referral carrying a pathology report with its document (2.5 MiB of base64) is stored; one
# over 32 MiB is refused with an OperationOutcome (413) and nothing stored; every other route
# keeps the listener's 1 MiB
node -e '
const fs=require("fs");
const doc=Buffer.alloc(2.5*1024*1024/4*3,7).toString("base64");
const mk=(id,pad)=>({resourceType:"Bundle",type:"transaction",entry:[
 {fullUrl:"urn:uuid:p",resource:{resourceType:"Patient",identifier:[{system:"urn:t",value:id}]},request:{method:"POST",url:"Patient"}},
 {fullUrl:"urn:uuid:r",resource:{resourceType:"DiagnosticReport",status:"final",code:{text:"Bone marrow biopsy"},subject:{reference:"urn:uuid:p"},
   presentedForm:[{contentType:"application/pdf",data:pad}]},request:{method:"POST",url:"DiagnosticReport"}},
 {fullUrl:"urn:uuid:s",resource:{resourceType:"ServiceRequest",identifier:[{system:"urn:t:sr",value:id}],status:"active",intent:"order",
   subject:{reference:"urn:uuid:p"},supportingInfo:[{reference:"urn:uuid:r"}]},request:{method:"POST",url:"ServiceRequest",ifNoneExist:"identifier=urn:t:sr|"+id}},
 {fullUrl:"urn:uuid:t",resource:{resourceType:"Task",status:"requested",intent:"order",focus:{reference:"urn:uuid:s"},for:{reference:"urn:uuid:p"}},request:{method:"POST",url:"Task"}}]});
fs.writeFileSync(process.argv[1]+"/big.json", JSON.stringify(mk("big-1",doc)));
fs.writeFileSync(process.argv[1]+"/huge.json", JSON.stringify(mk("huge-1",doc.repeat(13))));' "$TMP"
big=$(stat -c %s "$TMP/big.json") huge=$(stat -c %s "$TMP/huge.json")
[ "$big" -gt $((2 << 20)) ] && [ "$huge" -gt $((32 << 20)) ] && [ "$huge" -lt $((33 << 20)) ] || fail "test Bundles of $big and $huge bytes"
before=$(stored)
fhir POST "" --data-binary "@$TMP/big.json"
[ "$CODE" = 200 ] || fail "a $big-byte Bundle: $CODE $(head -c 300 "$TMP/f.json")"
[ "$(q "SELECT count(*) FROM intake_referrals r JOIN intake_identifiers i ON i.resource_id = r.sr_id WHERE i.value = 'big-1'")" = 1 ] || fail "the big referral is not in the inbox"
[ "$(q "SELECT max(length(json)) FROM intake_resources WHERE type = 'DiagnosticReport'")" -gt $((2 << 20)) ] || fail "the report's document was not stored whole"
after_big=$(stored)
fhir POST "" --data-binary "@$TMP/huge.json"
[ "$CODE" = 413 ] && [ "$(jget "$TMP/f.json" d.resourceType)" = OperationOutcome ] &&
  jget "$TMP/f.json" 'd.issue[0].diagnostics' | grep -q 'larger than this center accepts (32 MiB, intake.max_body_mib)' ||
  fail "a $huge-byte Bundle: $CODE $(head -c 300 "$TMP/f.json")"
[ "$(stored)" = "$after_big" ] || fail "the refused Bundle stored something: $after_big -> $(stored)"
head -c $((2 << 20)) /dev/zero | tr '\0' a >"$TMP/2mib.txt"
CODE=$(curl -s -o "$TMP/f.json" -w '%{http_code}' -X POST --data-binary "@$TMP/2mib.txt" "$CBASE/fhir/auth/token")
[ "$CODE" = 413 ] || fail "2 MiB to the token endpoint: $CODE (the listener's 1 MiB should hold there)"
ok "a $big-byte referral Bundle (a report with its document) stored ($before -> $after_big resources:referrals); a $huge-byte one refused 413 with an OperationOutcome, nothing stored; other routes keep 1 MiB"

# ---- the center's /metrics: intake counters and inbox gauges, no PHI -------------------------
CODE=$(curl -s -o "$TMP/metrics.txt" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$CBASE/metrics")
[ "$CODE" = 200 ] || fail "center /metrics: $CODE"
mv() { sed -n "s/^$1 \([0-9.e+]*\)\$/\1/p" "$TMP/metrics.txt"; }
for f in cartgate_intake_received_total cartgate_intake_repeated_total cartgate_intake_refused_total \
  cartgate_intake_unauthorized_total cartgate_intake_tokens_total cartgate_intake_referrals cartgate_intake_waiting \
  cartgate_intake_waiting_oldest_age_seconds; do
  grep -q "^# HELP $f " "$TMP/metrics.txt" && grep -q "^# TYPE $f " "$TMP/metrics.txt" || fail "no HELP/TYPE for $f"
done
total=$(q "SELECT count(*) FROM intake_referrals")
[ "$(mv cartgate_intake_received_total)" = "$total" ] || fail "received_total $(mv cartgate_intake_received_total), the inbox holds $total"
[ "$(mv cartgate_intake_repeated_total)" -ge 1 ] || fail "the Bundle posted again not counted"
[ "$(mv 'cartgate_intake_refused_total{reason="invalid"}')" = 2 ] || fail "refused invalid: $(grep refused_total "$TMP/metrics.txt")"
[ "$(mv 'cartgate_intake_refused_total{reason="too_large"}')" = 1 ] || fail "refused too_large: $(grep refused_total "$TMP/metrics.txt")"
[ "$(mv 'cartgate_intake_refused_total{reason="not_json"}')" = 0 ] || fail "refused not_json: $(grep refused_total "$TMP/metrics.txt")"
[ "$(mv cartgate_intake_unauthorized_total)" -ge 5 ] || fail "unauthorized: $(mv cartgate_intake_unauthorized_total) (4 token refusals and a request without a token)"
for st in received accepted on-hold in-progress rejected cancelled completed; do
  [ "$(mv "cartgate_intake_referrals{status=\"$st\"}")" = "$(q "SELECT count(*) FROM intake_referrals WHERE task_status='$st'")" ] ||
    fail "referrals $st: $(mv "cartgate_intake_referrals{status=\"$st\"}")"
done
[ "$(mv 'cartgate_intake_referrals{status="in-progress"}')" -ge 1 ] && [ "$(mv 'cartgate_intake_referrals{status="rejected"}')" -ge 1 ] &&
  [ "$(mv 'cartgate_intake_referrals{status="on-hold"}')" -ge 1 ] || fail "scheduled/declined/on hold not shown: $(grep '^cartgate_intake_referrals' "$TMP/metrics.txt")"
[ "$(mv cartgate_intake_waiting)" = "$(mv 'cartgate_intake_referrals{status="received"}')" ] || fail "waiting $(mv cartgate_intake_waiting)"
age=$(mv cartgate_intake_waiting_oldest_age_seconds)
awk -v a="$age" 'BEGIN { exit !(a >= 10 * 86400 && a < 11 * 86400) }' || fail "oldest waiting age $age s (referral $D was received 10 days ago)"
PROMTOOL=$SRC/tests/tools/bin/promtool
[ -x "$PROMTOOL" ] || PROMTOOL=$(command -v promtool || true)
if [ -n "$PROMTOOL" ]; then
  "$PROMTOOL" check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1 || fail "promtool: $(cat "$TMP/promtool.out")"
fi
if grep -F -w -f "$TMP/phi.txt" "$TMP/metrics.txt" >"$TMP/phi-metrics.txt"; then
  head -5 "$TMP/phi-metrics.txt"
  fail "PHI in the center's metrics"
fi
ok "center /metrics: $total received, $(mv cartgate_intake_repeated_total) repeated, refused by reason, the inbox by status, $(mv cartgate_intake_waiting) waiting (oldest ${age%.*} s)${PROMTOOL:+, promtool clean}; no PHI"

# ---- credentials before the body: heads whose body is never sent -------------------------------
# POST /fhir declaring 30 MiB without a token, or with one that is not a site's: 401 (the same
# OperationOutcome and WWW-Authenticate) at once, the body never read, the connection closed;
# with the site's token a head over 32 MiB gets the 413 OperationOutcome the same way; with the
# site's token and a Bundle's length nothing is answered until the Bundle is sent, then 200
token "$TMP/site.pem" site-a "$CBASE/fhir/auth/token" "jti-unread-$$"
[ "$CODE" = 200 ] || fail "a fresh token: $CODE $(cat "$TMP/tok.json")"
CTOK=$(jget "$TMP/tok.json" d.access_token)
node -e '
const net=require("net"), fs=require("fs");
const [port, tok, bundle]=[+process.argv[1], process.argv[2], fs.readFileSync(process.argv[3])];
function ask(head, body) {
  return new Promise(res => {
    const s=net.connect(port, "127.0.0.1"), t0=Date.now();
    let out="", before=null, done=false;
    const end=closed => { if (!done) { done=true; s.destroy(); res({out, before, closed, ms: Date.now()-t0}); } };
    s.on("data", d => out+=d); s.on("end", () => end(true)); s.on("error", () => end(true));
    s.write(head);
    if (body) setTimeout(() => { before=out; s.write(body); }, 700);
    setTimeout(() => end(false), 10000);
  });
}
const H=(auth, n) => "POST /fhir HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n" +
  (auth ? "Authorization: Bearer "+auth+"\r\n" : "") + "Content-Length: "+n+"\r\nConnection: close\r\n\r\n";
const fail=m => { console.error(m); process.exit(1); };
(async () => {
  for (const auth of [null, "not-a-token"]) {
    const r=await ask(H(auth, 30<<20));
    if (!/^HTTP\/1.1 401 /.test(r.out) || !r.out.includes("WWW-Authenticate: Bearer error=\"invalid_token\"") ||
        !r.out.includes("\"resourceType\":\"OperationOutcome\"") || !r.closed || r.ms > 3000)
      fail("30 MiB head, token "+auth+": "+r.ms+" ms closed="+r.closed+": "+r.out.slice(0, 300));
  }
  let r=await ask(H(tok, (32<<20)+1));
  if (!/^HTTP\/1.1 413 /.test(r.out) || !r.out.includes("larger than this center accepts") || !r.closed || r.ms > 3000)
    fail("32 MiB + 1 head with the token: "+r.ms+" ms: "+r.out.slice(0, 300));
  r=await ask(H(tok, bundle.length), bundle);
  if (r.before !== "" || !/^HTTP\/1.1 200 /.test(r.out)) fail("the Bundle with the token: before the body \""+r.before+"\", then "+r.out.slice(0, 300));
})();' "$CPORT" "$CTOK" "$TMP/big.json" || fail "credentials before the body"
ok "POST /fhir heads declaring 30 MiB without a site token (none, or not one): 401 OperationOutcome at once, the body never read; 32 MiB + 1 with the token: 413 unread; with the token a Bundle is waited for, then answered 200"

stop_daemon "$SP"
[ "$DRC" = 0 ] || fail "site exit status $DRC"
stop_daemon "$CP"
[ "$DRC" = 0 ] || fail "center exit status $DRC"
ok "both daemons stopped cleanly"
