#!/usr/bin/env bash
# End to end: a synth cohort of 240 patients in an EHR reference server -> cartgate run (auto
# mode, search source) -> referrals delivered to a center reference server. Checks: every
# ground-truth candidate (expected eligible or possibly eligible) referred exactly once and
# nobody else; verdict counts by category equal the ground truth; metrics agree with the store;
# the center holds one ServiceRequest and one Task per referral; a restart sends nothing again;
# and no log line of the run carries a fixture patient's name, MRN or birth date.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
N=${CARTGATE_E2E_PATIENTS:-240}
SEED=${CARTGATE_E2E_SEED:-7}
cohort "$TMP" "$SEED" "$N"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
start_server center
CENTER=$BASE
centers_for "$CENTER" "$TMP/centers.json"
cat >"$TMP/e2e.conf" <<EOF
{
  "site": {"id": "t-e2e", "name": "E2E Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/e2e.db"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"mode": "auto", "send_interval_s": 1, "task_poll_s": 10},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 5, "page_size": 500}]
}
EOF
start_daemon e2e "$TMP/e2e.conf"
P=$DPID
DB="$TMP/e2e.db"
settled() {
  [ "$(screened_count "$DB" 2>/dev/null)" = "$N" ] &&
    [ "$(sqlite3 "$DB" "SELECT count(*) FROM daemon_dirty")" = 0 ] &&
    [ "$(sqlite3 "$DB" "SELECT count(*) FROM referrals WHERE state IN ('pending_approval','approved','sending')")" = 0 ] &&
    [ "$(sqlite3 "$DB" "SELECT count(*) FROM referrals")" -gt 0 ]
}
wait_for "$N patients screened and every referral delivered" 300 settled
ok "$N patients screened, $(sqlite3 "$DB" 'SELECT count(*) FROM referrals') referrals out of the outbox"

# ---- against the ground truth --------------------------------------------------------------
sqlite3 "$DB" "SELECT patient_id || '|' || category FROM verdicts ORDER BY 1" >"$TMP/verdicts.txt"
sqlite3 "$DB" "SELECT patient_id FROM referrals ORDER BY 1" >"$TMP/referred.txt"
"$CG" screen --as-of 2026-11-01 --json "$TMP/cohort" >"$TMP/screen.ndjson" 2>/dev/null
node -e '
const fs=require("fs");
const [gtf, vf, rf, sf]=process.argv.slice(1);
const gt=fs.readFileSync(gtf,"utf8").trim().split("\n").map(JSON.parse);
const v=new Map(fs.readFileSync(vf,"utf8").trim().split("\n").map(l=>l.split("|")));
const referred=fs.readFileSync(rf,"utf8").trim().split("\n").filter(Boolean);
const screen=new Map(fs.readFileSync(sf,"utf8").trim().split("\n").map(l=>{const r=JSON.parse(l);return [r.patient,r.category];}));
const problems=[];
const count=(xs)=>xs.reduce((m,x)=>(m[x]=(m[x]||0)+1,m),{});
const gtCounts=count(gt.map(g=>g.expected_category)), vCounts=count([...v.values()]);
for (const g of gt) {
  const got=v.get(g.patient);
  if (got!==g.expected_category)
    problems.push(`category ${g.patient} (${g.scenario}): ground truth ${g.expected_category}, daemon ${got}, cartgate screen ${screen.get(g.patient)}`);
}
const cand=new Set(gt.filter(g=>g.expected_category==="eligible"||g.expected_category==="possibly_eligible").map(g=>g.patient));
const times=count(referred);
for (const p of cand) if (times[p]!==1) problems.push(`candidate ${p} referred ${times[p]||0} times`);
for (const p of Object.keys(times)) if (!cand.has(p)) problems.push(`${p} referred but not a ground-truth candidate`);
console.log(`ground truth ${JSON.stringify(gtCounts)}; daemon ${JSON.stringify(vCounts)}; candidates ${cand.size}; referrals ${referred.length}`);
if (problems.length) { console.log(problems.join("\n")); process.exit(1); }
' "$TMP/cohort/ground_truth.ndjson" "$TMP/verdicts.txt" "$TMP/referred.txt" "$TMP/screen.ndjson" >"$TMP/gt.out"
rc=$?
cat "$TMP/gt.out" | head -n 20
[ $rc = 0 ] || fail "daemon results differ from the ground truth (above)"
ok "every ground-truth candidate referred exactly once, nobody else; counts by category equal the ground truth"

# ---- the worklist: written from the screener's typed values (store migration 15) ------------
# the reference: migration 11's expression over each verdict's JSON (its text, as shipped). A
# verdict row keeps no profile since migration 15's typed rows need none: the profile comes from
# the admin API, which builds it again from the cache (so this also checks that it is the one
# the verdict was made from: a different one moves the disease or relapse day of some row).
[ "$(sqlite3 "$DB" "SELECT count(*) FROM verdicts WHERE profile_json IS NOT NULL")" = 0 ] ||
  fail "verdict rows keep their profile although their worklist row was written from typed values"
sqlite3 "$DB" "SELECT patient_id FROM verdicts ORDER BY 1" >"$TMP/pids.txt"
ADMIN="$ADMIN" TOKEN="$TOKEN" node -e '
const fs=require("fs"); const ids=fs.readFileSync(process.argv[1],"utf8").trim().split("\n");
(async()=>{ const out=[];
  for (const id of ids) {
    const r=await fetch(process.env.ADMIN+"/api/v1/patients/"+encodeURIComponent(id),{headers:{authorization:"Bearer "+process.env.TOKEN}});
    const d=await r.json();
    if (r.status!==200 || !d.profile || d.profile.patient!==id) { console.error(id+": "+r.status+" "+JSON.stringify(d).slice(0,200)); process.exit(1); }
    out.push(id+"\t"+JSON.stringify(d.profile));
  }
  fs.writeFileSync(process.argv[2], out.join("\n")+"\n"); })();
' "$TMP/pids.txt" "$TMP/profiles.tsv" 2>"$TMP/profiles.err" || fail "the API gave no profile: $(head -c 300 "$TMP/profiles.err")"
sqlite3 "$DB" ".backup $TMP/wl.db"
sqlite3 "$TMP/wl.db" "CREATE TABLE prof(patient_id TEXT PRIMARY KEY, profile_json TEXT)" ".mode tabs" ".import $TMP/profiles.tsv prof"
[ "$(sqlite3 "$TMP/wl.db" "SELECT count(*) FROM prof WHERE json_valid(profile_json)")" = "$N" ] || fail "profiles from the API not imported"
VJ="(CASE WHEN json_valid(v.verdict_json) THEN v.verdict_json ELSE '{}' END)"
PJ="(SELECT p.profile_json FROM prof p WHERE p.patient_id = v.patient_id)"
REL="(SELECT max(json_extract(e.value, '\$.date')) FROM json_each($PJ, '\$.events') e WHERE json_extract(e.value, '\$.kind') = 'progression or relapse')"
OLD="SELECT v.patient_id, (v.category IN ('eligible','possibly_eligible') OR coalesce(json_extract($VJ, '\$.consult.recommendation'), 'none') <> 'none'), v.category,
 CASE WHEN json_extract($VJ, '\$.urgency') = 'now' OR json_extract($VJ, '\$.consult.recommendation') = 'refer_now' THEN 0
  WHEN json_extract($VJ, '\$.urgency') = 'soon' THEN 1
  WHEN json_extract($VJ, '\$.urgency') = 'review' OR json_extract($VJ, '\$.consult.recommendation') = 'early_consult' THEN 2 ELSE 3 END,
 json_extract($VJ, '\$.urgency'), json_extract($VJ, '\$.consult.recommendation'), json_extract($PJ, '\$.facts.primary_disease.value'),
 $REL, coalesce($REL, '9999'), coalesce(json_array_length($VJ, '\$.missing'), 0), json_extract($VJ, '\$.products'),
 json_extract($VJ, '\$.possible_products'),
 v.category || '|' || coalesce(json_extract($VJ, '\$.products'), '') || '|' || coalesce(json_extract($VJ, '\$.possible_products'), '') || '|' || coalesce(json_extract($VJ, '\$.consult.recommendation'), ''),
 v.updated_ms FROM verdicts v"
wl_diff=$(sqlite3 "$TMP/wl.db" "SELECT (SELECT count(*) FROM (SELECT * FROM worklist EXCEPT $OLD)) || ' ' || (SELECT count(*) FROM ($OLD EXCEPT SELECT * FROM worklist)) || ' ' || (SELECT count(*) FROM worklist) || ' ' || (SELECT count(*) FROM verdicts)")
[ "$wl_diff" = "0 0 $N $N" ] || fail "the worklist differs from the one derived from the verdicts' JSON (rows only in the worklist, only derived, worklist, verdicts): $wl_diff"
# the cohort exercises what the row is made of
wl_mix=$(sqlite3 "$DB" "SELECT count(DISTINCT urank) || ' ' || count(DISTINCT disease) || ' ' || count(relapse_day) || ' ' || sum(possible <> '[]') || ' ' || sum(on_list) FROM worklist")
read -r n_urank n_dis n_rel n_poss n_on <<<"$wl_mix"
[ "$n_urank" -ge 3 ] && [ "$n_dis" -ge 3 ] && [ "$n_rel" -gt 0 ] && [ "$n_poss" -gt 0 ] && [ "$n_on" -gt 0 ] ||
  fail "the cohort does not exercise the worklist (urgency ranks, diseases, relapse days, possible products, on list): $wl_mix"
ok "the worklist of the $N patients is the one migration 11's SQL derives from their verdicts' JSON ($wl_mix)"

# ---- delivery and the center ----------------------------------------------------------------
n_ref=$(sqlite3 "$DB" "SELECT count(*) FROM referrals")
n_sent=$(sqlite3 "$DB" "SELECT count(*) FROM referrals WHERE state='sent'")
[ "$n_sent" = "$n_ref" ] || fail "$n_sent of $n_ref referrals sent: $(sqlite3 "$DB" "SELECT state, count(*) FROM referrals GROUP BY 1")"
curl -s "$CENTER/ServiceRequest?_summary=count" >"$TMP/sr.json"
curl -s "$CENTER/Task?_summary=count" >"$TMP/task.json"
[ "$(jget "$TMP/sr.json" d.total)" = "$n_ref" ] || fail "center has $(jget "$TMP/sr.json" d.total) ServiceRequests for $n_ref referrals"
[ "$(jget "$TMP/task.json" d.total)" = "$n_ref" ] || fail "center has $(jget "$TMP/task.json" d.total) Tasks"
ok "all $n_ref referrals sent; the center holds exactly $n_ref ServiceRequests and $n_ref Tasks"

# ---- metrics agree with the store -----------------------------------------------------------------
api /metrics
cp "$TMP/resp" "$TMP/metrics.txt"
for cat in eligible possibly_eligible not_eligible; do
  want=$(sqlite3 "$DB" "SELECT count(*) FROM verdicts WHERE category='$cat'")
  grep -q "^cartgate_verdicts{category=\"$cat\"} $want\$" "$TMP/metrics.txt" || fail "metric verdicts $cat != $want"
done
grep -q "^cartgate_referrals{state=\"sent\"} $n_sent\$" "$TMP/metrics.txt" || fail "metric referrals sent"
grep -q "^cartgate_time_to_referral_seconds_count $n_sent\$" "$TMP/metrics.txt" || fail "histogram count"
grep -q "^cartgate_outbox_depth 0\$" "$TMP/metrics.txt" || fail "outbox depth"
grep -q "^cartgate_referrals_created_total $n_ref\$" "$TMP/metrics.txt" || fail "referrals created counter"
grep -q "^cartgate_patients_screened_total $N\$" "$TMP/metrics.txt" || fail "patients screened counter $(grep screened_total "$TMP/metrics.txt")"
api "/api/v1/referrals?state=sent"
[ "$(jget "$TMP/resp" d.count)" = "$n_sent" ] || fail "API referral count"
ok "metrics (verdicts, referrals by state, histogram, outbox, counters) agree with the store and the API"

# ---- restart: nothing is sent twice -------------------------------------------------------------------
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "exit status $DRC"
start_daemon e2e2 "$TMP/e2e.conf"
P=$DPID
polled() { grep -q 'event="poll.done" source="ehr' "$TMP/e2e2.log"; }
wait_for "a poll after restart" 60 polled
sleep 3
[ "$(sqlite3 "$DB" "SELECT count(*) FROM referrals")" = "$n_ref" ] || fail "restart created referrals"
curl -s "$CENTER/ServiceRequest?_summary=count" >"$TMP/sr2.json"
[ "$(jget "$TMP/sr2.json" d.total)" = "$n_ref" ] || fail "restart re-sent"
stop_daemon "$P"
ok "restart on the same store: no new referral, nothing re-sent"

# ---- no PHI in the logs ------------------------------------------------------------------------------
phi_terms "$TMP/cohort/Patient.000.ndjson" "$TMP/phi.txt"
n_terms=$(wc -l <"$TMP/phi.txt")
[ "$n_terms" -gt "$N" ] || fail "too few PHI terms extracted ($n_terms)"
cat "$TMP"/e2e.log "$TMP"/e2e2.log >"$TMP/all-daemon-logs.txt"
[ "$(wc -l <"$TMP/all-daemon-logs.txt")" -gt 100 ] || fail "logs suspiciously short"
if grep -F -w -f "$TMP/phi.txt" "$TMP/all-daemon-logs.txt" >"$TMP/phi-hits.txt"; then
  head -5 "$TMP/phi-hits.txt"
  fail "PHI found in the daemon logs ($(wc -l <"$TMP/phi-hits.txt") lines)"
fi
ok "no name, MRN, birth date, address line or telecom of the $N fixture patients in $(wc -l <"$TMP/all-daemon-logs.txt") log lines ($n_terms terms)"
echo "test_daemon_e2e: $CHECKS checks passed"
