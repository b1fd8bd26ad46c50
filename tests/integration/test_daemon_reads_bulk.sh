#!/usr/bin/env bash
# Reading the EHR completely or saying so — bulk sources against the reference server's
# real-EHR quirks (tests/fhir-server README "Quirks"):
# - a manifest with error[] fails the types it names: their cursors stay, what arrived is kept,
#   nothing is screened, the error is logged and counted; the next clean export completes;
# - deleted[] removes resources from the cache and changes the verdict they supported; a
#   patient of whom nothing is left loses the verdict;
# - a multi-file export with one file failing midway recovers by downloading it again;
# - files on another origin with requiresAccessToken false are fetched without the
#   Authorization header (the server refuses it); with the token only from trusted origins;
# - one export job at a time: a kick-off refused because a job runs is retried per
#   Retry-After, and a daemon killed mid-export resumes its job instead of starting another;
# - a server ignoring _since is said once and nobody is re-screened; full_refresh_s.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
reads_setup 40 --bulk-file-max 150
bulk_src() { # EXTRA_JSON [BASE]
  echo "{\"name\":\"ehr\",\"kind\":\"bulk\",\"base_url\":\"${2:-$EHR}\",\"group_id\":\"cohort\",\"interval_s\":2,\"retry_s\":1${1:-},$AUTH}"
}

polls() { grep -c "event=\"poll.done\" source=\"ehr\" kind=\"bulk\" result=\"$2\"" "$TMP/$1.log"; }
fhir() { curl -s -H "Authorization: Bearer $TOK" "$@"; }
same_verdicts() { verdicts_of "$1" >"$1.txt"; diff "$2" "$1.txt" >"$1.diff" || fail "verdicts of $1 differ: $(head "$1.diff")"; }

# ---- error[]: the types concerned fail, their cursor stays, nothing screened ----------------------
quirks '{"bulk_errors":{"types":["Condition"],"text":"export of Condition timed out"}}'
source_conf b1 "$(bulk_src)"
start_daemon b1 "$TMP/b1.conf"
B1=$DPID
DB="$TMP/b1.db"
failed_twice() { [ "$(polls b1 failed)" -ge 2 ]; }
wait_for "two failed exports (error[] for Condition)" 90 failed_twice
grep -q 'event="bulk.error_issue" source="ehr" severity="error" code="exception" types="Condition" fails="yes" text="Condition: export of Condition timed out"' "$TMP/b1.log" ||
  fail "error issue not logged: $(grep bulk.error_issue "$TMP/b1.log" | head -1)"
[ "$(screened_count "$DB")" = 0 ] || fail "$(screened_count "$DB") patients screened without their Conditions"
[ "$(held_of "$DB")" -ge $((N / 2)) ] || fail "held: $(held_of "$DB")"
[ -z "$(cursor_of "$DB" 'transactionTime:Condition')" ] || fail "the Condition cursor moved"
[ -n "$(cursor_of "$DB" 'transactionTime:Observation')" ] || fail "the Observation cursor (complete) did not move"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE type='Observation'")" = 531 ] || fail "arrived data not kept"
[ "$(metric 'cartgate_bulk_error_issues_total{source="ehr"}')" -ge 2 ] || fail "bulk error metric"
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
wait_for "the clean export: $N patients screened" 120 all_screened "$DB"
same_verdicts "$DB" "$TMP/expected.txt"
# the verdicts as stored are `cartgate screen`'s JSON lines byte for byte, without the developers'
# "provenance" (criteria files, references, table rows), which only the screen prints
sqlite3 "$DB" "SELECT verdict_json FROM verdicts ORDER BY patient_id" >"$TMP/stored.ndjson"
node -e '
const fs=require("fs");
const lines=f=>fs.readFileSync(f,"utf8").trim().split("\n");
const want=lines(process.argv[1]).map(l=>{const o=JSON.parse(l);if(!Array.isArray(o.provenance))throw new Error("screen: no provenance");delete o.provenance;return JSON.stringify(o);}).sort();
const got=lines(process.argv[2]);
if(got.some(l=>l.includes("\"provenance\""))) throw new Error("a stored verdict carries provenance");
const gs=got.map(l=>JSON.stringify(JSON.parse(l))).sort();
if(want.length!==gs.length) throw new Error(`${gs.length} stored for ${want.length}`);
for(let i=0;i<want.length;i++) if(want[i]!==gs[i]) throw new Error(`differs:\n${want[i].slice(0,400)}\n${gs[i].slice(0,400)}`);
' "$TMP/expected.txt.ndjson" "$TMP/stored.ndjson" 2>"$TMP/cmp.err" || fail "stored verdicts vs cartgate screen: $(head -c 1200 "$TMP/cmp.err")"
[ -n "$(cursor_of "$DB" 'transactionTime:Condition')" ] && [ "$(held_of "$DB")" = 0 ] || fail "after the clean export"
ok "bulk: error[] naming Condition fails the export (logged, counted): no verdict, Condition cursor stays, other types advance and are kept; the clean export completes with $N verdicts equal to cartgate screen (stored: its JSON without provenance)"

# ---- deleted[]: resources leave the cache and the verdicts they supported change --------------------
E=$(node -e '
const fs=require("fs");const gt=fs.readFileSync(process.argv[1],"utf8").trim().split("\n").map(JSON.parse);
const conds=fs.readFileSync(process.argv[2],"utf8");
const e=gt.find(g=>g.expected_category==="eligible"&&conds.includes("\"Patient/"+g.patient+"\""));
process.stdout.write(e?e.patient:"");' "$TMP/cohort/ground_truth.ndjson" "$TMP/cohort/Condition.000.ndjson")
[ -n "$E" ] && grep -q "^$E|eligible$" "$TMP/expected.txt" || fail "no eligible patient with Conditions ($E)"
fhir "$EHR/Condition?subject=Patient/$E&_count=100" >"$TMP/econd.json"
cids=$(jget "$TMP/econd.json" 'd.entry.map(e=>e.resource.id).join(" ")')
[ -n "$cids" ] || fail "no Conditions of $E on the server"
# what `cartgate screen` says without them
mkdir -p "$TMP/cohort2"
cp "$TMP"/cohort/*.ndjson "$TMP/cohort2/"
grep -v "\"Patient/$E\"" "$TMP/cohort/Condition.000.ndjson" >"$TMP/cohort2/Condition.000.ndjson"
expected_verdicts "$TMP/cohort2" "$TMP/expected2.txt"
want=$(grep "^$E|" "$TMP/expected2.txt" | cut -d'|' -f2)
[ -n "$want" ] && [ "$want" != eligible ] || fail "without its Conditions $E is still '$want'"
n_del=0
for c in $cids; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOK" "$EHR/Condition/$c")" = 200 ] || fail "DELETE Condition/$c"
  n_del=$((n_del + 1))
done
changed_to() { [ "$(sqlite3 "$DB" "SELECT category FROM verdicts WHERE patient_id='$E'")" = "$want" ]; }
wait_for "$E re-screened without its deleted Conditions" 60 changed_to
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE type='Condition' AND patient_id='$E'")" = 0 ] || fail "deleted Conditions still cached"
[ "$(metric 'cartgate_resources_deleted_total{source="ehr"}')" = "$n_del" ] || fail "deleted metric: $(metric 'cartgate_resources_deleted_total{source="ehr"}') vs $n_del"
grep -q "event=\"screen.verdict\" patient=\"$E\" category=\"$want\" previous=\"eligible\"" "$TMP/b1.log" || fail "no verdict change logged for $E"
ok "bulk: deleted[] ($n_del Condition(s) of $E) removes them from the cache; $E goes from eligible to $want, as cartgate screen says without them"

# a patient of whom nothing is left loses the verdict
F=$(sed -n 3p "$TMP/expected.txt" | cut -d'|' -f1)
node -e '
const fs=require("fs"), path=require("path"), [dir, pid]=process.argv.slice(1);
for (const f of fs.readdirSync(dir).filter(n=>n.endsWith(".000.ndjson")))
  for (const l of fs.readFileSync(path.join(dir,f),"utf8").split("\n").filter(Boolean)) {
    const r=JSON.parse(l);
    if (r.resourceType!=="Medication" && (r.id===pid || l.includes("\"Patient/"+pid+"\""))) console.log(r.resourceType+"/"+r.id);
  }' "$TMP/cohort" "$F" >"$TMP/f-refs.txt"
[ -s "$TMP/f-refs.txt" ] || fail "no resources of $F"
while read -r ref; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $TOK" "$EHR/$ref")" = 200 ] || fail "DELETE $ref"
done <"$TMP/f-refs.txt"
gone() { [ "$(sqlite3 "$DB" "SELECT count(*) FROM verdicts WHERE patient_id='$F'")" = 0 ]; }
wait_for "$F's verdict removed" 60 gone
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE patient_id='$F'")" = 0 ] || fail "$F still has cached resources"
grep -q "event=\"screen.verdict\" patient=\"$F\" category=\"none\" previous=.* reason=\"no_data_cached\"" "$TMP/b1.log" || fail "no removal logged for $F"
ok "bulk: every resource of $F deleted at the source -> nothing cached, the verdict removed (logged)"
# from here on the EHR holds the cohort without E's Conditions and without F
grep -v "^$F|" "$TMP/expected2.txt" >"$TMP/expected-now.txt"
N=$((N - 1))
same_verdicts "$DB" "$TMP/expected-now.txt"

# ---- a server ignoring _since: said once, nobody re-screened ---------------------------------------------
sum_before=$(sqlite3 "$DB" "SELECT sum(updated_ms) FROM verdicts")
quirks '{"bulk_ignore_since":true}'
n_ok=$(polls b1 ok)
more_ok() { [ "$(polls b1 ok)" -ge $((n_ok + 2)) ]; }
wait_for "two exports ignoring _since" 90 more_ok
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
[ "$(grep -c 'event="source.since_ignored" source="ehr" kind="bulk"' "$TMP/b1.log")" = 1 ] || fail "since_ignored said $(grep -c since_ignored "$TMP/b1.log") times"
[ "$(metric 'cartgate_source_ignores_since{source="ehr"}')" = 1 ] || fail "ignores_since metric"
[ "$(sqlite3 "$DB" "SELECT sum(updated_ms) FROM verdicts")" = "$sum_before" ] || fail "patients re-screened"
last=$(grep 'event="poll.done" source="ehr" kind="bulk" result="ok"' "$TMP/b1.log" | tail -n1)
[[ "$last" == *' changed="0" '* ]] || fail "re-sent data stored as changed: $last"
ok "bulk: a server ignoring _since is said once (log, metric 1); everything it re-sends is recognised unchanged, nobody re-screened"
stop_daemon "$B1"

# ---- a multi-file export whose file fails midway: downloaded again, the poll completes ----------------
quirks '{"bulk_file_fail":{"how":"truncate","types":["Observation"],"file":4,"limit":1}}'
source_conf b3 "$(bulk_src ',"download_concurrency":3')"
start_daemon b3 "$TMP/b3.conf"
wait_for "b3: $N patients screened" 120 all_screened "$TMP/b3.db"
same_verdicts "$TMP/b3.db" "$TMP/expected-now.txt"
grep -q 'event="bulk.manifest" source="ehr" output="1[0-9]" ' "$TMP/b3.log" || fail "not a multi-file export: $(grep bulk.manifest "$TMP/b3.log")"
[ "$(grep -c 'event="bulk.file_retry" source="ehr" kind="output" type="Observation" attempt="1"' "$TMP/b3.log")" = 1 ] || fail "no retry of the truncated file"
grep -q 'event="bulk.file" source="ehr" kind="output" type="Observation" .* attempt="2"' "$TMP/b3.log" || fail "second attempt not stored"
[ "$(polls b3 failed)" = 0 ] || fail "the first export failed"
curl -s "$QADMIN/quirks" >"$TMP/q.json"
[ "$(jget "$TMP/q.json" 'd.quirks.bulk_file_fail.fired')" = 1 ] || fail "the file did not fail"
stop_daemon "$DPID"
ok "bulk: a multi-file export (3 at once) whose Observation file is cut off midway downloads it again and completes; $N verdicts equal to cartgate screen"

# ---- files on another origin ----------------------------------------------------------------------------
quirks '{"bulk_files":{"origin":"alt","requires_access_token":false}}'
curl -s -X DELETE "$QADMIN/stats" >/dev/null
source_conf b4 "$(bulk_src)"
start_daemon b4 "$TMP/b4.conf"
wait_for "b4: $N patients screened" 120 all_screened "$TMP/b4.db"
same_verdicts "$TMP/b4.db" "$TMP/expected-now.txt"
stop_daemon "$DPID"
n_out=$(grep -m1 'event="bulk.manifest"' "$TMP/b4.log" | sed -n 's/.* output="\([0-9]*\)" .*/\1/p')
grep -q 'event="bulk.manifest" .* requires_access_token="false"' "$TMP/b4.log" || fail "requiresAccessToken false not seen"
curl -s "$QADMIN/stats" >"$TMP/stats.json"
[ "$(jget "$TMP/stats.json" 'd.files.by_status["200"]||0')" = "$n_out" ] && [ "$(jget "$TMP/stats.json" 'd.files.by_status["400"]||0')" = 0 ] ||
  fail "pre-signed files: $(jget "$TMP/stats.json" 'd.files') for $n_out outputs"
ok "bulk: $n_out pre-signed files on $ALT (requiresAccessToken false) fetched without the Authorization header (the server refuses one: 0 x 400)"

quirks '{"bulk_files":{"origin":"alt","requires_access_token":true}}'
source_conf b5 "$(bulk_src)"
start_daemon b5 "$TMP/b5.conf"
failed_once() { [ "$(polls b5 failed)" -ge 1 ]; }
wait_for "b5: a failed export (untrusted origin)" 60 failed_once
grep -q "URL on origin $ALT refused: not the endpoint's origin http://127.0.0.1:$EPORT" "$TMP/b5.log" || fail "refusal does not name the origin"
[ "$(screened_count "$TMP/b5.db")" = 0 ] || fail "screened without the refused files"
stop_daemon "$DPID"
source_conf b5 "$(bulk_src ",\"trusted_origins\":[\"$ALT\"]")"
start_daemon b5b "$TMP/b5.conf"
wait_for "b5: trusted origin, $N patients screened" 120 all_screened "$TMP/b5.db"
same_verdicts "$TMP/b5.db" "$TMP/expected-now.txt"
stop_daemon "$DPID"
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
ok "bulk: files needing the token on $ALT are refused (origin named) unless the origin is trusted; trusted, the export completes"

# ---- one job at a time --------------------------------------------------------------------------------------
quirks '{"bulk_one_job":{"retry_after":1}}'
curl -s -X DELETE "$QADMIN/stats" >/dev/null
CODE=$(curl -s -o /dev/null -D "$TMP/kick.hdr" -w '%{http_code}' -H "Authorization: Bearer $TOK" -H 'Prefer: respond-async' "$EHR/Group/cohort/\$export")
[ "$CODE" = 202 ] || fail "our own kick-off: $CODE"
OURS=$(sed -n 's/^[Cc]ontent-[Ll]ocation: *//p' "$TMP/kick.hdr" | tr -d '\r')
source_conf b6 "$(bulk_src ',"busy_wait_s":120')"
start_daemon b6 "$TMP/b6.conf"
busy_twice() { [ "$(grep -c 'event="bulk.busy" source="ehr" status="429"' "$TMP/b6.log")" -ge 2 ]; }
wait_for "the daemon waiting for the running job" 90 busy_twice
[ "$(screened_count "$TMP/b6.db")" = 0 ] || fail "screened while the export was refused"
curl -s -o /dev/null -X DELETE -H "Authorization: Bearer $TOK" "$OURS"
wait_for "b6: $N patients screened after the other job ended" 120 all_screened "$TMP/b6.db"
same_verdicts "$TMP/b6.db" "$TMP/expected-now.txt"
stop_daemon "$DPID"
curl -s "$QADMIN/requests" >"$TMP/reqs.json"
kick202=$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.method==="GET"&&r.url.startsWith("/Group/cohort/$export")&&r.status==="202").length')
kick429=$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Group/cohort/$export")&&r.status==="429").length')
# ours and the daemon's at least; a slow (sanitizer) build may start its next poll's export
# before it is stopped, which the server only accepts once the previous job is over
[ "$kick202" -ge 2 ] && [ "$kick429" -ge 2 ] || fail "kick-offs: $kick202 accepted, $kick429 refused"
ok "bulk: while another job runs the kick-off is refused (429 x $kick429) and retried per Retry-After, never a second job; once it ended the export completed ($kick202 jobs accepted in all, one at a time: ours, then the daemon's)"

# a daemon killed mid-export resumes its job on restart (another server: the whole cohort)
N=40
start_server slow --seed "$TMP/seed" --token "$TOK" --bulk-delay-ms 8000
SLOW=$BASE
SADMIN="http://127.0.0.1:$PORT/admin"
curl -s -X POST -d '{"bulk_one_job":{"retry_after":1}}' "$SADMIN/quirks" >/dev/null
source_conf b7 "$(bulk_src '' "$SLOW")"
start_daemon b7 "$TMP/b7.conf"
started() { grep -q 'event="bulk.started" source="ehr"' "$TMP/b7.log"; }
wait_for "b7: export started" 60 started
{ kill -9 "$DPID" && wait "$DPID"; } 2>/dev/null
[ -n "$(cursor_of "$TMP/b7.db" job)" ] || fail "the job was not remembered"
start_daemon b7b "$TMP/b7.conf"
wait_for "b7: $N patients screened after the restart" 120 all_screened "$TMP/b7.db"
same_verdicts "$TMP/b7.db" "$TMP/expected.txt"
grep -q 'event="bulk.resumed" source="ehr"' "$TMP/b7b.log" || fail "the job was not resumed"
stop_daemon "$DPID"
curl -s "$SADMIN/requests" >"$TMP/reqs.json"
# the restarted daemon resumed the job before anything else: one kick-off (the first daemon's)
# plus one per export the restarted daemon started on a later poll (a slow machine may reach
# its next poll before it is stopped)
first_ev=$(grep -o -m1 'event="bulk\.\(started\|resumed\)" source="ehr"' "$TMP/b7b.log")
[ "$first_ev" = 'event="bulk.resumed" source="ehr"' ] || fail "after the restart: $first_ev before resuming the job"
later=$(grep -c 'event="bulk.started" source="ehr"' "$TMP/b7b.log")
[ "$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Group/cohort/$export")).map(r=>r.status).join()')" = \
  "$(printf '202%.0s,' $(seq 1 $((1 + later))) | sed 's/,$//')" ] ||
  fail "kick-offs after the crash ($later later export(s) started): $(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Group/cohort/$export")).map(r=>r.status).join()')"
[ -z "$(cursor_of "$TMP/b7.db" job)" ] || fail "the finished job is still remembered"
ok "bulk: a daemon killed (-9) mid-export resumes the same job after the restart: one kick-off in all, $N verdicts equal to cartgate screen"
N=39

# ---- full_refresh_s: every export without _since --------------------------------------------------------
curl -s -X DELETE "$QADMIN/stats" >/dev/null
source_conf b9 "$(bulk_src ',"full_refresh_s":1,"types":["Patient","Condition"]')"
start_daemon b9 "$TMP/b9.conf"
three() { [ "$(polls b9 ok)" -ge 3 ]; }
wait_for "three full exports" 90 three
stop_daemon "$DPID"
curl -s "$QADMIN/requests" >"$TMP/reqs.json"
kicks=$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Group/cohort/$export"))')
[ "$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Group/cohort/$export")).length')" -ge 3 ] &&
  [ "$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Group/cohort/$export")&&r.url.includes("_since")).length')" = 0 ] ||
  fail "full refresh kick-offs: $kicks"
ok "bulk: full_refresh_s exports everything every time (no _since in $(polls b9 ok) exports)"
echo "PASS: $CHECKS checks"
