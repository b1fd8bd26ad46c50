#!/usr/bin/env bash
# The daemon's admin API and process life, with a files source (no FHIR server needed):
# health without token, 401 without/with a wrong token, 404/400/405 JSON errors, worklist and
# patient detail, referral actions (approve, 409 on an illegal move), SIGHUP with a broken
# config keeps the old one (and its token), SIGHUP with a good one applies it, check-config
# exit codes, SIGTERM exits 0.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

mkdir -p "$TMP/drop"
"$CG" synth --seed 5 --patients 30 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"   # nothing listens: sends stay queued
cat >"$TMP/c.conf" <<EOF
// admin test
{
  "site": {"id": "t-admin", "name": "Before Reload Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/cg.db"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]
}
EOF
"$CG" check-config -c "$TMP/c.conf" >/dev/null || fail "check-config rejected a good config"
ok "check-config accepts the test config"
printf '{\n "site": {"id": 1},\n "admin": {"token": "x"}\n}\n' >"$TMP/bad.conf"
"$CG" check-config -c "$TMP/bad.conf" 2>"$TMP/bad.out" && fail "check-config accepted a bad config"
grep -q "bad.conf:2: site.id: expected a string" "$TMP/bad.out" || fail "no site.id error: $(cat "$TMP/bad.out")"
grep -q "bad.conf:3: admin.token: secrets are not accepted" "$TMP/bad.out" || fail "clear secret not refused"
ok "check-config reports every error with file:line and exits non-zero"

start_daemon d1 "$TMP/c.conf"
CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' "$ADMIN/healthz")
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.status)" = ok ] || fail "healthz without token: $CODE"
CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' "$ADMIN/readyz")
{ [ "$CODE" = 200 ] || [ "$CODE" = 503 ]; } && [ "$(jget "$TMP/resp" 'Object.keys(d).join()')" = ready ] ||
  fail "readyz without token: $CODE $(cat "$TMP/resp")"
ok "GET /healthz and /readyz need no token and say nothing but ok / ready"
for p in /metrics /api/v1/patients /api/v1/referrals /nowhere; do
  CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' "$ADMIN$p")
  [ "$CODE" = 401 ] || fail "$p without token: $CODE"
  [ "$(jget "$TMP/resp" d.error.status)" = 401 ] || fail "$p 401 body not JSON: $(cat "$TMP/resp")"
done
CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' -H "Authorization: Bearer wrong" "$ADMIN/metrics")
[ "$CODE" = 401 ] || fail "wrong token accepted"
ok "every other path answers 401 with a JSON error without (or with a wrong) token"

screened() { [ "$(screened_count "$TMP/cg.db" 2>/dev/null)" = 30 ]; }
wait_for "30 patients screened" 60 screened
ready() { api /readyz; [ "$CODE" = 200 ]; }
wait_for "readyz 200" 20 ready
ok "files source ingested the drop and screened 30 patients; /readyz 200"
[ -z "$(ls "$TMP/drop"/*.ndjson 2>/dev/null)" ] && [ -f "$TMP/drop/done/Patient.000.ndjson" ] || fail "drop not moved to done/"
echo '{"resourceType": "Patient", "id": ' >"$TMP/drop/broken.json"
wait_for "broken file moved to failed/" 20 test -f "$TMP/drop/failed/broken.json"
[ -s "$TMP/drop/failed/broken.json.error" ] || fail "no .error note"
ok "files moved to done/, a broken file to failed/ with its error"

api /nowhere; [ "$CODE" = 404 ] && [ "$(jget "$TMP/resp" d.error.status)" = 404 ] || fail "404: $CODE"
api /api/v1/referrals/abc; [ "$CODE" = 400 ] && [ "$(jget "$TMP/resp" d.error.status)" = 400 ] || fail "400 id: $CODE"
api "/api/v1/patients?category=maybe"; [ "$CODE" = 400 ] || fail "400 category: $CODE"
api "/api/v1/patients?limit=0"; [ "$CODE" = 400 ] || fail "400 limit: $CODE"
api /api/v1/referrals/999999; [ "$CODE" = 404 ] || fail "404 referral: $CODE"
api /api/v1/patients/no-such-patient; [ "$CODE" = 404 ] || fail "404 patient: $CODE"
api /api/v1/patients -X POST; [ "$CODE" = 405 ] && [ "$(jget "$TMP/resp" d.error.status)" = 405 ] || fail "405: $CODE"
api /api/v1/referrals/1/approve; [ "$CODE" = 405 ] || fail "GET approve: $CODE"
ok "404, 400 and 405 answers are JSON errors"

api "/api/v1/patients?category=eligible"
[ "$CODE" = 200 ] || fail "worklist $CODE"
n_elig=$(jget "$TMP/resp" d.count)
[ "$n_elig" -gt 0 ] || fail "no eligible patient in the worklist"
[ "$(jget "$TMP/resp" 'd.patients.every(p=>p.category==="eligible" && p.verdict.category==="eligible")')" = true ] || fail "category filter"
db_elig=$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts WHERE category='eligible'")
[ "$n_elig" = "$db_elig" ] || fail "worklist $n_elig vs store $db_elig"
pid=$(jget "$TMP/resp" 'd.patients[0].id')
api "/api/v1/patients/$pid"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'd.profile.patient===d.id && Array.isArray(d.verdict.explanation) && d.referrals.length>=1')" = true ] ||
  fail "patient detail: $(head -c 300 "$TMP/resp")"
ok "worklist by category ($n_elig eligible, same as the store) and patient detail with profile, verdict, explanation, referrals"

api "/api/v1/referrals?state=pending_approval"
n_pending=$(jget "$TMP/resp" d.count)
[ "$n_pending" -gt 0 ] || fail "no pending proposals"
rid=$(jget "$TMP/resp" 'd.referrals[0].id')
api "/api/v1/referrals/$rid/approve" -X POST
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.state)" = approved ] || fail "approve: $CODE $(cat "$TMP/resp")"
api "/api/v1/referrals/$rid/retry" -X POST
[ "$CODE" = 409 ] && [ "$(jget "$TMP/resp" d.error.status)" = 409 ] || fail "retry of approved: $CODE"
rid2=$(sqlite3 "$TMP/cg.db" "SELECT id FROM referrals WHERE state='pending_approval' ORDER BY id LIMIT 1")
api "/api/v1/referrals/$rid2/cancel" -X POST
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.state)" = cancelled ] || fail "cancel: $CODE"
[ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM audit WHERE referral_id=$rid AND actor='admin-api'")" -ge 1 ] || fail "no audit row"
ok "approve, cancel, 409 on an illegal transition; audit rows written"

api /metrics
[ "$CODE" = 200 ] || fail "metrics $CODE"
grep -q '^cartgate_polls_total{source="drop",result="ok"} [1-9]' "$TMP/resp" || fail "polls metric"
grep -q "^cartgate_verdicts{category=\"eligible\"} $db_elig\$" "$TMP/resp" || fail "verdict gauge"
grep -q '^cartgate_referrals{state="approved"} 1$' "$TMP/resp" || fail "referral gauge"
grep -q '^cartgate_outbox_depth 1$' "$TMP/resp" || fail "outbox depth"
grep -q '^cartgate_time_to_referral_seconds_count 0$' "$TMP/resp" || fail "histogram"
ok "metrics: polls, verdicts and referrals agree with the store"

# the operator CLI through the admin API (cartgate referrals ... --admin URL)
export CG_TEST_TOKEN="$TOKEN"
"$CG" referrals list --admin "$ADMIN" --token-env CG_TEST_TOKEN >"$TMP/cli.list" 2>"$TMP/cli.err" || fail "cli list: $(cat "$TMP/cli.err")"
api /api/v1/referrals
api_ids=$(jget "$TMP/resp" 'd.referrals.map(r=>r.id).join(" ")')
cli_ids=$(awk 'NR>1{print $1}' "$TMP/cli.list" | tr '\n' ' ' | sed 's/ $//')
[ -n "$api_ids" ] && [ "$cli_ids" = "$api_ids" ] || fail "cli list ids [$cli_ids] vs API [$api_ids]"
head -n1 "$TMP/cli.list" | grep -q '^id  *state  *center' || fail "cli list header: $(head -n1 "$TMP/cli.list")"
"$CG" referrals list --admin "$ADMIN/" --token-env CG_TEST_TOKEN --state cancelled --json >"$TMP/cli.json" || fail "cli list --json"
[ "$(jget "$TMP/cli.json" 'd.count===1 && d.referrals[0].state==="cancelled"')" = true ] || fail "cli --json: $(head -c 300 "$TMP/cli.json")"
ok "referrals list --admin: same ids as the API ($(echo "$api_ids" | wc -w)); --state and --json pass the API's JSON"
rid3=$(sqlite3 "$TMP/cg.db" "SELECT id FROM referrals WHERE state='pending_approval' ORDER BY id LIMIT 1")
[ -n "$rid3" ] || fail "no pending referral left for the CLI"
"$CG" referrals approve "$rid3" --admin "$ADMIN" --token-env CG_TEST_TOKEN >"$TMP/cli.out" 2>"$TMP/cli.err" || fail "cli approve: $(cat "$TMP/cli.err")"
grep -q "referral $rid3: approve done (state approved)" "$TMP/cli.out" || fail "cli approve output: $(cat "$TMP/cli.out")"
api "/api/v1/referrals/$rid3"; [ "$(jget "$TMP/resp" d.state)" = approved ] || fail "cli approve not applied (API)"
[ "$(sqlite3 "$TMP/cg.db" "SELECT state FROM referrals WHERE id=$rid3")" = approved ] || fail "cli approve not in store"
"$CG" referrals show "$rid3" --admin "$ADMIN" --token-env CG_TEST_TOKEN >"$TMP/cli.out" || fail "cli show"
grep -q "^  state        approved$" "$TMP/cli.out" && grep -q "^referral $rid3$" "$TMP/cli.out" || fail "cli show: $(cat "$TMP/cli.out")"
ok "referrals approve --admin moves pending referral $rid3 to approved (API and store agree); show prints it"
"$CG" referrals approve "$rid3" --admin "$ADMIN" --token-env CG_TEST_TOKEN >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] && grep -q "409 Conflict: referral $rid3: illegal state transition" "$TMP/cli.err" || fail "second approve: rc=$rc $(cat "$TMP/cli.err")"
CG_BAD_TOKEN=wrong "$CG" referrals list --admin "$ADMIN" --token-env CG_BAD_TOKEN >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] && grep -q "401 Unauthorized" "$TMP/cli.err" || fail "wrong token: rc=$rc $(cat "$TMP/cli.err")"
"$CG" referrals show 999999 --admin "$ADMIN" >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] && grep -q "404 Not Found: referral 999999" "$TMP/cli.err" || fail "unknown id: rc=$rc $(cat "$TMP/cli.err")"
CARTGATE_ADMIN_URL="$ADMIN" "$CG" referrals cancel 999999 >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] && grep -q "404 Not Found" "$TMP/cli.err" || fail "env URL / unknown id: rc=$rc $(cat "$TMP/cli.err")"
ok "CLI errors exit 1: second approve -> 409 illegal transition, wrong token -> 401, unknown id -> 404 (URL from \$CARTGATE_ADMIN_URL, token from the default env)"
CARTGATE_ADMIN_URL= "$CG" referrals list >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 2 ] && grep -q "usage:" "$TMP/cli.err" || fail "no --admin/--db: rc=$rc"
"$CG" referrals list --admin http://192.0.2.1:8089 >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] && grep -q "loopback" "$TMP/cli.err" || fail "non-loopback http accepted: rc=$rc"
"$CG" referrals list --db "$TMP/cg.db" >"$TMP/cli.db" || fail "cli --db list"
[ "$(awk 'NR>1{print $1}' "$TMP/cli.db" | wc -l)" = "$(echo "$api_ids" | wc -w)" ] || fail "--db list differs"
ok "no --admin/--db -> usage (exit 2); http to a non-loopback host refused; --db still works beside the daemon"

# SIGHUP with a broken config: refused, the old one (and its token) kept
cp "$TMP/c.conf" "$TMP/c.good"
printf '{ "site": {"id": "t-admin"}, "log": {"level": "loud"} }\n' >"$TMP/c.conf"
kill -HUP "$DPID"
refused() { grep -q 'event="reload.refused"' "$TMP/d1.log"; }
wait_for "reload.refused logged" 10 refused
grep -q 'event="config.error" detail=".*c.conf:1: log.level' "$TMP/d1.log" || fail "config error not logged with file:line"
kill -0 "$DPID" || fail "daemon died on a broken config"
api /healthz; [ "$CODE" = 200 ] || fail "not serving after refused reload"
api /api/v1/referrals; [ "$CODE" = 200 ] || fail "old token not kept"
ok "SIGHUP with a broken config: refused (error with file:line logged), still running on the old one"
sed 's/"site": {"id": "t-admin",/"log": {"level": "debug"}, "site": {"id": "t-admin",/' "$TMP/c.good" >"$TMP/c.conf"
kill -HUP "$DPID"
reloaded() { grep -q 'event="reload.done"' "$TMP/d1.log"; }
wait_for "reload.done logged" 10 reloaded
api /metrics; grep -q '^cartgate_reloads_total{result="ok"} 1$' "$TMP/resp" && grep -q '^cartgate_reloads_total{result="refused"} 1$' "$TMP/resp" || fail "reload counters"
api /api/v1/patients; [ "$CODE" = 200 ] || fail "after reload"
ok "SIGHUP with a good config applies it"
# the pages follow the reloaded configuration (the site's name in every page's header), also
# after the configuration they started with has been freed (a second reload frees the first's)
api /ui/; [ "$CODE" = 200 ] && grep -q "Before Reload Hospital" "$TMP/resp" || fail "worklist page before renaming: $CODE"
sed -i 's/Before Reload Hospital/After Reload Hospital/' "$TMP/c.conf"
for n in 2 3; do
  # the third also changes an option that only a restart applies: named in the log, the rest applied
  [ "$n" = 3 ] && sed -i 's|"store": {"path": "\([^"]*\)"}|"store": {"path": "\1", "busy_timeout_ms": 7000}|' "$TMP/c.conf"
  kill -HUP "$DPID"
  reloads_ok() { [ "$(metric 'cartgate_reloads_total{result="ok"}')" = "$n" ]; }
  wait_for "reload $n" 10 reloads_ok
  sleep 1.5   # the files source polls every second: the replaced configuration is freed after it
  api /ui/; [ "$CODE" = 200 ] && grep -q "After Reload Hospital" "$TMP/resp" && ! grep -q "Before Reload" "$TMP/resp" ||
    fail "worklist page after reload $n: $CODE $(grep -o '<span class="site">.*</span>' "$TMP/resp" | head -c 300)"
done
[ "$(grep -c 'event="reload.restart_needed"' "$TMP/d1.log")" = 1 ] &&
  grep -q 'event="reload.restart_needed" options="store.busy_timeout_ms"' "$TMP/d1.log" ||
  fail "reload.restart_needed: $(grep 'reload.restart_needed' "$TMP/d1.log")"
ok "the web pages show the site's name of the reloaded configuration (two more reloads); a restart-only change is named in the log"

grep -q 'event="daemon.start" .*libevent_backend="' "$TMP/d1.log" || fail "start-up versions not logged"
stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "exit status $DRC after SIGTERM"
grep -q 'event="daemon.stop"' "$TMP/d1.log" || fail "no daemon.stop"
ok "start-up logs library versions and the libevent backend; SIGTERM exits 0"

# criteria changed while the daemon was stopped (an upgrade, or files edited and a restart
# instead of SIGHUP): every verdict made under the old rule set is screened again
cp -r "$SRC/conf/criteria" "$TMP/crit"
sed -i 's/"short": "\([^"]*\)"/"short": "\1, edited"/' "$TMP/crit/axi-cel_LBCL-3L.json"
grep -q ', edited"' "$TMP/crit/axi-cel_LBCL-3L.json" || fail "criteria file not edited"
sed "s|\"dir\": \"$SRC/conf/criteria\"|\"dir\": \"$TMP/crit\"|" "$TMP/c.conf" >"$TMP/c2.conf"
grep -q "$TMP/crit" "$TMP/c2.conf" || fail "second configuration does not name the edited criteria"
rs_of() { sed -n 's/.*event="store.open" .*ruleset="\([^"]*\)".*/\1/p' "$1" | tail -n1; }
old_rs=$(rs_of "$TMP/d1.log")
n_old=$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts WHERE ruleset_hash = '$old_rs'")
[ "$n_old" -gt 0 ] || fail "no verdict under the first rule set ($old_rs)"
start_daemon d2 "$TMP/c2.conf"
opened() { [ -n "$(rs_of "$TMP/d2.log")" ]; }
wait_for "store.open logged" 10 opened
new_rs=$(rs_of "$TMP/d2.log")
[ "$new_rs" != "$old_rs" ] || fail "the edited criteria kept the rule set's hash ($new_rs)"
rescreened() { [ "$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM verdicts WHERE ruleset_hash <> '$new_rs'")" = 0 ]; }
wait_for "every verdict screened again under the changed criteria" 60 rescreened
stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "exit status $DRC after SIGTERM (second start)"
ok "a restart with changed criteria screens all $n_old patients again (rule set $old_rs -> $new_rs)"
"$CG" referrals list --admin "$ADMIN" >"$TMP/cli.out" 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] && grep -q "cannot connect to the admin API at $ADMIN (is the daemon running?)" "$TMP/cli.err" || fail "daemon down: rc=$rc $(cat "$TMP/cli.err")"
ok "referrals list --admin with the daemon stopped: exit 1, cannot connect"
echo "test_daemon_admin: $CHECKS checks passed"
