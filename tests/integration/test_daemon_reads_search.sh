#!/usr/bin/env bash
# Reading the EHR completely or saying so — search sources against the reference server's
# real-EHR quirks (tests/fhir-server README "Quirks"):
# - a search whose pages stop short of Bundle.total fails the poll: nothing is screened, the
#   type's cursor stays, the complete types' cursors move, the patients wait (held), and the
#   next clean poll completes with every verdict equal to `cartgate screen`;
# - data that arrived in a failed poll never reaches a verdict (a page that fails after
#   retries: the patient's new data is cached, the verdict untouched until a poll completes);
# - OperationOutcome warnings inside searchsets are logged and counted;
# - a server ignoring _lastUpdated is said once (log + metric) and nobody is re-screened;
# - paging links on another origin are refused (the origin named) unless trusted;
# - full_refresh_s reads everything again.
# - a poll's pages share one ingest group, committed when the poll waits for a next page
#   (POLL_GROUP_IDLE_MS) without moving the cursor; the poll's end moves it.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
reads_setup 40

faults() { [ "$(curl -s -o "$TMP/f.out" -w '%{http_code}' -X POST -d "$1" "$QADMIN/faults")" = 200 ] || fail "faults $1: $(cat "$TMP/f.out")"; }
# polls NAME SOURCE RESULT: poll.done lines of that result in NAME's log
polls() { grep -c "event=\"poll.done\" source=\"$2\" kind=\"[a-z]*\" result=\"$3\"" "$TMP/$1.log"; }

# ---- truncated paging: the poll fails, nothing is screened, the next clean poll completes -----
quirks '{"search_truncate":{"page":2,"types":["Observation"]}}'
conf_src="{\"name\":\"ehr\",\"kind\":\"search\",\"base_url\":\"$EHR\",\"interval_s\":2,\"retry_s\":1,\"page_size\":50,$AUTH}"
source_conf trunc "$conf_src"
start_daemon trunc "$TMP/trunc.conf"
DB="$TMP/trunc.db"
failed_twice() { [ "$(polls trunc ehr failed)" -ge 2 ]; }
wait_for "two failed polls (truncated Observation paging)" 60 failed_twice
grep -q 'event="poll.search_failed" source="ehr" error=.*Observation: search incomplete: 100 of 531 matches received (Bundle.total) and page 2 has no next link' "$TMP/trunc.log" ||
  fail "no truncation message: $(grep search_failed "$TMP/trunc.log" | head -2)"
[ "$(screened_count "$DB")" = 0 ] || fail "$(screened_count "$DB") patients screened on partial data"
[ "$(held_of "$DB")" = $N ] || fail "held: $(held_of "$DB")"
[ -z "$(cursor_of "$DB" 'lastUpdated:Observation')" ] || fail "the Observation cursor moved"
[ -n "$(cursor_of "$DB" 'lastUpdated:Condition')" ] || fail "the Condition cursor (read completely) did not move"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE type='Condition'")" = 48 ] || fail "arrived data not kept"
[ "$(metric 'cartgate_patients_held{source="ehr"}')" = $N ] || fail "held metric: $(metric 'cartgate_patients_held{source="ehr"}')"
[ "$(metric 'cartgate_polls_total{source="ehr",result="ok"}')" = 0 ] || fail "a truncated poll counted ok"
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
wait_for "the clean poll: $N patients screened" 120 all_screened "$DB"
verdicts_of "$DB" >"$TMP/trunc.txt"
diff "$TMP/expected.txt" "$TMP/trunc.txt" >"$TMP/trunc.diff" || fail "verdicts differ after the clean poll: $(head "$TMP/trunc.diff")"
[ "$(held_of "$DB")" = 0 ] && [ -n "$(cursor_of "$DB" 'lastUpdated:Observation')" ] || fail "after the clean poll: held $(held_of "$DB"), Observation cursor '$(cursor_of "$DB" 'lastUpdated:Observation')'"
ok "search: paging short of Bundle.total (100 of 531) fails every poll: no verdict, $N patients held, the Observation cursor stays, complete types' cursors move, data kept; the clean poll completes, $N verdicts equal to cartgate screen"

# ---- a page failing after retries: the patient's new data is cached, the verdict is not made ----
P1=$(head -n1 "$TMP/expected.txt" | cut -d'|' -f1)
before=$(sqlite3 "$DB" "SELECT updated_ms || category FROM verdicts WHERE patient_id='$P1'")
others=$(sqlite3 "$DB" "SELECT sum(updated_ms) FROM verdicts WHERE patient_id<>'$P1'")
n_failed0=$(polls trunc ehr failed)
faults '{"mode":"status","status":503,"path":"Observation"}'
# a poll already past its Observation pages when the fault went in may still end ok: count the
# ok polls from the first failed one on (polls of a source run one after another)
first_failed() { [ "$(polls trunc ehr failed)" -gt "$n_failed0" ]; }
wait_for "a poll failing on the injected fault" 60 first_failed
n_ok=$(polls trunc ehr ok)
cat >"$TMP/cond.json" <<EOF
{"resourceType":"Condition","subject":{"reference":"Patient/$P1"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},
 "code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003"}],"text":"Hypertension"},"recordedDate":"2026-10-20"}
EOF
CODE=$(curl -s -o "$TMP/post.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $(head -n1 "$TMP/ehr.token")" \
  -H 'Content-Type: application/fhir+json' --data-binary @"$TMP/cond.json" "$EHR/Condition")
[ "$CODE" = 201 ] || fail "POST Condition: $CODE $(head -c 300 "$TMP/post.json")"
cid=$(jget "$TMP/post.json" d.id)
cached() { [ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE type='Condition' AND id='$cid'")" = 1 ]; }
wait_for "the new Condition cached by a failing poll" 60 cached
n_failed=$(polls trunc ehr failed)
more_failed() { [ "$(polls trunc ehr failed)" -ge $((n_failed + 2)) ]; }
wait_for "two more failed polls" 60 more_failed
[ "$(sqlite3 "$DB" "SELECT updated_ms || category FROM verdicts WHERE patient_id='$P1'")" = "$before" ] || fail "$P1 screened on partial data"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM held WHERE patient_id='$P1'")" = 1 ] || fail "$P1 not held"
[ "$(polls trunc ehr ok)" = "$n_ok" ] || fail "a poll with a failed page counted ok"
curl -s -X DELETE "$QADMIN/faults" >/dev/null
rescreened() { [ "$(sqlite3 "$DB" "SELECT updated_ms || category FROM verdicts WHERE patient_id='$P1'")" != "$before" ]; }
wait_for "$P1 re-screened after the clean poll" 60 rescreened
[ "$(sqlite3 "$DB" "SELECT sum(updated_ms) FROM verdicts WHERE patient_id<>'$P1'")" = "$others" ] || fail "other patients re-screened"
[ "$(held_of "$DB")" = 0 ] || fail "still held: $(held_of "$DB")"
ok "search: a page failing after retries (Observation 503) fails the poll; $P1's new Condition is cached but its verdict untouched while polls fail; the clean poll re-screens $P1 only"

# ---- searchset OperationOutcome warnings ---------------------------------------------------------
quirks '{"search_warning":{"text":"search parameter _lastUpdated is only partly indexed","types":["Condition"]}}'
n_ok=$(polls trunc ehr ok)
more_ok() { [ "$(polls trunc ehr ok)" -ge $((n_ok + 2)) ]; }
wait_for "two polls with warnings" 60 more_ok
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
issues=$(metric 'cartgate_search_outcome_issues_total{source="ehr"}')
[ "${issues:-0}" -ge 2 ] || fail "outcome issues metric: '$issues'"
grep -q 'event="fhir.search_outcome" endpoint="ehr" request="GET Condition" severity="warning" code="informational" text="search parameter _lastUpdated is only partly indexed"' "$TMP/trunc.log" ||
  fail "no fhir.search_outcome log line: $(grep search_outcome "$TMP/trunc.log" | head -2)"
ok "search: OperationOutcome warnings inside searchsets logged (text, type, no query) and counted ($issues); polls complete"

# ---- a server ignoring _lastUpdated: said once, nobody re-screened -----------------------------------
sum_before=$(sqlite3 "$DB" "SELECT sum(updated_ms) FROM verdicts")
quirks '{"search_ignore_last_updated":true}'
n_ok=$(polls trunc ehr ok)
wait_for "two polls against a server ignoring _lastUpdated" 60 more_ok
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
[ "$(grep -c 'event="source.since_ignored" source="ehr" kind="search"' "$TMP/trunc.log")" = 1 ] || fail "since_ignored said $(grep -c since_ignored "$TMP/trunc.log") times"
[ "$(metric 'cartgate_source_ignores_since{source="ehr"}')" = 1 ] || fail "ignores_since metric"
last=$(grep 'event="poll.done" source="ehr" kind="search" result="ok"' "$TMP/trunc.log" | tail -n1)
[[ "$last" == *' changed="0" '* && "$last" != *' unchanged="0" '* ]] || fail "the re-sent data was not recognised unchanged: $last"
[ "$(sqlite3 "$DB" "SELECT sum(updated_ms) FROM verdicts")" = "$sum_before" ] || fail "patients re-screened"
ok "search: a server ignoring _lastUpdated is said once (log, metric 1); what it re-sends is recognised unchanged and nobody is re-screened"
stop_daemon "$DPID"

# ---- paging links on another origin: refused, named; followed when trusted ----------------------------
quirks '{"paging_origin":{"origin":"alt"}}'
source_conf offorigin "$conf_src"
start_daemon offorigin "$TMP/offorigin.conf"
failed_once() { [ "$(polls offorigin ehr failed)" -ge 1 ]; }
wait_for "a poll refusing the alt origin" 60 failed_once
grep -q "next link on origin $ALT refused: not the endpoint's origin http://127.0.0.1:$PORT" "$TMP/offorigin.log" ||
  fail "refusal does not name the origin: $(grep search_failed "$TMP/offorigin.log" | head -1)"
[ "$(screened_count "$TMP/offorigin.db")" = 0 ] || fail "screened after a refused next link"
stop_daemon "$DPID"
source_conf offorigin "{\"name\":\"ehr\",\"kind\":\"search\",\"base_url\":\"$EHR\",\"interval_s\":2,\"retry_s\":1,\"page_size\":50,\"trusted_origins\":[\"$ALT\"],$AUTH}"
start_daemon offorigin2 "$TMP/offorigin.conf"
wait_for "trusted origin: $N patients screened" 120 all_screened "$TMP/offorigin.db"
verdicts_of "$TMP/offorigin.db" >"$TMP/offorigin.txt"
diff "$TMP/expected.txt" "$TMP/offorigin.txt" >/dev/null || fail "verdicts differ with a trusted origin"
curl -s "$QADMIN/requests" >"$TMP/reqs.json"
[ "$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.includes("_offset=")&&r.status==="200").length')" -gt 0 ] || fail "no page read from the alt origin"
stop_daemon "$DPID"
curl -s -X DELETE "$QADMIN/quirks" >/dev/null
ok "search: next links on another origin refused, the message naming $ALT; with trusted_origins [$ALT] they are followed and the poll completes"

# ---- full_refresh_s: every poll reads everything --------------------------------------------------------
source_conf full "{\"name\":\"ehr\",\"kind\":\"search\",\"base_url\":\"$EHR\",\"interval_s\":2,\"page_size\":1000,\"full_refresh_s\":1,\"types\":[\"Patient\",\"Condition\"],$AUTH}"
curl -s -X DELETE "$QADMIN/stats" >/dev/null
start_daemon full "$TMP/full.conf"
three() { [ "$(polls full ehr ok)" -ge 3 ]; }
wait_for "three full polls" 60 three
stop_daemon "$DPID"
curl -s "$QADMIN/requests" >"$TMP/reqs.json"
[ "$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.startsWith("/Condition?")).length')" -ge 3 ] || fail "Condition searches"
[ "$(jget "$TMP/reqs.json" 'd.requests.filter(r=>r.url.includes("_lastUpdated")).length')" = 0 ] || fail "a full refresh asked for _lastUpdated"
[ "$(grep -c 'event="poll.done" source="ehr" kind="search" result="ok".* full_refresh="true"' "$TMP/full.log")" -ge 3 ] || fail "full_refresh not logged"
[ -n "$(cursor_of "$TMP/full.db" fullRefresh)" ] || fail "no fullRefresh cursor"
ok "search: full_refresh_s reads everything again (no _lastUpdated in $(polls full ehr ok) polls), recorded in the cursors"
# ---- the ingest group: pages stored so far commit while the poll waits for the next one ----------
# Patient in pages of 10 (40 patients): the fourth page is 4 s late; meanwhile a second
# connection sees the first three pages (the idle timer committed the group; held by the source,
# no cursor), then the poll completes.
faults '{"mode":"latency","latency_ms":4000,"path":"Patient","query":"_offset=30","limit":1}'
source_conf grp "{\"name\":\"ehr\",\"kind\":\"search\",\"base_url\":\"$EHR\",\"interval_s\":3600,\"page_size\":10,\"types\":[\"Patient\"],$AUTH}"
start_daemon grp "$TMP/grp.conf"
DB="$TMP/grp.db"
patients_of() { sqlite3 "$DB" "SELECT count(*) FROM resources WHERE type='Patient'" 2>/dev/null; }
three_pages() { [ "$(patients_of)" = 30 ]; }
wait_for "three pages committed while the fourth is late" 3 three_pages
[ "$(polls grp ehr ok)" = 0 ] || fail "the poll ended before its late page"
[ -z "$(cursor_of "$DB" 'lastUpdated:Patient')" ] || fail "the Patient cursor moved before the last page"
[ "$(held_of "$DB")" = 30 ] || fail "held while the poll runs: $(held_of "$DB")"
grp_done() { [ "$(polls grp ehr ok)" = 1 ]; }
wait_for "the poll with the late page" 30 grp_done
[ "$(patients_of)" = $N ] && [ -n "$(cursor_of "$DB" 'lastUpdated:Patient')" ] ||
  fail "after the poll: $(patients_of) patients, cursor '$(cursor_of "$DB" 'lastUpdated:Patient')'"
stop_daemon "$DPID"
curl -s -X DELETE "$QADMIN/faults" >/dev/null
ok "search: pages of one poll share an ingest group; while the last page is 4 s late the first 30 patients are committed (idle timer), held, no cursor; the poll completes with $N and the cursor"

echo "PASS: $CHECKS checks"
