#!/usr/bin/env bash
# Whole-pipeline chaos: nobody lost, nobody twice (issue 12).
#
# A synth cohort in the EHR reference server (paged search, every page slowed a little; half of
# the patients arrive after the step-boundary kills), one
# center reference server answering 503, 429 and connection resets (some after doing the
# request) on a seeded share of requests, cartgate run in auto mode, and the daemon killed
# with SIGKILL again and again, restarted each time on the same store:
#   - at each step boundary, deterministically (the test hook CARTGATE_TEST_CRASH_AT,
#     gateway/referral/crashpoint.h): mid-poll after a page committed, after a patient's
#     verdict and proposal were written but before the batch committed, right after a batch
#     committed, and after a center accepted a referral before it was recorded as sent;
#   - then KILLS times at seeded random moments (polling, screening, proposing and sending
#     overlap, so a random moment lands in any of them).
# A last run drains everything (the faults switched off, so the runtime stays bounded; what
# the faults did to the earlier runs stays) and is stopped cleanly. Then, against the synth
# ground truth: every candidate (eligible or possibly eligible) has exactly one open referral
# in the store and exactly one live ServiceRequest + Task at exactly one center, nobody else
# has any, and no ServiceRequest or Task identifier exists twice at the center.
#
# Parameters (environment): CARTGATE_CHAOS_KILLS (20), CARTGATE_CHAOS_SEED (printed; default
# from the clock), CARTGATE_CHAOS_PATIENTS (100), CARTGATE_CHAOS_REPORT (a file to append the
# figures line to). bench/chaos runs the 100-kill version.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
KILLS=${CARTGATE_CHAOS_KILLS:-20}
SEED=${CARTGATE_CHAOS_SEED:-$(($(date +%s) % 100000))}
N=${CARTGATE_CHAOS_PATIENTS:-100}
echo "chaos: seed $SEED, $KILLS random kills, $N patients (rerun with CARTGATE_CHAOS_SEED=$SEED)"
RANDOM=$SEED
cohort "$TMP" 11 "$N"
# half the patients are in the EHR from the start; the other half arrives (whole patients,
# all their resources at once, while no daemon runs) before the random kills, so those land
# in polling, screening and sending too
mkdir -p "$TMP/seed-a"
node -e '
const fs=require("fs"), path=require("path");
const [dir, outA, outB]=process.argv.slice(1);
const pids=fs.readFileSync(path.join(dir,"Patient.000.ndjson"),"utf8").trim().split("\n").map(l=>JSON.parse(l).id);
const late=new Set(pids.slice(Math.floor(pids.length/2)));
const owner=(id)=>pids.find(p=>id===p||id.startsWith(p+"-"));
const entries=[];
for (const f of fs.readdirSync(dir).filter(f=>f.endsWith(".ndjson")&&f!=="ground_truth.ndjson")) {
  const keep=[];
  for (const l of fs.readFileSync(path.join(dir,f),"utf8").split("\n").filter(Boolean)) {
    const r=JSON.parse(l);
    if (late.has(owner(r.id))) entries.push({resource:r, request:{method:"PUT", url:r.resourceType+"/"+r.id}});
    else keep.push(l);
  }
  fs.writeFileSync(path.join(outA,f), keep.join("\n")+"\n");
}
fs.writeFileSync(outB, JSON.stringify({resourceType:"Bundle", type:"batch", entry:entries}));
console.log(entries.length);' "$TMP/cohort" "$TMP/seed-a" "$TMP/late.json" >"$TMP/late.count" || fail "splitting the cohort"
start_server ehr --seed "$TMP/seed-a"
EHR=$BASE
EHR_ADMIN="http://127.0.0.1:$PORT/admin"
start_server center
CENTER=$BASE
CENTER_ADMIN="http://127.0.0.1:$PORT/admin"
centers_for "$CENTER" "$TMP/centers.json"
faults() { # URL BODY
  [ "$(curl -s -o "$TMP/f.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d "$2" "$1/faults")" = 200 ] ||
    fail "faults $2: $(cat "$TMP/f.out")"
}
faults "$EHR_ADMIN" '{"rules": [{"mode": "latency", "latency_ms": 60}]}'
faults "$CENTER_ADMIN" "{\"seed\": $SEED, \"rules\": [
  {\"mode\": \"latency\", \"latency_ms\": 150, \"methods\": [\"POST\"]},
  {\"mode\": \"status\", \"status\": 503, \"rate\": 0.08},
  {\"mode\": \"429\", \"rate\": 0.05, \"retry_after\": 1},
  {\"mode\": \"reset\", \"rate\": 0.04},
  {\"mode\": \"after-reset\", \"rate\": 0.08, \"methods\": [\"POST\", \"PUT\"]},
  {\"mode\": \"after\", \"status\": 502, \"rate\": 0.05, \"methods\": [\"POST\"]}]}"
DB="$TMP/chaos.db"
cat >"$TMP/chaos.conf" <<EOF
{
  "site": {"id": "t-chaos", "name": "Chaos Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$DB"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"mode": "auto", "send_interval_s": 1, "task_poll_s": 2},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 2, "page_size": 20}]
}
EOF
q() { sqlite3 -cmd ".timeout 5000" "$DB" "$1"; }
RUNS=0
# run_until_dead NAME SECONDS: waits (bounded) for the daemon DPID to die; DRC its status.
run_until_dead() {
  local i
  for i in $(seq 1 $(($2 * 10))); do
    kill -0 "$DPID" 2>/dev/null || { wait "$DPID"; DRC=$?; return 0; }
    sleep 0.1
  done
  return 1
}

# ---- the step boundaries -----------------------------------------------------------------
for point in poll.page:3 screen.proposed:5 screen.committed:1 sender.posted:2; do
  RUNS=$((RUNS + 1))
  # started directly: it may die before start_daemon would have seen it listening
  CARTGATE_TEST_CRASH_AT=$point "$CG" run -c "$TMP/chaos.conf" 2>>"$TMP/run$RUNS.log" &
  DPID=$!
  PIDS+=("$DPID")
  run_until_dead "run$RUNS" 180 || fail "the daemon never reached $point within 180 s"
  [ "$DRC" = 137 ] || fail "run $RUNS ($point): exit status $DRC, not SIGKILL"
  grep -q "event=\"test.crashpoint\" point=\"${point%%:*}\"" "$TMP/run$RUNS.log" ||
    fail "run $RUNS died without reaching $point"
  ok "killed at $point (run $RUNS); $(q 'SELECT count(*) FROM verdicts') verdicts, $(q 'SELECT count(*) FROM referrals') referrals so far"
done

# ---- seeded random moments ---------------------------------------------------------------------
# where each kill landed, from the store and the run's log at the moment of the kill
declare -A LANDED=()
phase() {
  local log=$1 last_start last_done
  last_start=$(grep -n 'event="poll.start"' "$log" | tail -n1 | cut -d: -f1)
  last_done=$(grep -n 'event="poll.done"' "$log" | tail -n1 | cut -d: -f1)
  if [ -n "$last_start" ] && [ "${last_done:-0}" -lt "$last_start" ]; then echo polling
  elif [ "$(q 'SELECT count(*) FROM daemon_dirty')" != 0 ]; then echo screening
  elif [ "$(q "SELECT count(*) FROM referrals WHERE state IN ('approved','sending')")" != 0 ]; then echo sending
  else echo idle; fi
}
code=$(curl -s -o "$TMP/late.out" -w '%{http_code}' -X POST -H 'Content-Type: application/fhir+json' \
  --data-binary @"$TMP/late.json" "$EHR")
[ "$code" = 200 ] || fail "uploading the late half: HTTP $code"
node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
const bad=b.entry.filter(e=>!/^20[01]/.test(e.response.status)); if (bad.length) { console.log(JSON.stringify(bad[0])); process.exit(1); }' \
  "$TMP/late.out" || fail "the late half was not stored"
ok "the other half of the cohort ($(cat "$TMP/late.count") resources) is in the EHR now"
for k in $(seq 1 "$KILLS"); do
  RUNS=$((RUNS + 1))
  start_daemon "run$RUNS" "$TMP/chaos.conf"
  # 0.3 .. 5.0 s after start: the polls, screening and the send passes overlap
  ms=$((300 + RANDOM % 4700))
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  kill -9 "$DPID" 2>/dev/null
  wait "$DPID" 2>/dev/null
  p=$(phase "$TMP/run$RUNS.log")
  LANDED[$p]=$((${LANDED[$p]:-0} + 1))
done
landed=""
for p in polling screening sending idle; do landed="$landed $p ${LANDED[$p]:-0}"; done
ok "$KILLS random kills (seed $SEED) landed:$landed; $(q 'SELECT count(*) FROM verdicts') verdicts, $(q "SELECT group_concat(state || '=' || n, ' ') FROM (SELECT state, count(*) n FROM referrals GROUP BY state)")"

# ---- drain -----------------------------------------------------------------------------------
curl -s -X DELETE "$CENTER_ADMIN/faults" >/dev/null
RUNS=$((RUNS + 1))
start_daemon "run$RUNS" "$TMP/chaos.conf"
P=$DPID
drained() {
  [ "$(q 'SELECT count(*) FROM verdicts')" = "$N" ] &&
    [ "$(q 'SELECT count(*) FROM daemon_dirty')" = 0 ] && [ "$(q 'SELECT count(*) FROM held')" = 0 ] &&
    [ "$(q "SELECT count(*) FROM referrals WHERE state IN ('approved','sending') OR cancel_requested_ms > 0")" = 0 ]
}
wait_for "every patient screened and every referral out (attempts wait out their backoff)" 420 drained
polls=$(grep -c 'event="poll.done" source="ehr"' "$TMP/run$RUNS.log")
more_polls() { [ "$(grep -c 'event="poll.done" source="ehr"' "$TMP/run$RUNS.log")" -ge $((polls + 2)) ]; }
wait_for "two more polls" 60 more_polls
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "the last run exited $DRC"
ok "drained in run $RUNS and stopped cleanly"

# ---- against the ground truth and the center -------------------------------------------------------
q "SELECT placer_id || '|' || patient_id || '|' || state || '|' || center_id || '|' || coalesce(supersedes, 0) FROM referrals" >"$TMP/referrals.txt"
curl -s "$CENTER/ServiceRequest?_count=1000" >"$TMP/sr.json"
curl -s "$CENTER/Task?_count=1000" >"$TMP/task.json"
node -e '
const fs=require("fs");
const [gtf, rf, srf, tf, kills, seed, runs, landed]=process.argv.slice(1);
const gt=fs.readFileSync(gtf,"utf8").trim().split("\n").map(JSON.parse);
const cand=new Set(gt.filter(g=>g.expected_category==="eligible"||g.expected_category==="possibly_eligible").map(g=>g.patient));
const rows=fs.readFileSync(rf,"utf8").trim().split("\n").filter(Boolean).map(l=>l.split("|"));
const byPlacer=new Map(rows.map(r=>[r[0], {patient:r[1], state:r[2], center:r[3], reroute:r[4]!=="0"}]));
const problems=[];
const ids=(res)=>(res.identifier||[]).map(i=>i.value).filter(v=>byPlacer.has(v));
const bundle=(f)=>{const b=JSON.parse(fs.readFileSync(f,"utf8")); if (b.total>(b.entry||[]).length) problems.push(`${f}: paging`); return (b.entry||[]).map(e=>e.resource);};
const srs=bundle(srf), tasks=bundle(tf);
const seen=new Map(), dups=new Set();
for (const [kind, list] of [["ServiceRequest", srs], ["Task", tasks]])
  for (const r of list) {
    const v=ids(r);
    if (v.length!==1) { problems.push(`${kind}/${r.id} at the center matches ${v.length} referrals of the store`); continue; }
    const k=kind+"|"+v[0];
    if (seen.has(k)) { dups.add(byPlacer.get(v[0]).patient); problems.push(`${kind} ${v[0]} twice at the center`); }
    seen.set(k, r);
  }
// live at a center: a ServiceRequest whose Task is not cancelled
const live=new Map(), open=new Map();
let reroutes=0;
for (const [placer, r] of byPlacer) {
  // open: not over; a re-route proposal still waiting for a person is counted apart
  if (r.reroute && r.state==="pending_approval") reroutes++;
  else if (!["declined","completed","cancelled"].includes(r.state)) open.set(r.patient, (open.get(r.patient)||0)+1);
  const sr=seen.get("ServiceRequest|"+placer), t=seen.get("Task|"+placer);
  if (sr && !t) problems.push(`ServiceRequest ${placer} without its Task`);
  if (sr && t && t.status!=="cancelled") live.set(r.patient, (live.get(r.patient)||[]).concat(r.center));
}
let delivered=0, duplicated=0, lost=0, extra=0;
for (const p of cand) {
  const n=(live.get(p)||[]).length;
  if (n===1 && open.get(p)===1 && !dups.has(p)) delivered++;
  else if (n>1 || open.get(p)>1 || dups.has(p)) { duplicated++; problems.push(`candidate ${p}: ${n} live at centers ${live.get(p)}, ${open.get(p)||0} open in the store`); }
  else { lost++; problems.push(`candidate ${p}: ${n} live at a center, ${open.get(p)||0} open in the store`); }
}
for (const p of new Set([...live.keys(), ...open.keys()]))
  if (!cand.has(p)) { extra++; problems.push(`${p} is not a candidate but has a referral`); }
const line=`chaos: seed ${seed} kills ${Number(kills)+4} (random ${kills}:${landed}; step boundaries 4) runs ${runs} expected ${cand.size} delivered ${delivered} duplicated ${duplicated} lost ${lost} extra ${extra} (store ${rows.length} referral rows, ${reroutes} re-route proposals waiting; center ${srs.length} ServiceRequests, ${tasks.length} Tasks)`;
console.log(line);
if (problems.length) { console.log(problems.slice(0,30).join("\n")); process.exit(1); }
' "$TMP/cohort/ground_truth.ndjson" "$TMP/referrals.txt" "$TMP/sr.json" "$TMP/task.json" "$KILLS" "$SEED" "$RUNS" "$landed" >"$TMP/chaos.out"
rc=$?
cat "$TMP/chaos.out" | head -n 32
[ -n "${CARTGATE_CHAOS_REPORT:-}" ] && head -n1 "$TMP/chaos.out" >>"$CARTGATE_CHAOS_REPORT"
[ $rc = 0 ] || fail "nobody lost, nobody twice: not so (above)"
[ "$(q "SELECT count(*) FROM referrals WHERE state='sent'")" -gt 0 ] || fail "nothing was sent at all"
ok "every candidate has exactly one referral at exactly one center, nobody else has one, nothing twice at the center"
echo "test_chaos: $CHECKS checks passed"
