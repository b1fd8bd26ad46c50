#!/usr/bin/env bash
# EHR write-back (referral.writeback): a synth cohort in an EHR reference server -> cartgate run
# (auto mode) -> referrals delivered to a center reference server; the test sets every center
# Task to accepted (BSeR 3.0). With writeback=communication the EHR then holds exactly one
# Communication per (referral, state) for sent and accepted, validated by the server, with
# subject, basedOn/about by the placer identifier and the payload text; a restart with every
# outbox row forced back to pending re-sends them and creates no duplicate (conditional
# create). With writeback=none nothing is written. check-config names file:line when
# writeback has no writeback_source or an unknown one.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
N=${CARTGATE_WB_PATIENTS:-40}
cohort "$TMP" 7 "$N"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
start_server center
CENTER=$BASE
centers_for "$CENTER" "$TMP/centers.json"
conf() { # FILE DB WRITEBACK EHRBASE
  cat >"$1" <<EOF
{
  "site": {"id": "t-wb", "name": "WB Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$2"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"mode": "auto", "send_interval_s": 1, "task_poll_s": 1,
               "writeback": "$3", "writeback_source": "ehr"},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$4", "interval_s": 5, "page_size": 500}]
}
EOF
}
count_of() { curl -s "$1?_summary=count" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(String(JSON.parse(s).total)))'; }

# ---- writeback=communication ----------------------------------------------------------------
DB="$TMP/wb.db"
conf "$TMP/wb.conf" "$DB" communication "$EHR"
"$CG" check-config -c "$TMP/wb.conf" >/dev/null || fail "check-config rejected the writeback config"
start_daemon wb "$TMP/wb.conf"
P=$DPID
sent_all() {
  [ "$(sqlite3 "$DB" "SELECT count(*) FROM referrals WHERE state IN ('pending_approval','approved','sending')" 2>/dev/null)" = 0 ] &&
    [ "$(sqlite3 "$DB" "SELECT count(*) FROM referrals" 2>/dev/null)" -gt 0 ] &&
    [ "$(screened_count "$DB" 2>/dev/null)" = "$N" ]
}
wait_for "every referral sent" 300 sent_all
n_ref=$(sqlite3 "$DB" "SELECT count(*) FROM referrals")
[ "$n_ref" -ge 2 ] || fail "only $n_ref referrals: the cohort is too small for this test"
ok "$n_ref referrals sent"

# the center accepts every referral (its Tasks read once the center lists all of them: on a
# loaded machine the search right after the last send has come back empty)
tasks_there() { [ "$(count_of "$CENTER/Task" 2>/dev/null)" = "$n_ref" ]; }
wait_for "the center lists $n_ref Tasks" 60 tasks_there
curl -s "$CENTER/Task?_count=1000" >"$TMP/tasks.json" || fail "GET the center's Tasks"
node -e '
const fs=require("fs"); const b=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
for (const e of b.entry||[]) {
  const t=e.resource; t.status="accepted";
  t.businessStatus={coding:[{system:"http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS",code:"3.0"}]};
  fs.writeFileSync(process.argv[2]+"/task-"+t.id+".json", JSON.stringify(t));
}' "$TMP/tasks.json" "$TMP"
n_put=0
shopt -s nullglob
for f in "$TMP"/task-*.json; do
  id=$(basename "$f" .json); id=${id#task-}
  [ "$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/fhir+json' \
        --data-binary "@$f" "$CENTER/Task/$id")" = 200 ] || fail "PUT Task/$id: $(cat "$TMP/put.out")"
  n_put=$((n_put + 1))
done
[ "$n_put" = "$n_ref" ] || fail "$n_put Tasks at the center for $n_ref referrals"
accepted_all() { [ "$(sqlite3 "$DB" "SELECT count(*) FROM referrals WHERE state='accepted'")" = "$n_ref" ]; }
wait_for "every referral accepted" 120 accepted_all
ok "center set $n_put Tasks accepted; every referral followed"

want=$((2 * n_ref))
written() {
  [ "$(sqlite3 "$DB" "SELECT count(*) FROM writeback_outbox WHERE status='done'")" = "$want" ] &&
    [ "$(count_of "$EHR/Communication")" = "$want" ]
}
wait_for "$want Communications written back" 120 written
[ "$(sqlite3 "$DB" "SELECT count(*) FROM writeback_outbox WHERE status<>'done'")" = 0 ] || fail "outbox rows not done"
sqlite3 "$DB" "SELECT placer_id || '|' || patient_id FROM referrals ORDER BY 1" >"$TMP/placers.txt"
check_comms() { # LABEL
  curl -s "$EHR/Communication?_count=1000" >"$TMP/comms.json"
  node -e '
const fs=require("fs");
const b=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
const refs=fs.readFileSync(process.argv[2],"utf8").trim().split("\n").map(l=>l.split("|"));
const by=new Map();
const problems=[];
for (const e of b.entry||[]) {
  const c=e.resource;
  const id=(c.identifier||[]).find(i=>i.system==="urn:cartgate:writeback");
  if (!id) { problems.push("Communication/"+c.id+" without the writeback identifier"); continue; }
  by.set(id.value,(by.get(id.value)||[]).concat([c]));
}
for (const [placer,pid] of refs) for (const st of ["sent","accepted"]) {
  const cs=by.get(placer+"-"+st)||[];
  if (cs.length!==1) { problems.push(`${placer}-${st}: ${cs.length} Communications`); continue; }
  const c=cs[0];
  if (c.status!=="completed") problems.push(`${placer}-${st}: status ${c.status}`);
  if ((c.subject||{}).reference!=="Patient/"+pid) problems.push(`${placer}-${st}: subject ${JSON.stringify(c.subject)}`);
  const bo=((c.basedOn||[])[0]||{}).identifier||{}, ab=((c.about||[])[0]||{}).identifier||{};
  if (bo.value!==placer || ab.value!==placer) problems.push(`${placer}-${st}: basedOn/about ${JSON.stringify(bo)} ${JSON.stringify(ab)}`);
  const text=((c.payload||[])[0]||{}).contentString||"";
  if (!text.startsWith(`CAR T referral ${placer} to `) || !text.includes(`: ${st}`)) problems.push(`${placer}-${st}: payload "${text}"`);
  if (!c.sent) problems.push(`${placer}-${st}: no sent`);
}
if (by.size!==refs.length*2) problems.push(`${by.size} identifiers for ${refs.length*2} (referral, state) pairs`);
if (problems.length) { console.log(problems.slice(0,10).join("\n")); process.exit(1); }' "$TMP/comms.json" "$TMP/placers.txt" || fail "$1: Communications in the EHR are wrong (above)"
}
check_comms "first run"
ok "the EHR holds exactly one Communication per (referral, state): $want for $n_ref referrals (subject, basedOn/about, payload checked)"

# restart with every outbox row forced back to pending (as after a crash between the write
# and its mark): everything is written again, nothing is duplicated
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "exit status $DRC"
sqlite3 -cmd ".timeout 5000" "$DB" "UPDATE writeback_outbox SET status='pending'"
start_daemon wb2 "$TMP/wb.conf"
P=$DPID
rewritten() { [ "$(sqlite3 "$DB" "SELECT count(*) FROM writeback_outbox WHERE status='done'")" = "$want" ]; }
wait_for "the pending write-backs retried after the restart" 60 rewritten
grep -q 'event="writeback.written"' "$TMP/wb2.log" || fail "no write-back after the restart"
[ "$(count_of "$EHR/Communication")" = "$want" ] || fail "restart duplicated Communications: $(count_of "$EHR/Communication")"
check_comms "after restart"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE action='writeback-failed'")" = 0 ] || fail "write-back failures audited"
stop_daemon "$P"
ok "restart with $want rows pending again: all retried, still exactly $want Communications"

# ---- writeback=none --------------------------------------------------------------------------
start_server ehr2 --seed "$TMP/seed"
EHR2=$BASE
DB2="$TMP/none.db"
conf "$TMP/none.conf" "$DB2" none "$EHR2"
start_daemon none "$TMP/none.conf"
P=$DPID
accepted2() {
  [ "$(screened_count "$DB2" 2>/dev/null)" = "$N" ] &&
    [ "$(sqlite3 "$DB2" "SELECT count(*) FROM referrals WHERE state='accepted'" 2>/dev/null)" = "$n_ref" ]
}
wait_for "writeback=none: every referral sent and accepted" 300 accepted2
sleep 3
[ "$(count_of "$EHR2/Communication")" = 0 ] || fail "writeback=none wrote Communications"
[ "$(count_of "$EHR2/Task")" = 0 ] || fail "writeback=none wrote Tasks"
# the outbox table is part of the schema (store migration 3): with writeback=none it stays
# empty and the write-back never advanced its audit cursor
[ "$(sqlite3 "$DB2" "SELECT count(*) FROM writeback_outbox")" = 0 ] || fail "writeback=none queued write-backs"
[ "$(sqlite3 "$DB2" "SELECT count(*) FROM cursors WHERE source='writeback'")" = 0 ] || fail "writeback=none ran a write-back pass"
stop_daemon "$P"
ok "writeback=none: $n_ref referrals sent and accepted, nothing written to the EHR"

# ---- writeback=task (same center: its Tasks are already accepted) ---------------------------
start_server ehr3 --seed "$TMP/seed"
EHR3=$BASE
DB3="$TMP/task.db"
conf "$TMP/task.conf" "$DB3" task "$EHR3"
start_daemon task "$TMP/task.conf"
P=$DPID
tasks_written() {
  [ "$(sqlite3 "$DB3" "SELECT count(*) FROM referrals WHERE state='accepted'" 2>/dev/null)" = "$n_ref" ] &&
    [ "$(sqlite3 "$DB3" "SELECT count(*) FROM writeback_outbox WHERE status='done'" 2>/dev/null)" = "$want" ]
}
wait_for "writeback=task: $want Tasks written" 300 tasks_written
stop_daemon "$P"
sqlite3 "$DB3" "SELECT placer_id || '|' || patient_id FROM referrals ORDER BY 1" >"$TMP/placers3.txt"
curl -s "$EHR3/Task?_count=1000" >"$TMP/tasks3.json"
node -e '
const fs=require("fs");
const b=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
const refs=fs.readFileSync(process.argv[2],"utf8").trim().split("\n").map(l=>l.split("|"));
const by=new Map(); const problems=[];
for (const e of b.entry||[]) {
  const t=e.resource; const id=(t.identifier||[]).find(i=>i.system==="urn:cartgate:writeback");
  if (id) by.set(id.value,(by.get(id.value)||[]).concat([t]));
}
const want={sent:"requested",accepted:"accepted"};
for (const [placer,pid] of refs) for (const st of Object.keys(want)) {
  const ts=by.get(placer+"-"+st)||[];
  if (ts.length!==1) { problems.push(`${placer}-${st}: ${ts.length} Tasks`); continue; }
  const t=ts[0];
  if (t.status!==want[st] || t.intent!=="order") problems.push(`${placer}-${st}: status ${t.status} intent ${t.intent}`);
  if ((t.for||{}).reference!=="Patient/"+pid) problems.push(`${placer}-${st}: for ${JSON.stringify(t.for)}`);
  if ((((t.focus||{}).identifier)||{}).value!==placer) problems.push(`${placer}-${st}: focus ${JSON.stringify(t.focus)}`);
  if (!(t.owner||{}).display) problems.push(`${placer}-${st}: no owner display`);
}
if (by.size!==refs.length*2) problems.push(`${by.size} Task identifiers for ${refs.length*2} pairs`);
if (problems.length) { console.log(problems.slice(0,10).join("\n")); process.exit(1); }' "$TMP/tasks3.json" "$TMP/placers3.txt" || fail "writeback=task: Tasks in the EHR are wrong (above)"
[ "$(count_of "$EHR3/Communication")" = 0 ] || fail "writeback=task wrote Communications"
ok "writeback=task: exactly one Task per (referral, state) in the EHR ($want), status requested/accepted, intent order, for/focus/owner set"

# ---- check-config ----------------------------------------------------------------------------
conf "$TMP/bad.conf" "$TMP/bad.db" task "$EHR"
sed -i 's/, "writeback_source": "ehr"//' "$TMP/bad.conf"
line=$(grep -n '"writeback"' "$TMP/bad.conf" | cut -d: -f1)
"$CG" check-config -c "$TMP/bad.conf" 2>"$TMP/bad.out" >/dev/null && fail "check-config accepted writeback without writeback_source"
grep -q "^$TMP/bad.conf:$line: referral.writeback: needs referral.writeback_source" "$TMP/bad.out" || fail "no file:line error: $(cat "$TMP/bad.out")"
conf "$TMP/bad2.conf" "$TMP/bad.db" communication "$EHR"
sed -i 's/"writeback_source": "ehr"/"writeback_source": "nope"/' "$TMP/bad2.conf"
"$CG" check-config -c "$TMP/bad2.conf" 2>"$TMP/bad2.out" >/dev/null && fail "check-config accepted an unknown writeback_source"
grep -q "bad2.conf:$line: referral.writeback_source: \"nope\" is not a configured source" "$TMP/bad2.out" || fail "unknown source: $(cat "$TMP/bad2.out")"
ok "check-config: writeback without writeback_source / with an unknown one -> file:$line errors"
echo "test_daemon_writeback: $CHECKS checks passed"
