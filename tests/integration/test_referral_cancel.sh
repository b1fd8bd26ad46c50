#!/usr/bin/env bash
# A person cancels a referral already at its center (issue #12): the demo DLBCL patient in an
# EHR reference server, cartgate run in auto mode, a second reference server as the center.
#   1. The referral is sent: one ServiceRequest and one Task at the center.
#   2. A clinician cancels it through the API with her own token and a reason: the answer is
#      200, the referral still `sent` with `cancel_requested` (the center has not heard yet),
#      audited `cancel-requested` with her name, user id, role and reason.
#   3. The sender sets the Task's status to cancelled at the center (If-Match), and only then
#      the referral is `cancelled` (audited `cancel-at-center`); the log names the user by id.
#   4. The episode is closed: later polls of the same data propose nothing; the center keeps
#      one ServiceRequest and one Task.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
mkdir -p "$TMP/seed"
demo_seed "$TMP/seed/demo.ndjson"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
start_server center
CA=$BASE
centers_for "$CA" "$TMP/centers.json"
DB="$TMP/cx.db"
"$CG" users add dr.ada --role clinician --display 'Dr Ada Lovelace' --no-password --db "$DB" >/dev/null 2>&1 || fail "users add"
"$CG" users token dr.ada --days 2 --label test --db "$DB" 2>/dev/null >"$TMP/ada.tok" || fail "token"
T_ADA=$(cat "$TMP/ada.tok")
UID_ADA=$(sqlite3 "$DB" "SELECT id FROM users WHERE name='dr.ada'")
cat >"$TMP/cx.conf" <<EOF
{
  "site": {"id": "t-cx", "name": "Cancel Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
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

start_daemon cx "$TMP/cx.conf"
sent() { [ "$(q "SELECT count(*) FROM referrals WHERE state='sent'")" = 1 ]; }
wait_for "the referral sent" 120 sent
ID=$(q "SELECT id FROM referrals")
TASK=$(q "SELECT center_task_ref FROM referrals WHERE id=$ID")
[ -n "$TASK" ] && [ "$(total "$CA" ServiceRequest)" = 1 ] && [ "$(total "$CA" Task)" = 1 ] || fail "at the center: $(total "$CA" ServiceRequest) SR, task '$TASK'"
ok "referral $ID sent: one ServiceRequest and $TASK at the center"

CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' -X POST -H "Authorization: Bearer $T_ADA" \
  -H 'Content-Type: application/json' -d '{"reason": "the patient chose a center nearer home"}' \
  "$ADMIN/api/v1/referrals/$ID/cancel")
[ "$CODE" = 200 ] || fail "cancel: HTTP $CODE $(cat "$TMP/resp")"
st=$(jget "$TMP/resp" d.state)
case "$st" in
  sent) [ -n "$(jget "$TMP/resp" 'd.cancel_requested||""')" ] || fail "no cancel_requested in $(cat "$TMP/resp")" ;;
  cancelled) ;; # the sender was quicker than the answer
  *) fail "state after cancel: $st" ;;
esac
row=$(q "SELECT actor || '|' || user_id || '|' || role || '|' || reason || '|' || from_state || '|' || to_state FROM audit WHERE referral_id=$ID AND action='cancel-requested'")
[ "$row" = "dr.ada|$UID_ADA|clinician|the patient chose a center nearer home|sent|sent" ] || fail "audit of the request: '$row'"
ok "a clinician's cancel of a sent referral: 200 ($st), audited cancel-requested with her name, user id, role and reason"

cancelled() { [ "$(q "SELECT state FROM referrals WHERE id=$ID")" = cancelled ]; }
wait_for "the referral cancelled at its center" 120 cancelled
curl -s "$CA/$TASK" >"$TMP/task.json"
[ "$(jget "$TMP/task.json" d.status)" = cancelled ] || fail "Task at the center: $(jget "$TMP/task.json" d.status)"
[ "$(q "SELECT count(*) FROM audit WHERE referral_id=$ID AND action='cancel-at-center' AND to_state='cancelled'")" = 1 ] || fail "no cancel-at-center audit row"
[ "$(q "SELECT cancel_requested_ms FROM referrals WHERE id=$ID")" = 0 ] || fail "cancel request left"
r_at=$(q "SELECT id FROM audit WHERE referral_id=$ID AND action='cancel-requested'")
c_at=$(q "SELECT id FROM audit WHERE referral_id=$ID AND action='cancel-at-center'")
[ "$r_at" -lt "$c_at" ] || fail "audit order"
grep -q "event=\"referral.cancel_requested\" referral=\"$ID\" state=\"sent\" user=\"$UID_ADA\" role=\"clinician\"" "$TMP/cx.log" ||
  fail "no referral.cancel_requested log line with the user id"
grep -q "event=\"referral.cancelled_at_center\" referral=\"$ID\"" "$TMP/cx.log" || fail "no referral.cancelled_at_center"
grep -q 'Lovelace' "$TMP/cx.log" && fail "the log names the person"
ok "the sender cancelled $TASK at the center (Task.status cancelled), then the referral (audit cancel-requested before cancel-at-center)"

polls_before=$(grep -c 'event="poll.done" source="ehr"' "$TMP/cx.log")
more_polls() { [ "$(grep -c 'event="poll.done" source="ehr"' "$TMP/cx.log")" -ge $((polls_before + 3)) ]; }
wait_for "three more polls" 60 more_polls
CODE=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "$ADMIN/api/v1/patients/$(q "SELECT patient_id FROM referrals WHERE id=$ID")/rescreen")
[ "$CODE" = 202 ] || fail "rescreen: $CODE"
wait_for "two more polls" 60 sh -c "[ \$(grep -c 'event=\"poll.done\" source=\"ehr\"' '$TMP/cx.log') -ge $((polls_before + 5)) ]"
[ "$(q "SELECT count(*) FROM referrals")" = 1 ] || fail "a new referral after the cancel: $(q "SELECT id, state FROM referrals")"
[ "$(total "$CA" ServiceRequest)" = 1 ] && [ "$(total "$CA" Task)" = 1 ] || fail "the center got more"
stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "daemon exit $DRC"
ok "the episode stays closed: later polls and a rescreen propose nothing; the center keeps one ServiceRequest and one Task"
echo "PASS: $CHECKS checks"
