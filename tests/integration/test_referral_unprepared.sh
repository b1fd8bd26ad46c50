#!/usr/bin/env bash
# A proposal whose texts cannot be composed says why, and an approved one is not held silently
# (referral.h refer_compose_cause, sender.h): the demo DLBCL patient in an EHR reference server,
# cartgate run in approval mode, a reference center.
#   1. The first poll proposes a referral to center X, stored without its texts (nobody has
#      read it yet).
#   2. The centers file drops X; SIGHUP. Reading the proposal through the API composes it: it
#      cannot be (X is no longer ranked), so it says so — compose_cause center_not_candidate
#      and the sentence naming X and the re-route — also in `cartgate referrals show` and the
#      log (cause only) and /metrics (cartgate_referrals_unprepared); audited once
#      ("compose-failed" by "composer"), not on every read.
#   3. X is back but closed (in the directory, not a candidate); SIGHUP; a clinician approves it
#      through the API. The sender does not send it and does not hold it silently: attempts
#      recorded with last_error "could not be prepared: ...", event=referral.unprepared, the
#      backoff between them (no hot loop); the center gets nothing. The patient page says why
#      and offers the re-route form with the centers ranked today.
#   4. The centers file as it was; SIGHUP: the cause clears, it is composed and sent (one
#      ServiceRequest at the center), and the cause is gone from the row and the API.
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
cp "$TMP/centers.json" "$TMP/centers.orig.json"
DB="$TMP/up.db"
PW_ADA='ada: correct horse battery'
echo "$PW_ADA" | "$CG" users add dr.ada --role clinician --password-stdin --db "$DB" >/dev/null 2>&1 || fail "users add"
cat >"$TMP/up.conf" <<EOF
{
  "site": {"id": "t-up", "name": "Unprepared Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$DB"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 1, "task_poll_s": 2, "retry_min_ms": 2000, "retry_max_s": 8},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 1, "page_size": 50}]
}
EOF
q() { sqlite3 -cmd ".timeout 5000" "$DB" "$1"; }
total() { curl -s "$1/$2?_summary=count" >"$TMP/count.json" && jget "$TMP/count.json" d.total; }
reloads() { grep -c 'event="reload.done"' "$TMP/up.log"; }
# edit_centers MODE: the directory without X (drop), with X closed (close), or as it was (orig)
edit_centers() {
  node -e '
const fs=require("fs");
const [src, out, x, mode]=process.argv.slice(1);
const d=JSON.parse(fs.readFileSync(src,"utf8"));
if (mode==="drop") d.centers=d.centers.filter(c=>c.id!==x);
if (mode==="close") d.centers.find(c=>c.id===x).capacity="closed";
fs.writeFileSync(out+".tmp", JSON.stringify(d,null,1));
fs.renameSync(out+".tmp", out);' "$TMP/centers.orig.json" "$TMP/centers.json" "$X" "$1" || fail "editing the centers file ($1)"
  local before
  before=$(reloads)
  kill -HUP "$P"
  reloaded() { [ "$(reloads)" -gt "$before" ]; }
  wait_for "the reload ($1)" 30 reloaded
}

# ---- 1. a proposal stored without its texts --------------------------------------------------
start_daemon up "$TMP/up.conf"
P=$DPID
proposed() { [ "$(q "SELECT count(*) FROM referrals WHERE state='pending_approval'")" = 1 ]; }
wait_for "the proposal" 120 proposed
ID=$(q "SELECT id FROM referrals")
X=$(q "SELECT center_id FROM referrals WHERE id=$ID")
PAT=$(q "SELECT patient_id FROM referrals WHERE id=$ID")
[ "$(q "SELECT package IS NULL AND explanation IS NULL AND compose_cause IS NULL FROM referrals WHERE id=$ID")" = 1 ] ||
  fail "the proposal was composed before anyone read it"
ok "proposal $ID to $X, stored without its texts"

# ---- 2. its center dropped from the directory: it says why -----------------------------------
edit_centers drop
for k in 1 2; do
  api "/api/v1/referrals/$ID"
  [ "$CODE" = 200 ] || fail "GET referral: $CODE $(cat "$TMP/resp")"
  [ "$(jget "$TMP/resp" d.state)" = pending_approval ] || fail "state $(jget "$TMP/resp" d.state)"
  [ "$(jget "$TMP/resp" d.compose_cause)" = center_not_candidate ] || fail "compose_cause: $(cat "$TMP/resp")"
  CE=$(jget "$TMP/resp" d.compose_error)
  case "$CE" in *"$X"*re-route*) ;; *) fail "compose_error does not name $X and the re-route: $CE" ;; esac
  [ "$(jget "$TMP/resp" 'd.explanation === null')" = true ] || fail "an explanation without a composition"
done
[ "$(q "SELECT count(*) FROM audit WHERE referral_id=$ID AND action='compose-failed' AND actor='composer'")" = 1 ] ||
  fail "compose-failed audited $(q "SELECT count(*) FROM audit WHERE referral_id=$ID AND action='compose-failed'") times"
grep -q "event=\"referral.compose_failed\" referral=\"$ID\" patient=\"$PAT\" cause=\"center_not_candidate\"" "$TMP/up.log" ||
  fail "no referral.compose_failed line with the cause"
"$CG" referrals show --db "$DB" "$ID" >"$TMP/show.txt" || fail "referrals show"
grep -q "not prepared center_not_candidate: Center $X is no longer among" "$TMP/show.txt" ||
  fail "referrals show does not say why: $(cat "$TMP/show.txt")"
"$CG" referrals list --db "$DB" --json >"$TMP/list.json" || fail "referrals list"
grep -q '"compose_cause":"center_not_candidate"' "$TMP/list.json" || fail "referrals list --json: $(cat "$TMP/list.json")"
[ "$(metric 'cartgate_referrals_unprepared{cause="center_not_candidate"}')" = 1 ] || fail "unprepared gauge: $(grep unprepared "$TMP/resp")"
ok "center dropped: the API, show, list and /metrics say why (center_not_candidate, the re-route), audited once"

# ---- 3. approved, its center closed: recorded, not sent, not retried in a loop ----------------
edit_centers close
api "/api/v1/referrals/$ID/approve" -X POST -H 'Content-Type: application/json' -d '{"reason":"test"}'
[ "$CODE" = 200 ] || fail "approve: $CODE $(cat "$TMP/resp")"
tried() { [ "$(q "SELECT attempts FROM referrals WHERE id=$ID")" -ge 1 ]; }
wait_for "the sender's first attempt" 30 tried
t0=$(date +%s)
[ "$(q "SELECT state FROM referrals WHERE id=$ID")" = approved ] || fail "state $(q "SELECT state FROM referrals WHERE id=$ID")"
LE=$(q "SELECT last_error FROM referrals WHERE id=$ID")
case "$LE" in "could not be prepared: Center $X is no longer among"*) ;; *) fail "last_error: $LE" ;; esac
grep -q "event=\"referral.unprepared\" referral=\"$ID\" center=\"$X\" cause=\"center_not_candidate\"" "$TMP/up.log" ||
  fail "no referral.unprepared line"
sleep 12
n=$(q "SELECT attempts FROM referrals WHERE id=$ID")
secs=$(($(date +%s) - t0))
# backoff 2, 4, 8, 8 s: at most 4 more in 12+ s (every pass, 1 s apart, would be ~12)
[ "$n" -ge 2 ] && [ "$n" -le 5 ] || fail "$n attempts in ${secs}s (backoff 2-8 s)"
[ "$(q "SELECT count(*) FROM audit WHERE referral_id=$ID AND action='attempt' AND actor='sender'")" = "$n" ] ||
  fail "attempts not audited"
[ "$(total "$CA" ServiceRequest)" = 0 ] || fail "the center got a ServiceRequest"
api "/api/v1/referrals?state=approved"
grep -q '"compose_cause":"center_not_candidate"' "$TMP/resp" || fail "the API list does not say why: $(cat "$TMP/resp")"
# the patient page, signed in as a clinician: the cause in words and the re-route form, which
# offers the centers ranked today and not X
CODE=$(curl -s -D "$TMP/login.h" -o /dev/null -w '%{http_code}' --data-urlencode "username=dr.ada" \
  --data-urlencode "password=$PW_ADA" --data-urlencode "next=/ui/" "$ADMIN/auth/login")
[ "$CODE" = 303 ] || fail "sign-in: $CODE"
COOKIE=$(grep -i '^set-cookie: cartgate_session=' "$TMP/login.h" | tr -d '\r' | sed 's/^[^:]*: \(cartgate_session=[^;]*\).*/\1/')
CODE=$(curl -s -o "$TMP/page.html" -w '%{http_code}' -H "Cookie: $COOKIE" "$ADMIN/ui/patients/$PAT")
[ "$CODE" = 200 ] || fail "patient page: $CODE"
grep -q "id=\"unprepared\" role=\"alert\" data-cause=\"center_not_candidate\" data-referral=\"$ID\"" "$TMP/page.html" ||
  fail "the patient page does not say the referral could not be prepared"
grep -q "could not be prepared.</strong> Center $X is no longer among the centers ranked" "$TMP/page.html" || fail "the cause in words"
node -e '
const h=require("fs").readFileSync(process.argv[1],"utf8");
const f=h.match(/<form[^>]*id="reroute-unprepared"[\s\S]*?<\/form>/);
if (!f) { console.log("no re-route form"); process.exit(1); }
const opts=[...f[0].matchAll(/<option value="([^"]+)"/g)].map(m=>m[1]);
if (!opts.length || opts.includes(process.argv[2])) { console.log("options: "+opts); process.exit(1); }' "$TMP/page.html" "$X" ||
  fail "the re-route form"
ok "approved and unpreparable: stays approved, $n attempts in ${secs}s recorded with the cause, nothing at the center"

# ---- 4. the cause clears: composed and sent -----------------------------------------------------
edit_centers orig
sent() { [ "$(q "SELECT state FROM referrals WHERE id=$ID")" = sent ]; }
wait_for "the referral sent once its center is back" 60 sent
[ "$(total "$CA" ServiceRequest)" = 1 ] || fail "center ServiceRequests: $(total "$CA" ServiceRequest)"
[ "$(q "SELECT compose_cause IS NULL AND compose_error IS NULL AND package IS NOT NULL FROM referrals WHERE id=$ID")" = 1 ] ||
  fail "the cause stayed: $(q "SELECT compose_cause FROM referrals WHERE id=$ID")"
api "/api/v1/referrals/$ID"
[ "$(jget "$TMP/resp" 'd.compose_cause === undefined')" = true ] || fail "the API still shows a cause"
[ "$(q "SELECT center_id FROM referrals WHERE id=$ID")" = "$X" ] || fail "center changed"
[ "$(metric 'cartgate_referrals_unprepared{cause="center_not_candidate"}')" = 0 ] || fail "unprepared gauge stays"
ok "center back: composed and sent to $X (one ServiceRequest), the cause cleared"

stop_daemon "$P"
[ "$DRC" = 0 ] || fail "daemon exit status $DRC"
ok "daemon stopped cleanly"
