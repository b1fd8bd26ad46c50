#!/usr/bin/env bash
# Each discovery strategy against the reference FHIR server (search, group, files), with the
# daemon's verdicts compared to `cartgate screen` over the same cohort; incremental polling
# (_lastUpdated cursors, only the changed patient re-screened); SIGTERM mid-poll loses nothing:
# an abandoned poll leaves its cursors where they were and the next start resumes from them,
# a drained poll finishes and persists them. Bulk: Group $export against the server's export; a bulk
# export folder can also be read by the files source (checked with the NDJSON cohort files); bulk
# against a server that requires a bearer token (--token), with the admin API answering while a
# download is in flight, and an export abandoned at stop DELETEd; bulk with SMART Backend Services.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
N=60
cohort "$TMP" 21 $N
expected_verdicts "$TMP/cohort" "$TMP/expected.txt"
[ "$(wc -l <"$TMP/expected.txt")" = $N ] || fail "screen gave $(wc -l <"$TMP/expected.txt") rows"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"

start_server ehr --seed "$TMP/seed" --bulk-delay-ms 2500
EHR=$BASE
start_server slow --seed "$TMP/seed" --fault-mode latency --fault-latency 3000 --fault-path Observation
SLOW=$BASE

conf() { source_conf "$@"; }

# ---- search -------------------------------------------------------------------------------
conf search "{\"name\":\"ehr\",\"kind\":\"search\",\"base_url\":\"$EHR\",\"interval_s\":2,\"page_size\":100}"
start_daemon search "$TMP/search.conf"
SPID=$DPID
SADMIN=$ADMIN
wait_for "search: $N patients screened" 120 all_screened "$TMP/search.db"
verdicts_of "$TMP/search.db" >"$TMP/search.txt"
diff "$TMP/expected.txt" "$TMP/search.txt" >"$TMP/search.diff" || fail "search verdicts differ from cartgate screen: $(head "$TMP/search.diff")"
ok "search: $N patients, every verdict equal to cartgate screen"
n_cursors=$(sqlite3 "$TMP/search.db" "SELECT count(*) FROM cursors WHERE source='ehr' AND key LIKE 'lastUpdated:%'")
[ "$n_cursors" -ge 5 ] || fail "search cursors: $n_cursors"
polled_twice() { [ "$(grep -c 'event="poll.done" source="ehr" kind="search" result="ok"' "$TMP/search.log")" -ge 2 ]; }
wait_for "a second search poll" 30 polled_twice
second=$(grep 'event="poll.done" source="ehr" kind="search" result="ok"' "$TMP/search.log" | sed -n 2p)
echo "$second" | grep -q ' changed="0" ' || fail "second poll re-stored data: $second"
ok "search: $n_cursors _lastUpdated cursors persisted; the next poll stores nothing new ($second)"

# an update on the server reaches the store and re-screens only that patient
pid1=$(head -n1 "$TMP/expected.txt" | cut -d'|' -f1)
before=$(sqlite3 "$TMP/search.db" "SELECT updated_ms FROM verdicts WHERE patient_id='$pid1'")
other_before=$(sqlite3 "$TMP/search.db" "SELECT sum(updated_ms) FROM verdicts WHERE patient_id<>'$pid1'")
cat >"$TMP/obs.json" <<EOF
{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}],"text":"Heart rate"},
 "subject":{"reference":"Patient/$pid1"},"effectiveDateTime":"2026-10-30","valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}
EOF
CODE=$(curl -s -o "$TMP/post.json" -w '%{http_code}' -X POST -H 'Content-Type: application/fhir+json' --data-binary @"$TMP/obs.json" "$EHR/Observation")
[ "$CODE" = 201 ] || fail "POST Observation: $CODE $(head -c 300 "$TMP/post.json")"
new_id=$(jget "$TMP/post.json" d.id)
stored() { [ "$(sqlite3 "$TMP/search.db" "SELECT count(*) FROM resources WHERE type='Observation' AND id='$new_id'")" = 1 ]; }
wait_for "the new Observation in the store" 30 stored
rescreened() { [ "$(sqlite3 "$TMP/search.db" "SELECT updated_ms FROM verdicts WHERE patient_id='$pid1'")" != "$before" ]; }
wait_for "patient re-screened" 30 rescreened
[ "$(sqlite3 "$TMP/search.db" "SELECT sum(updated_ms) FROM verdicts WHERE patient_id<>'$pid1'")" = "$other_before" ] || fail "other patients re-screened"
ok "search: a new Observation on the server is stored and only its patient is re-screened"
ADMIN=$SADMIN
ing=$(metric 'cartgate_resources_ingested_total{source="ehr"}')
rows=$(sqlite3 "$TMP/search.db" "SELECT count(*) FROM resources")
[ "$ing" = "$rows" ] || fail "resources_ingested $ing vs store $rows"
api /metrics
grep -q '^cartgate_requests_total{endpoint="ehr",status="200"} [1-9]' "$TMP/resp" || fail "requests metric"
ok "metrics: resources ingested ($ing) equal the store's rows; requests by endpoint and status"
stop_daemon "$SPID"
[ "$DRC" = 0 ] || fail "search daemon exit $DRC"

# ---- group --------------------------------------------------------------------------------
conf group "{\"name\":\"ehr-group\",\"kind\":\"group\",\"base_url\":\"$EHR\",\"group_id\":\"cohort\",\"interval_s\":2,\"concurrency\":4}"
start_daemon group "$TMP/group.conf"
GPID=$DPID
wait_for "group: $N patients screened" 180 all_screened "$TMP/group.db"
verdicts_of "$TMP/group.db" >"$TMP/group.txt"
diff "$TMP/expected.txt" "$TMP/group.txt" >"$TMP/group.diff" || fail "group verdicts differ: $(head "$TMP/group.diff")"
[ "$(sqlite3 "$TMP/group.db" "SELECT count(*) FROM cursors WHERE source='ehr-group' AND key LIKE 'member:%'")" = $N ] || fail "member cursors"
ok "group: Group/cohort members then per-patient searches; $N verdicts equal to cartgate screen; members remembered"
stop_daemon "$GPID"
[ "$DRC" = 0 ] || fail "group daemon exit $DRC"

# ---- files (the bulk-export layout: one NDJSON file per type) -----------------------------------
mkdir -p "$TMP/drop"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
conf files "{\"name\":\"bulk-drop\",\"kind\":\"files\",\"dir\":\"$TMP/drop\",\"interval_s\":1}"
start_daemon files "$TMP/files.conf"
FPID=$DPID
wait_for "files: $N patients screened" 120 all_screened "$TMP/files.db"
verdicts_of "$TMP/files.db" >"$TMP/files.txt"
diff "$TMP/expected.txt" "$TMP/files.txt" >"$TMP/files.diff" || fail "files verdicts differ: $(head "$TMP/files.diff")"
ok "files: a bulk-export folder (NDJSON per type) gives the same $N verdicts"
stop_daemon "$FPID"

# ---- bulk: Group $export against the reference server ---------------------------------------------
conf bulk "{\"name\":\"ehr-bulk\",\"kind\":\"bulk\",\"base_url\":\"$EHR\",\"group_id\":\"cohort\",\"interval_s\":2}"
start_daemon bulk "$TMP/bulk.conf"
BPID=$DPID
wait_for "bulk: $N patients screened" 120 all_screened "$TMP/bulk.db"
verdicts_of "$TMP/bulk.db" >"$TMP/bulk.txt"
diff "$TMP/expected.txt" "$TMP/bulk.txt" >"$TMP/bulk.diff" || fail "bulk verdicts differ: $(head "$TMP/bulk.diff")"
grep -q 'event="bulk.complete" source="ehr-bulk" status_polls="[1-9]' "$TMP/bulk.log" || fail "no status polling (Retry-After)"
grep -q 'event="bulk.deleted" source="ehr-bulk" status="202"' "$TMP/bulk.log" || fail "export job not deleted"
# one cursor per type (the 10 default types; the types read completely advance), all the manifest's transactionTime
tt=$(sqlite3 "$TMP/bulk.db" "SELECT value FROM cursors WHERE source='ehr-bulk' AND key='transactionTime:Patient'")
[ -n "$tt" ] || fail "no transactionTime cursor"
[ "$(sqlite3 "$TMP/bulk.db" "SELECT count(*) FROM cursors WHERE source='ehr-bulk' AND key LIKE 'transactionTime:%' AND value='$tt'")" = 10 ] ||
  fail "not every type's cursor is the transactionTime: $(sqlite3 "$TMP/bulk.db" "SELECT key, value FROM cursors WHERE source='ehr-bulk'")"
bulk_twice() { [ "$(grep -c 'event="poll.done" source="ehr-bulk" kind="bulk" result="ok"' "$TMP/bulk.log")" -ge 2 ]; }
wait_for "a second bulk poll" 60 bulk_twice
grep 'event="poll.done" source="ehr-bulk" kind="bulk" result="ok"' "$TMP/bulk.log" | sed -n 2p | grep -q 'changed="0" ' || fail "second export (_since) stored data again"
ok "bulk: Group/cohort/\$export (_type, Retry-After status polling, manifest, streamed NDJSON, job deleted); $N verdicts equal to cartgate screen; _since=$tt on the next poll"
stop_daemon "$BPID"

# ---- bulk with bearer auth; the daemon's loop keeps serving while a download waits -------------
# The server requires a bearer token (--token) on every /fhir request, and holds the first output
# file's answer for 4 s: the admin API must answer while that download is in flight.
printf 'bulk-%s-%s\n' "$RANDOM" "$RANDOM" >"$TMP/ehr.token"
chmod 600 "$TMP/ehr.token"
start_server tok --seed "$TMP/seed" --token "$(head -n1 "$TMP/ehr.token")" --bulk-delay-ms 1500 \
  --fault-mode latency --fault-latency 4000 --fault-path '$export-file' --fault-limit 1
TOK=$BASE
TOKADMIN="http://127.0.0.1:$PORT/admin"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$TOK/Patient?_count=1")" = 401 ] || fail "the token server accepts requests without a token"
conf bulkauth "{\"name\":\"ehr-tok\",\"kind\":\"bulk\",\"base_url\":\"$TOK\",\"group_id\":\"cohort\",\"interval_s\":3600,\"auth\":{\"kind\":\"bearer\",\"token_file\":\"$TMP/ehr.token\"}}"
start_daemon bulkauth "$TMP/bulkauth.conf"
TPID=$DPID
manifest_in() { grep -q 'event="bulk.complete" source="ehr-tok"' "$TMP/bulkauth.log"; }
wait_for "bulk (bearer): manifest" 60 manifest_in
api /healthz
[ "$CODE" = 200 ] || fail "admin /healthz during the download: $CODE"
! grep -q 'event="bulk.file" source="ehr-tok"' "$TMP/bulkauth.log" || fail "the first output file was stored before /healthz answered (download blocking the loop, or no latency fault)"
ok "bulk (bearer): the admin API answered while the first output file's download was in flight"
wait_for "bulk (bearer): $N patients screened" 120 all_screened "$TMP/bulkauth.db"
verdicts_of "$TMP/bulkauth.db" >"$TMP/bulkauth.txt"
diff "$TMP/expected.txt" "$TMP/bulkauth.txt" >"$TMP/bulkauth.diff" || fail "bulk (bearer) verdicts differ: $(head "$TMP/bulkauth.diff")"
grep -q 'event="poll.done" source="ehr-tok" kind="bulk" result="ok"' "$TMP/bulkauth.log" || fail "bulk (bearer) poll not ok"
grep -q 'event="bulk.complete" source="ehr-tok" status_polls="[1-9]' "$TMP/bulkauth.log" || fail "bulk (bearer): no status polling"
deleted_tok() { grep -q 'event="bulk.deleted" source="ehr-tok" status="202"' "$TMP/bulkauth.log"; }
wait_for "bulk (bearer): job deleted" 10 deleted_tok
[ -n "$(sqlite3 "$TMP/bulkauth.db" "SELECT value FROM cursors WHERE source='ehr-tok' AND key='transactionTime:Patient'")" ] || fail "bulk (bearer): no cursor"
curl -s "$TOKADMIN/stats" >"$TMP/tokstats.json"
n401=$(jget "$TMP/tokstats.json" 'd.fhir.by_status["401"]||0')
n200=$(jget "$TMP/tokstats.json" 'd.fhir.by_status["200"]||0')
[ "$n401" = 1 ] || fail "bulk (bearer): $n401 requests refused (only this test's own probe should be)"
[ "$n200" -ge 2 ] || fail "bulk (bearer): $n200 requests answered 200"
ok "bulk (bearer auth, --token server): kick-off, status, manifest, files and DELETE all authorised ($n200 x 200, no 401 but the probe); $N verdicts equal to cartgate screen"
stop_daemon "$TPID"
[ "$DRC" = 0 ] || fail "bulk (bearer) daemon exit $DRC"

# an export abandoned by a stop without grace is DELETEd at the server (the cursor stays)
conf bulkstop "{\"name\":\"ehr-tok\",\"kind\":\"bulk\",\"base_url\":\"$TOK\",\"group_id\":\"cohort\",\"interval_s\":3600,\"auth\":{\"kind\":\"bearer\",\"token_file\":\"$TMP/ehr.token\"}}" 0
start_daemon bulkstop "$TMP/bulkstop.conf"
TPID=$DPID
started_tok() { grep -q 'event="bulk.started" source="ehr-tok"' "$TMP/bulkstop.log"; }
wait_for "bulk (bearer): export started" 30 started_tok
curl -s -X DELETE "$TOKADMIN/stats" >/dev/null
stop_daemon "$TPID"
[ "$DRC" = 0 ] || fail "bulk stop exit $DRC"
grep -q 'event="bulk.abandoned" source="ehr-tok"' "$TMP/bulkstop.log" || fail "no bulk.abandoned"
grep -q 'event="bulk.deleted" source="ehr-tok" status="202"' "$TMP/bulkstop.log" || fail "abandoned job not deleted"
curl -s "$TOKADMIN/stats" >"$TMP/tokstats2.json"
[ "$(jget "$TMP/tokstats2.json" 'd.fhir.by_method.DELETE||0')" = 1 ] || fail "server saw no DELETE: $(cat "$TMP/tokstats2.json")"
[ "$(sqlite3 "$TMP/bulkstop.db" "SELECT count(*) FROM cursors WHERE source='ehr-tok' AND key LIKE 'transactionTime%'")" = 0 ] || fail "cursor written by an abandoned export"
ok "bulk (bearer): an export abandoned at stop (grace 0) is DELETEd with the token; no cursor written"

# ---- bulk with SMART Backend Services (RS384 client assertion, token from the server) ----------
command -v openssl >/dev/null || fail "openssl CLI missing"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/bulk-rsa.pem" 2>/dev/null || fail "openssl genpkey"
chmod 600 "$TMP/bulk-rsa.pem"
openssl pkey -in "$TMP/bulk-rsa.pem" -pubout -out "$TMP/bulk-rsa.pub.pem" 2>/dev/null || fail "openssl pkey"
start_server smart --seed "$TMP/seed" --smart-client cartgate-bulk --smart-public-key "$TMP/bulk-rsa.pub.pem" --bulk-delay-ms 500
SM=$BASE
SMADMIN="http://127.0.0.1:$PORT/admin"
conf bulksmart "{\"name\":\"ehr-smart\",\"kind\":\"bulk\",\"base_url\":\"$SM\",\"group_id\":\"cohort\",\"interval_s\":3600,\"auth\":{\"kind\":\"smart\",\"client_id\":\"cartgate-bulk\",\"key_file\":\"$TMP/bulk-rsa.pem\",\"kid\":\"k1\"}}"
start_daemon bulksmart "$TMP/bulksmart.conf"
SMPID=$DPID
wait_for "bulk (SMART): $N patients screened" 120 all_screened "$TMP/bulksmart.db"
verdicts_of "$TMP/bulksmart.db" >"$TMP/bulksmart.txt"
diff "$TMP/expected.txt" "$TMP/bulksmart.txt" >"$TMP/bulksmart.diff" || fail "bulk (SMART) verdicts differ: $(head "$TMP/bulksmart.diff")"
grep -q 'event="poll.done" source="ehr-smart" kind="bulk" result="ok"' "$TMP/bulksmart.log" || fail "bulk (SMART) poll not ok"
curl -s "$SMADMIN/stats" >"$TMP/smstats.json"
[ "$(jget "$TMP/smstats.json" 'd.fhir.by_status["401"]||0')" = 0 ] || fail "bulk (SMART): requests refused"
ntok=$(jget "$TMP/smstats.json" 'd.tokens.issued||0')
[ "$ntok" -ge 1 ] || fail "bulk (SMART): no token issued"
ok "bulk (SMART Backend Services): $ntok token(s) issued, no request refused; $N verdicts equal to cartgate screen"
stop_daemon "$SMPID"
[ "$DRC" = 0 ] || fail "bulk (SMART) daemon exit $DRC"

# ---- SIGTERM mid-poll loses nothing -------------------------------------------------------------
SRC_SLOW="{\"name\":\"slow\",\"kind\":\"search\",\"base_url\":\"$SLOW\",\"interval_s\":3600,\"page_size\":1000}"
conf slow1 "$SRC_SLOW" 30
start_daemon slow1 "$TMP/slow1.conf"
P=$DPID
wait_for "slow: first poll complete" 120 all_screened "$TMP/slow1.db"
c_obs=$(sqlite3 "$TMP/slow1.db" "SELECT value FROM cursors WHERE source='slow' AND key='lastUpdated:Observation'")
[ -n "$c_obs" ] || fail "no Observation cursor after the first poll"
stop_daemon "$P"
# new data on the server, then a start that is stopped while the Observation search is in flight
pid2=$(sed -n 2p "$TMP/expected.txt" | cut -d'|' -f1)
sed "s/Patient\/$pid1/Patient\/$pid2/" "$TMP/obs.json" >"$TMP/obs2.json"
CODE=$(curl -s -o "$TMP/post2.json" -w '%{http_code}' -X POST -H 'Content-Type: application/fhir+json' --data-binary @"$TMP/obs2.json" "$SLOW/Observation")
[ "$CODE" = 201 ] || fail "POST to slow: $CODE"
new2=$(jget "$TMP/post2.json" d.id)
cp "$TMP/slow1.db" "$TMP/slow2.db"
conf slow2 "$SRC_SLOW" 0
start_daemon slow2 "$TMP/slow2.conf"
P=$DPID
inflight() { grep -q 'event="poll.start" source="slow"' "$TMP/slow2.log"; }
wait_for "poll started" 20 inflight
sleep 1
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "abandoning stop exit $DRC"
grep -q 'event="daemon.grace_expired"' "$TMP/slow2.log" || fail "grace not expired (poll was not in flight?)"
[ "$(sqlite3 "$TMP/slow2.db" "SELECT value FROM cursors WHERE source='slow' AND key='lastUpdated:Observation'")" = "$c_obs" ] || fail "cursor advanced by an abandoned poll"
[ "$(sqlite3 "$TMP/slow2.db" "SELECT count(*) FROM resources WHERE id='$new2'")" = 0 ] || fail "Observation stored by the abandoned poll?"
ok "SIGTERM mid-poll (grace 0): exit 0, the abandoned poll left the Observation cursor at $c_obs"
# restart on the same store with a grace period: SIGTERM during the poll drains it
cp "$TMP/slow2.db" "$TMP/slow3.db"
conf slow3 "$SRC_SLOW" 60
start_daemon slow3 "$TMP/slow3.conf"
P=$DPID
inflight3() { grep -q 'event="poll.start" source="slow"' "$TMP/slow3.log"; }
wait_for "poll started" 20 inflight3
sleep 1
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "draining stop exit $DRC"
grep -q 'event="daemon.draining"' "$TMP/slow3.log" || fail "no draining"
grep -q 'event="poll.done" source="slow" kind="search" result="ok"' "$TMP/slow3.log" || fail "in-flight poll not finished"
[ "$(sqlite3 "$TMP/slow3.db" "SELECT count(*) FROM resources WHERE id='$new2'")" = 1 ] || fail "new Observation lost"
c_obs3=$(sqlite3 "$TMP/slow3.db" "SELECT value FROM cursors WHERE source='slow' AND key='lastUpdated:Observation'")
[ "$c_obs3" \> "$c_obs" ] || fail "cursor did not advance: $c_obs3"
[ "$(sqlite3 "$TMP/slow3.db" 'SELECT count(*) FROM daemon_dirty')" = 0 ] || fail "patients left unscreened"
ok "next start resumed from the persisted cursor; SIGTERM during its poll drained it: data stored, cursor $c_obs -> $c_obs3, patient screened"
echo "test_daemon_sources: $CHECKS checks passed"
