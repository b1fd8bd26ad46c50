#!/usr/bin/env bash
# One active referral per patient and episode, end to end (propose.h, sender.h): the demo
# DLBCL patient in an EHR reference server, cartgate run in auto mode.
#   1. The first poll brings the patient: one referral, sent to its center (center server A).
#   2. kill -9; the patient's data changes in the EHR (a move to another city, so the best
#      center is now another one, served by center server B); restart.
#   3. The second poll re-screens: no second ServiceRequest anywhere, the sent referral stays
#      sent, and a re-route proposal appears, pending approval although the mode is auto.
#   4. `cartgate referrals approve` (on the store, while the daemon runs): the sender cancels
#      the first Task at A (Task.status cancelled), then sends the re-route to B: A keeps one
#      ServiceRequest, B gets one ServiceRequest and one Task; later polls change nothing.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
N=1
mkdir -p "$TMP/seed"
demo_seed "$TMP/seed/demo.ndjson"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
start_server center-a
CA=$BASE
start_server center-b
CB=$BASE
centers_for "$CA" "$TMP/centers.json"
DB="$TMP/rr.db"
cat >"$TMP/rr.conf" <<EOF
{
  "site": {"id": "t-rr", "name": "Re-route Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$DB"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"mode": "auto", "send_interval_s": 1, "task_poll_s": 2},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 1, "page_size": 50}]
}
EOF
q() { sqlite3 -cmd ".timeout 5000" "$DB" "$1"; }
total() { curl -s "$1/$2?_summary=count" >"$TMP/count.json" && jget "$TMP/count.json" d.total; }

# ---- 1. the first referral, sent ---------------------------------------------------------
start_daemon rr1 "$TMP/rr.conf"
P=$DPID
first_sent() { [ "$(q "SELECT count(*) FROM referrals WHERE state='sent'")" = 1 ]; }
wait_for "the first referral sent" 120 first_sent
FIRST=$(q "SELECT id FROM referrals")
X=$(q "SELECT center_id FROM referrals WHERE id=$FIRST")
PID_PATIENT=$(q "SELECT patient_id FROM referrals WHERE id=$FIRST")
[ "$(total "$CA" ServiceRequest)" = 1 ] || fail "center A has $(total "$CA" ServiceRequest) ServiceRequests"
ok "first poll: one referral ($FIRST) sent to $X"

# ---- 2. crash, the patient moves, restart ----------------------------------------------------
kill -9 "$P"
wait "$P" 2>/dev/null
# the first center stays on A, every other center is on B; the patient moves next to the
# open center farthest from the first that offers the referral's products
PRODUCTS=$(q "SELECT indications FROM referrals WHERE id=$FIRST")
node -e '
const fs=require("fs");
const [src, out, x, a, b, prods, ehr, pid, pout]=process.argv.slice(1);
const d=JSON.parse(fs.readFileSync(src,"utf8"));
const need=prods.split(",").map(k=>k.split(":")[0]);
const cx=d.centers.find(c=>c.id===x);
let far=null, best=-1;
for (const c of d.centers) {
  c.fhir={base: c.id===x ? a : b, auth:{type:"none"}};
  if (c.id===x || c.capacity!=="open" || !need.every(p=>(c.products||[]).includes(p))) continue;
  const dist=(c.position.lat-cx.position.lat)**2+(c.position.lon-cx.position.lon)**2;
  if (dist>best) { best=dist; far=c; }
}
if (!far) { console.error("no other center offers " + need); process.exit(1); }
fs.writeFileSync(out, JSON.stringify(d,null,1));
fs.writeFileSync(pout, JSON.stringify(far.position));
' "$TMP/centers.json" "$TMP/centers2.json" "$X" "$CA" "$CB" "$PRODUCTS" "$EHR" "$PID_PATIENT" "$TMP/far.json" ||
  fail "no center to move the patient to"
mv "$TMP/centers2.json" "$TMP/centers.json"
curl -s "$EHR/Patient/$PID_PATIENT" >"$TMP/patient.json"
node -e '
const fs=require("fs");
const p=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
const pos=JSON.parse(fs.readFileSync(process.argv[2],"utf8"));
p.address=[{line:["2 Example Way"], city:"Elsewhere", country:"US",
  extension:[{url:"http://hl7.org/fhir/StructureDefinition/geolocation", extension:[
    {url:"latitude", valueDecimal:pos.lat}, {url:"longitude", valueDecimal:pos.lon}]}]}];
delete p.meta;
fs.writeFileSync(process.argv[1], JSON.stringify(p));' "$TMP/patient.json" "$TMP/far.json"
code=$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/fhir+json' \
  --data-binary @"$TMP/patient.json" "$EHR/Patient/$PID_PATIENT")
[ "$code" = 200 ] || fail "moving the patient: HTTP $code $(cat "$TMP/put.out")"
start_daemon rr2 "$TMP/rr.conf"
P=$DPID

# ---- 3. a re-route proposal, nothing sent twice ----------------------------------------------
proposed() { [ "$(q "SELECT count(*) FROM referrals WHERE supersedes=$FIRST AND state='pending_approval'")" = 1 ]; }
wait_for "a re-route proposal" 120 proposed
RR=$(q "SELECT id FROM referrals WHERE supersedes=$FIRST")
Y=$(q "SELECT center_id FROM referrals WHERE id=$RR")
[ "$Y" != "$X" ] || fail "the re-route goes to the same center $X"
[ "$(q "SELECT mode FROM referrals WHERE id=$RR")" = approval ] || fail "re-route mode"
grep -q "event=\"referral.reroute_proposed\" referral=\"$RR\" replaces=\"$FIRST\"" "$TMP/rr2.log" ||
  fail "no referral.reroute_proposed line"
# a few more polls and send passes: still nothing new anywhere
polls_before=$(grep -c 'event="poll.done" source="ehr"' "$TMP/rr2.log")
more_polls() { [ "$(grep -c 'event="poll.done" source="ehr"' "$TMP/rr2.log")" -ge $((polls_before + 3)) ]; }
wait_for "three more polls" 60 more_polls
[ "$(q "SELECT count(*) FROM referrals")" = 2 ] || fail "referrals: $(q "SELECT id, state, center_id FROM referrals")"
[ "$(q "SELECT state FROM referrals WHERE id=$FIRST")" = sent ] || fail "the first referral is $(q "SELECT state FROM referrals WHERE id=$FIRST")"
[ "$(q "SELECT state FROM referrals WHERE id=$RR")" = pending_approval ] || fail "the re-route is $(q "SELECT state FROM referrals WHERE id=$RR")"
[ "$(total "$CA" ServiceRequest)" = 1 ] || fail "center A has $(total "$CA" ServiceRequest) ServiceRequests"
[ "$(total "$CB" ServiceRequest)" = 0 ] || fail "center B has $(total "$CB" ServiceRequest) ServiceRequests before approval"
"$CG" referrals show --db "$DB" "$RR" >"$TMP/show.txt" || fail "referrals show"
grep -q "replaces     referral $FIRST" "$TMP/show.txt" || fail "show does not name what the re-route replaces: $(cat "$TMP/show.txt")"
ok "after the crash and the move: no second ServiceRequest; the re-route proposal $RR ($X -> $Y) waits for a person (auto mode)"

# ---- 4. approve: cancel at A, then send to B -------------------------------------------------
"$CG" referrals approve --db "$DB" --actor dr.reroute "$RR" >/dev/null || fail "approve"
rerouted() {
  [ "$(q "SELECT state FROM referrals WHERE id=$FIRST")" = cancelled ] &&
    [ "$(q "SELECT state FROM referrals WHERE id=$RR")" = sent ]
}
wait_for "the first cancelled at its center and the re-route sent" 120 rerouted
TASK_A=$(q "SELECT center_task_ref FROM referrals WHERE id=$FIRST")
curl -s "$CA/$TASK_A" >"$TMP/task-a.json"
[ "$(jget "$TMP/task-a.json" d.status)" = cancelled ] || fail "Task at A: $(jget "$TMP/task-a.json" d.status)"
[ "$(total "$CA" ServiceRequest)" = 1 ] || fail "center A ServiceRequests"
[ "$(total "$CA" Task)" = 1 ] || fail "center A Tasks"
[ "$(total "$CB" ServiceRequest)" = 1 ] || fail "center B ServiceRequests: $(total "$CB" ServiceRequest)"
[ "$(total "$CB" Task)" = 1 ] || fail "center B Tasks"
[ "$(q "SELECT ended FROM referrals WHERE id=$FIRST")" = superseded ] || fail "ended"
[ "$(q "SELECT cancel_requested_ms FROM referrals WHERE id=$FIRST")" = 0 ] || fail "cancel request left"
# the order: cancelled at A before the re-route went to `sending`
c_at=$(q "SELECT min(id) FROM audit WHERE referral_id=$FIRST AND action='cancel-at-center'")
s_at=$(q "SELECT min(id) FROM audit WHERE referral_id=$RR AND to_state='sending'")
[ -n "$c_at" ] && [ -n "$s_at" ] && [ "$c_at" -lt "$s_at" ] || fail "audit order: cancel $c_at, sending $s_at"
[ "$(q "SELECT actor FROM audit WHERE referral_id=$RR AND action='approve'")" = dr.reroute ] || fail "approval not audited with the person"
grep -q "event=\"referral.cancelled_at_center\" referral=\"$FIRST\"" "$TMP/rr2.log" || fail "no referral.cancelled_at_center line"
ok "approved: Task at A cancelled, then the re-route sent to B (A: 1 ServiceRequest, B: 1 ServiceRequest + 1 Task)"

polls_before=$(grep -c 'event="poll.done" source="ehr"' "$TMP/rr2.log")
wait_for "three more polls" 60 more_polls
[ "$(q "SELECT count(*) FROM referrals")" = 2 ] || fail "later polls made referrals"
[ "$(total "$CB" ServiceRequest)" = 1 ] && [ "$(total "$CA" ServiceRequest)" = 1 ] || fail "later polls sent again"
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "exit status $DRC"
ok "later polls: nothing new; clean stop"
echo "test_referral_reroute: $CHECKS checks passed"
