#!/usr/bin/env bash
# Notifications without PHI: a synth cohort in the reference EHR server, cartgate run (auto
# mode) delivering to a reference center, and two real receivers on 127.0.0.1 — an SMTP server
# (npm smtp-server, STARTTLS with a throwaway certificate made by openssl here, TLS required
# before MAIL FROM) and a webhook receiver (Node http) that answers its first request 503.
# Checks: the new candidates, the daily digest, a referral the center declines (its Task set to
# rejected) and one sent without an answer for days (its row aged in SQLite) each give one
# notice per channel; every notice arrives exactly once (the webhook's after one retry); their
# counts match the store; every mail came over TLS and every body carries a count and a link to
# /ui/ or /ui/referrals and no name, MRN, birth date, address line, telecom or patient id of
# the cohort; a restart sends nothing again; the metrics count what was sent and retried.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
command -v openssl >/dev/null || fail "openssl not installed"
NOTIFY_DIR=$SRC/tests/notify
if [ ! -d "$NOTIFY_DIR/node_modules/smtp-server" ]; then
  echo "SKIP: tests/notify/node_modules missing (scripts/bootstrap runs npm ci there)"
  exit 77
fi
N=40
cohort "$TMP" 21 "$N"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
start_server center
CENTER=$BASE
centers_for "$CENTER" "$TMP/centers.json"

test_ca
server_cert 1
mkdir -p "$TMP/mail" "$TMP/hooks"
# start_node NAME SCRIPT ARGS...: a test server printing "listening PORT"; sets NPORT
start_node() {
  local name=$1
  shift
  node "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=("$!")
  NPORT=""
  for _ in $(seq 1 300); do
    NPORT=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$TMP/$name.out" 2>/dev/null)
    [ -n "$NPORT" ] && return 0
    sleep 0.1
  done
  fail "$name did not start: $(cat "$TMP/$name.err")"
}
start_node smtp "$NOTIFY_DIR/smtp.mjs" "$TMP/tls.crt" "$TMP/tls.key" "$TMP/mail"
SPORT=$NPORT
start_node webhook "$NOTIFY_DIR/webhook.mjs" "$TMP/hooks" 1
WPORT=$NPORT
echo "hook-token-$$-$RANDOM" >"$TMP/hook.token"

cat >"$TMP/n.conf" <<EOF
{
  "site": {"id": "t-notify", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/n.db"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"mode": "auto", "send_interval_s": 1, "task_poll_s": 2},
  "notify": {
    "public_url": "https://cartgate.test.example",
    "candidates": "review",
    "stuck_business_days": 2,
    "digest_hour": 0,
    "retry_s": 1,
    "email": {"url": "smtp://127.0.0.1:$SPORT", "from": "cartgate@test.example",
              "to": ["navigator@test.example", "oncology@test.example"], "ca_file": "$TMP/ca.crt"},
    "webhook": {"url": "http://127.0.0.1:$WPORT/hook", "token_file": "$TMP/hook.token"}
  },
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 5, "page_size": 500}]
}
EOF
"$CG" check-config -c "$TMP/n.conf" >/dev/null 2>"$TMP/cc.err" || fail "check-config: $(cat "$TMP/cc.err")"
start_daemon d1 "$TMP/n.conf"
DB=$TMP/n.db
q() { sqlite3 -cmd ".timeout 5000" "$DB" "$1"; }
settled() {
  [ "$(screened_count "$DB" 2>/dev/null)" = "$N" ] && [ "$(q "SELECT count(*) FROM daemon_dirty")" = 0 ] &&
    [ "$(q "SELECT count(*) FROM referrals WHERE state IN ('pending_approval','approved','sending')")" = 0 ] &&
    [ "$(q "SELECT count(*) FROM referrals WHERE state = 'sent'")" -ge 2 ]
}
wait_for "$N patients screened and their referrals sent" 300 settled
ncand=$(q "SELECT count(*) FROM verdicts WHERE category IN ('eligible','possibly_eligible')")
all_out() {
  [ "$(q "SELECT count(*) FROM notify_notices WHERE kind='digest'")" = 2 ] &&
    [ "$(q "SELECT count(*) FROM notify_notices WHERE status <> 'sent'")" = 0 ]
}
wait_for "the candidate and digest notices delivered" 60 all_out
[ "$(q "SELECT sum(count) FROM notify_notices WHERE kind='urgent_candidates' AND channel='webhook'")" = "$ncand" ] ||
  fail "candidates noticed: $(q "SELECT kind, channel, count FROM notify_notices") vs $ncand candidates"
[ "$(q "SELECT count(*) FROM notify_notices WHERE kind='digest'")" = 2 ] || fail "digest notices: $(q "SELECT kind, channel FROM notify_notices")"
ok "$ncand new candidates and today's digest noticed by email and webhook"

# the center declines one referral (its Task rejected); another waits 10 days without an answer
rid_dec=$(q "SELECT id FROM referrals WHERE state='sent' ORDER BY id LIMIT 1")
rid_old=$(q "SELECT id FROM referrals WHERE state='sent' ORDER BY id LIMIT 1 OFFSET 1")
task=$(q "SELECT center_task_ref FROM referrals WHERE id=$rid_dec")
curl -s "$CENTER/$task" >"$TMP/task.json" || fail "GET $task"
node -e 'const fs=require("fs");const t=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));t.status="rejected";fs.writeFileSync(process.argv[1],JSON.stringify(t));' "$TMP/task.json"
CODE=$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/fhir+json' --data-binary @"$TMP/task.json" "$CENTER/$task")
[ "$CODE" = 200 ] || fail "PUT $task: $CODE $(cat "$TMP/put.out")"
q "UPDATE referrals SET updated_ms = updated_ms - 10*86400000 WHERE id=$rid_old" || fail "ageing referral $rid_old"
more() {
  [ "$(q "SELECT state FROM referrals WHERE id=$rid_dec")" = declined ] &&
    [ "$(q "SELECT count(*) FROM notify_notices WHERE kind IN ('referral_declined','referral_stuck') AND status='sent'")" = 4 ]
}
wait_for "the declined and the unanswered referral noticed" 60 more
[ "$(q "SELECT count || ':' || channel FROM notify_notices WHERE kind='referral_declined' ORDER BY channel" | tr '\n' ' ')" = "1:email 1:webhook " ] ||
  fail "declined notices: $(q "SELECT kind, channel, count FROM notify_notices")"
[ "$(q "SELECT count(*) FROM notify_events WHERE key='referral_unanswered:$rid_old:' || (SELECT updated_ms FROM referrals WHERE id=$rid_old)")" = 1 ] ||
  fail "the unanswered referral is not the event: $(q "SELECT key FROM notify_events WHERE kind='referral_stuck'")"
ok "referral $rid_dec declined at the center and referral $rid_old unanswered for 10 days: one notice each, per channel"

# every notice arrived once: as many mails and webhook bodies as notices sent, none twice
api /metrics
cp "$TMP/resp" "$TMP/metrics1.txt"
stop_daemon "$DPID"
n_mail_notices=$(q "SELECT count(*) FROM notify_notices WHERE channel='email' AND status='sent'")
n_hook_notices=$(q "SELECT count(*) FROM notify_notices WHERE channel='webhook' AND status='sent'")
n_mails=$(ls "$TMP/mail"/*.eml | wc -l)
n_hooks=$(ls "$TMP/hooks"/hook-*.json | wc -l)
[ "$n_mails" = "$n_mail_notices" ] && [ "$n_hooks" = "$n_hook_notices" ] ||
  fail "$n_mails mails for $n_mail_notices email notices, $n_hooks webhook bodies for $n_hook_notices webhook notices"
[ "$(grep -h '^Message-ID:' "$TMP/mail"/*.eml | sort | uniq -d | wc -l)" = 0 ] || fail "a mail arrived twice"
[ "$(cat "$TMP/hooks"/hook-*.json | sort | uniq -d | wc -l)" = 0 ] || fail "a webhook body arrived twice"
[ "$(wc -l <"$TMP/hooks/requests.log")" = $((n_hooks + 1)) ] || fail "webhook requests: $(cat "$TMP/hooks/requests.log")"
[ "$(q "SELECT count(*) FROM notify_notices WHERE channel='webhook' AND attempts=2")" = 1 ] &&
  [ "$(q "SELECT count(*) FROM notify_notices WHERE attempts > 2 OR (channel='email' AND attempts <> 1)")" = 0 ] ||
  fail "attempts: $(q "SELECT id, channel, attempts, last_error FROM notify_notices")"
grep -q 'event="notify.failed" .*channel="webhook" attempt="1" next="retry" error="webhook: HTTP 503' "$TMP/d1.log" || fail "the 503 not logged"
node -e '
const fs=require("fs"), path=require("path");
const dir=process.argv[1], bad=[];
for (const f of fs.readdirSync(dir).filter(f=>f.endsWith(".json") && f.startsWith("mail-"))) {
  const e=JSON.parse(fs.readFileSync(path.join(dir,f),"utf8"));
  if (!e.secure) bad.push(f+": not over TLS");
  if (e.to.join(",")!=="navigator@test.example,oncology@test.example") bad.push(f+": to "+e.to);
}
if (bad.length) { console.log(bad.join("\n")); process.exit(1); }' "$TMP/mail" || fail "mail envelopes"
for f in "$TMP/hooks"/hook-*.json; do
  jget "$f" 'd.site==="t-notify" && Number.isInteger(d.count) && d.count>0 && /^https:\/\/cartgate\.test\.example\/ui\/(referrals)?$/.test(d.link) && typeof d.text==="string"' |
    grep -qx true || fail "webhook body $(cat "$f")"
  [ "$(cat "${f%.json}.auth")" = "Bearer $(cat "$TMP/hook.token")" ] || fail "webhook without the bearer token"
done
grep -L '^Open: https://cartgate.test.example/ui/' "$TMP/mail"/*.eml | grep -q . && fail "a mail without the link"
grep -q "^cartgate_notifications_total{channel=\"webhook\",result=\"sent\"} $n_hooks\$" "$TMP/metrics1.txt" &&
  grep -q '^cartgate_notifications_total{channel="webhook",result="retried"} 1$' "$TMP/metrics1.txt" &&
  grep -q "^cartgate_notifications_total{channel=\"email\",result=\"sent\"} $n_mails\$" "$TMP/metrics1.txt" ||
  fail "metrics: $(grep notifications "$TMP/metrics1.txt")"
ok "$n_mails mails (STARTTLS, both recipients) and $n_hooks webhook bodies (bearer token), one per notice, none twice; the first webhook attempt got 503 and was retried once"

# no PHI of the cohort in any notice
phi_terms "$TMP/cohort/Patient.000.ndjson" "$TMP/phi.txt" all
n_terms=$(wc -l <"$TMP/phi.txt")
[ "$n_terms" -gt "$N" ] || fail "too few PHI terms extracted ($n_terms)"
cat "$TMP/mail"/*.eml "$TMP/hooks"/hook-*.json >"$TMP/all-notices.txt"
if grep -F -w -f "$TMP/phi.txt" "$TMP/all-notices.txt" >"$TMP/phi-hits.txt"; then
  head -5 "$TMP/phi-hits.txt"
  fail "PHI found in the notices ($(wc -l <"$TMP/phi-hits.txt") lines)"
fi
ok "no patient id, name, MRN, birth date, address or telecom of the $N cohort patients in any notice ($n_terms terms)"

# a restart sends nothing again (events are noticed once, ever)
before=$(q "SELECT count(*) FROM notify_notices")
start_daemon d2 "$TMP/n.conf"
# two polls (interval 5 s) after the restart: the notify scan (every 5 s) ran in between
two_polls() { [ "$(grep -c 'event="poll.done" source="ehr"' "$TMP/d2.log")" -ge 2 ]; }
wait_for "two polls after the restart" 60 two_polls
api /metrics
cp "$TMP/resp" "$TMP/metrics.txt"
stop_daemon "$DPID"
[ "$(q "SELECT count(*) FROM notify_notices")" = "$before" ] || fail "the restart queued notices again: $(q "SELECT kind, channel, created_ms FROM notify_notices")"
[ "$(ls "$TMP/mail"/*.eml | wc -l)" = "$n_mails" ] && [ "$(ls "$TMP/hooks"/hook-*.json | wc -l)" = "$n_hooks" ] || fail "something was sent again"
grep -q '^cartgate_notifications_total{channel="webhook",result="sent"} 0$' "$TMP/metrics.txt" &&
  grep -q 'event="notify.start" email="true" webhook="true"' "$TMP/d2.log" ||
  fail "metrics after the restart: $(grep notifications "$TMP/metrics.txt")"
grep -q '^cartgate_notifications_interrupted_total 0$' "$TMP/metrics.txt" || fail "interrupted notices"
ok "a restart noticed nothing again ($before notices in all)"
echo "test_notify: $CHECKS checks passed"
