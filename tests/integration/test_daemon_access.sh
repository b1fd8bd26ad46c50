#!/usr/bin/env bash
# Who is acting, against the real daemon on its one listener (TLS with a test CA made here,
# 127.0.0.1, random port), users and tokens made with `cartgate users` on the same store:
#   - plain HTTP on a non-loopback bind is refused by check-config and by run (exit 1, the
#     reason with FILE:LINE); TLS or insecure_plain_http make it acceptable
#   - curl with the test CA gets /healthz (HSTS, CSP, nosniff); without the CA the certificate
#     is refused; plain HTTP to the TLS port gets no answer
#   - /healthz and /readyz need no token and say nothing else; everything else 401
#   - password sign-in: the session cookie is HttpOnly; Secure; SameSite=Strict; a state change
#     with the cookie but without the CSRF token -> 403, with it -> 200; another Origin -> 403
#   - a viewer may read but approving -> 403; a clinician may not retry (admin) -> 403
#   - two clinicians approve two referrals (one through `cartgate referrals approve` with her
#     own token file, one with curl and a JSON reason): the API, `referrals show` and the store
#     name each person with user id, role, source address and reason; the log carries the user
#     ids and never the names
#   - a service token acts under the service's own name; decline needs a reason
#   - users and tokens through the API: admin only, no secrets listed, a token shown once,
#     revoked and disabled users refused, every change audited with the admin
#   - no shared admin token is configured at all; SIGHUP loads a renewed certificate
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
command -v openssl >/dev/null || fail "openssl not installed"
unset CARTGATE_ADMIN_TOKEN CARTGATE_TOKEN

# ---- a test CA and a server certificate for 127.0.0.1 ----------------------------------------
test_ca
server_cert 4097

# ---- users on the store the daemon will open ----------------------------------------------------
DB="$TMP/cg.db"
U() { "$CG" users "$@" --db "$DB"; }
PW_ADA='ada: correct horse battery'
PW_BO='bo: staple of the hospital'
echo "$PW_ADA" | U add dr.ada --role clinician --display 'Dr Ada Lovelace' --password-stdin >/dev/null 2>&1 || fail "add ada"
echo "$PW_BO" | U add dr.bo --role clinician --password-stdin >/dev/null 2>&1 || fail "add bo"
echo 'cy: only looking at lists' | U add nurse.cy --role viewer --password-stdin >/dev/null 2>&1 || fail "add cy"
U add it.root --role admin --no-password >/dev/null 2>&1 || fail "add admin"
U add night-bot --role clinician --service >/dev/null 2>&1 || fail "add service"
tok() { U token "$1" --days 2 --label test 2>/dev/null >"$TMP/$1.tok" || fail "token $1"; chmod 600 "$TMP/$1.tok"; }
for u in dr.ada dr.bo nurse.cy it.root night-bot; do tok $u; done
T_BO=$(cat "$TMP/dr.bo.tok"); T_CY=$(cat "$TMP/nurse.cy.tok"); T_ROOT=$(cat "$TMP/it.root.tok"); T_BOT=$(cat "$TMP/night-bot.tok")
UID_ADA=$(sqlite3 "$DB" "SELECT id FROM users WHERE name='dr.ada'")
UID_BO=$(sqlite3 "$DB" "SELECT id FROM users WHERE name='dr.bo'")
ok "users and per-user API tokens made with cartgate users (clinicians, a viewer, an admin, a service)"

mkdir -p "$TMP/drop"
"$CG" synth --seed 5 --patients 30 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"   # nothing listens: sends stay queued
conf() { # FILE ADMIN_JSON
  cat >"$1" <<EOF
{
  "site": {"id": "t-access", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$DB"},
  "log": {"level": "debug"},
  "admin": $2,
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]
}
EOF
}

# ---- plain HTTP on a network address ---------------------------------------------------------
conf "$TMP/plain.conf" '{
    "bind": "0.0.0.0", "port": 0}'
"$CG" check-config -c "$TMP/plain.conf" >"$TMP/cc.out" 2>&1 && fail "check-config accepted plain HTTP on 0.0.0.0"
grep -q "plain.conf:6: admin.bind: plain HTTP on 0.0.0.0 (not a loopback address) is refused" "$TMP/cc.out" ||
  fail "check-config message: $(cat "$TMP/cc.out")"
"$CG" run -c "$TMP/plain.conf" >"$TMP/plainrun.out" 2>&1 &
RP=$!
PIDS+=("$RP")
for _ in $(seq 1 100); do kill -0 "$RP" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RP" 2>/dev/null && fail "cartgate run kept running with plain HTTP on 0.0.0.0"
wait "$RP"; rc=$?
[ "$rc" != 0 ] && grep -q "plain HTTP on 0.0.0.0" "$TMP/plainrun.out" || fail "run: rc=$rc $(cat "$TMP/plainrun.out")"
grep -q 'admin.listen' "$TMP/plainrun.out" && fail "run listened before refusing"
conf "$TMP/proxy.conf" '{"bind": "0.0.0.0", "port": 0, "insecure_plain_http": true}'
"$CG" check-config -c "$TMP/proxy.conf" >/dev/null 2>&1 || fail "insecure_plain_http refused"
conf "$TMP/tlsnet.conf" "{\"bind\": \"0.0.0.0\", \"port\": 0, \"tls_cert_file\": \"$TMP/tls.crt\", \"tls_key_file\": \"$TMP/tls.key\"}"
"$CG" check-config -c "$TMP/tlsnet.conf" >/dev/null 2>&1 || fail "TLS on 0.0.0.0 refused"
ok "plain HTTP on 0.0.0.0 refused by check-config (file:line) and by run (exit $rc, never listened); TLS or insecure_plain_http accepted"

# ---- the TLS listener --------------------------------------------------------------------------
conf "$TMP/c.conf" "{\"port\": 0, \"tls_cert_file\": \"$TMP/tls.crt\", \"tls_key_file\": \"$TMP/tls.key\"}"
"$CG" check-config -c "$TMP/c.conf" >/dev/null || fail "check-config rejected the TLS config"
start_daemon d "$TMP/c.conf"
grep -q 'event="admin.listen" .*tls="true" shared_token="false"' "$TMP/d.log" || fail "listen line: $(grep admin.listen "$TMP/d.log")"
PORT=${ADMIN##*:}
ADMIN="https://127.0.0.1:$PORT"
C() { curl -s --cacert "$TMP/ca.crt" "$@"; }
CODE=$(C -D "$TMP/h" -o "$TMP/resp" -w '%{http_code}' "$ADMIN/healthz")
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" 'JSON.stringify(d)')" = '{"status":"ok"}' ] || fail "healthz over TLS: $CODE"
grep -qi '^strict-transport-security: max-age=' "$TMP/h" && grep -qi "^content-security-policy: .*frame-ancestors 'none'" "$TMP/h" &&
  grep -qi '^x-content-type-options: nosniff' "$TMP/h" || fail "security headers: $(cat "$TMP/h")"
curl -s -o /dev/null "$ADMIN/healthz"; rc=$?
[ "$rc" = 60 ] || fail "curl without the test CA: exit $rc (want 60, certificate refused)"
curl -s -o /dev/null --max-time 10 "http://127.0.0.1:$PORT/healthz"; rc=$?
[ "$rc" != 0 ] || fail "plain HTTP answered on the TLS port"
curl -s -o /dev/null --cacert "$TMP/ca.crt" --tls-max 1.1 "$ADMIN/healthz"; rc=$?
[ "$rc" != 0 ] || fail "TLS 1.1 accepted"
ok "TLS listener: curl with the test CA 200 (HSTS, CSP frame-ancestors none, nosniff); without it exit 60; plain HTTP and TLS 1.1 get no answer"

CODE=$(C -o "$TMP/resp" -w '%{http_code}' "$ADMIN/readyz")
{ [ "$CODE" = 200 ] || [ "$CODE" = 503 ]; } && [ "$(jget "$TMP/resp" 'Object.keys(d).join()')" = ready ] || fail "readyz: $CODE"
for p in /metrics /api/v1/patients /api/v1/referrals /api/v1/referrals/1 /api/v1/audit /nowhere; do
  CODE=$(C -o "$TMP/resp" -w '%{http_code}' "$ADMIN$p")
  [ "$CODE" = 401 ] && [ "$(jget "$TMP/resp" d.error.status)" = 401 ] || fail "$p anonymous: $CODE"
done
CODE=$(C -o /dev/null -w '%{http_code}' -H "Authorization: Bearer cgt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" "$ADMIN/api/v1/referrals")
[ "$CODE" = 401 ] || fail "unknown token: $CODE"
ok "/healthz and /readyz public and say nothing else; every other path 401 (JSON) without a token or with an unknown one"

screened() { [ "$(screened_count "$DB" 2>/dev/null)" = 30 ]; }
wait_for "30 patients screened" 60 screened
pending() { sqlite3 "$DB" "SELECT id FROM referrals WHERE state='pending_approval' ORDER BY id" | sed -n "$1p"; }
R1=$(pending 1); R2=$(pending 2); R3=$(pending 3); R4=$(pending 4); R5=$(pending 5)
[ -n "$R5" ] || fail "fewer than 5 pending proposals"

# ---- a viewer ------------------------------------------------------------------------------------
A() { # TOKEN METHOD PATH [curl args]: status in CODE, body in $TMP/resp
  local t=$1 m=$2 p=$3
  shift 3
  CODE=$(C -o "$TMP/resp" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $t" "$@" "$ADMIN$p")
}
A "$T_CY" GET /api/v1/referrals; [ "$CODE" = 200 ] || fail "viewer list: $CODE"
A "$T_CY" GET "/api/v1/referrals/$R1"; [ "$CODE" = 200 ] || fail "viewer show: $CODE"
A "$T_CY" GET /metrics; [ "$CODE" = 200 ] || fail "viewer metrics: $CODE"
A "$T_CY" POST "/api/v1/referrals/$R1/approve"
[ "$CODE" = 403 ] && [ "$(jget "$TMP/resp" d.error.message)" = "this needs the clinician role (you act as viewer)" ] || fail "viewer approve: $CODE $(cat "$TMP/resp")"
[ "$(sqlite3 "$DB" "SELECT state FROM referrals WHERE id=$R1")" = pending_approval ] || fail "viewer's approve applied"
A "$T_CY" GET /api/v1/audit; [ "$CODE" = 403 ] || fail "viewer audit: $CODE"
ok "a viewer reads the worklist, a referral and the metrics; approving -> 403 (nothing changed); the audit API -> 403"

# ---- a session: cookie flags, CSRF, Origin ----------------------------------------------------
CODE=$(C -D "$TMP/login.h" -o /dev/null -w '%{http_code}' --data-urlencode "username=dr.bo" \
  --data-urlencode "password=$PW_BO" --data-urlencode "next=/api/v1/referrals" "$ADMIN/auth/login")
[ "$CODE" = 303 ] || fail "sign-in: $CODE $(cat "$TMP/login.h")"
SC=$(grep -i '^set-cookie: cartgate_session=' "$TMP/login.h" | tr -d '\r')
[ -n "$SC" ] || fail "no session cookie: $(cat "$TMP/login.h")"
for f in HttpOnly Secure SameSite=Strict 'Path=/'; do
  grep -q "; $f\(;\|\$\)" <<<"$SC" || fail "cookie lacks $f: $SC"
done
grep -qi 'Max-Age\|Expires' <<<"$SC" && fail "session cookie persists: $SC"
COOKIE=$(sed 's/^[^:]*: \(cartgate_session=[^;]*\).*/\1/' <<<"$SC")
CODE=$(C -o "$TMP/sess" -w '%{http_code}' -H "Cookie: $COOKIE" "$ADMIN/auth/session")
[ "$CODE" = 200 ] && [ "$(jget "$TMP/sess" 'd.signed_in && d.user==="dr.bo" && d.role==="clinician"')" = true ] || fail "session: $(cat "$TMP/sess")"
CSRF=$(jget "$TMP/sess" d.csrf)
[ ${#CSRF} -ge 20 ] || fail "no CSRF token"
S() { CODE=$(C -o "$TMP/resp" -w '%{http_code}' -H "Cookie: $COOKIE" "$@"); }
S "$ADMIN/api/v1/referrals/$R2"; [ "$CODE" = 200 ] || fail "session read: $CODE"
S -X POST "$ADMIN/api/v1/referrals/$R2/approve"
[ "$CODE" = 403 ] && [ "$(jget "$TMP/resp" d.error.message)" = "missing CSRF token" ] || fail "no CSRF: $CODE $(cat "$TMP/resp")"
S -X POST -H "X-CSRF-Token: x$CSRF" "$ADMIN/api/v1/referrals/$R2/approve"
[ "$CODE" = 403 ] && [ "$(jget "$TMP/resp" d.error.message)" = "wrong CSRF token" ] || fail "wrong CSRF: $CODE"
S -X POST -H "X-CSRF-Token: $CSRF" -H "Origin: https://evil.example" "$ADMIN/api/v1/referrals/$R2/approve"
[ "$CODE" = 403 ] || fail "foreign Origin: $CODE"
[ "$(sqlite3 "$DB" "SELECT state FROM referrals WHERE id=$R2")" = pending_approval ] || fail "refused approve applied"
S -X POST -H "X-CSRF-Token: $CSRF" -H "Origin: $ADMIN" -H 'Content-Type: application/json' \
  -d '{"reason":"second line within 12 months; patient agrees"}' "$ADMIN/api/v1/referrals/$R2/approve"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.state)" = approved ] || fail "session approve with CSRF: $CODE $(cat "$TMP/resp")"
ok "sign-in: session cookie HttpOnly; Secure; SameSite=Strict; Path=/ (no Max-Age); a state change without (or with a wrong) CSRF token -> 403, from another Origin -> 403, with it -> 200"

# ---- two clinicians approve two referrals --------------------------------------------------------
"$CG" referrals approve "$R1" --admin "$ADMIN" --ca-file "$TMP/ca.crt" --token-file "$TMP/dr.ada.tok" \
  --reason "relapse 8 months after R-CHOP" >"$TMP/cli.out" 2>"$TMP/cli.err" || fail "cli approve: $(cat "$TMP/cli.err")"
grep -q "referral $R1: approve done (state approved)" "$TMP/cli.out" || fail "cli approve: $(cat "$TMP/cli.out")"
"$CG" referrals approve "$R3" --admin "$ADMIN" --token-file "$TMP/dr.ada.tok" >/dev/null 2>"$TMP/cli.err"; rc=$?
[ "$rc" = 1 ] || fail "https without the CA accepted by the CLI"
A "$T_BO" POST "/api/v1/referrals/$R3/approve" -H 'Content-Type: application/json' -d '{"reason":"discussed at tumor board"}'
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.state)" = approved ] || fail "bo approve: $CODE $(cat "$TMP/resp")"
A "$T_CY" GET "/api/v1/referrals/$R1"
[ "$(jget "$TMP/resp" "(()=>{const a=d.audit.filter(x=>x.action==='approve');return a.length===1&&a[0].actor==='dr.ada'&&a[0].user_id===$UID_ADA&&a[0].role==='clinician'&&a[0].source==='127.0.0.1'&&a[0].reason==='relapse 8 months after R-CHOP'&&a[0].from==='pending_approval'&&a[0].to==='approved'&&/^20..-..-..T/.test(a[0].time)})()")" = true ] ||
  fail "API audit of $R1: $(jget "$TMP/resp" 'JSON.stringify(d.audit)')"
A "$T_CY" GET "/api/v1/referrals/$R3"
[ "$(jget "$TMP/resp" "(()=>{const a=d.audit.filter(x=>x.action==='approve');return a.length===1&&a[0].actor==='dr.bo'&&a[0].user_id===$UID_BO&&a[0].role==='clinician'&&a[0].reason==='discussed at tumor board'})()")" = true ] ||
  fail "API audit of $R3: $(jget "$TMP/resp" 'JSON.stringify(d.audit)')"
[ "$(sqlite3 "$DB" "SELECT actor||'|'||user_id||'|'||role||'|'||source FROM audit WHERE referral_id=$R1 AND action='approve'")" = "dr.ada|$UID_ADA|clinician|127.0.0.1" ] ||
  fail "store audit of $R1"
[ "$(sqlite3 "$DB" "SELECT actor||'|'||user_id||'|'||reason FROM audit WHERE referral_id=$R3 AND action='approve'")" = "dr.bo|$UID_BO|discussed at tumor board" ] ||
  fail "store audit of $R3"
[ "$(sqlite3 "$DB" "SELECT actor||'|'||user_id FROM audit WHERE referral_id=$R2 AND action='approve'")" = "dr.bo|$UID_BO" ] || fail "session approve audit"
"$CG" referrals show "$R1" --admin "$ADMIN" --ca-file "$TMP/ca.crt" --token-file "$TMP/nurse.cy.tok" >"$TMP/show.out" 2>"$TMP/cli.err" || fail "cli show: $(cat "$TMP/cli.err")"
grep -q "dr.ada  *approve  *pending_approval -> approved  \[clinician, user $UID_ADA, from 127.0.0.1\]  reason: relapse 8 months after R-CHOP" "$TMP/show.out" ||
  fail "cli show trail: $(cat "$TMP/show.out")"
"$CG" referrals show "$R3" --db "$DB" >"$TMP/showdb.out" || fail "show --db"
grep -q "dr.bo  *approve .*\[clinician, user $UID_BO, from 127.0.0.1\]  reason: discussed at tumor board" "$TMP/showdb.out" || fail "show --db trail: $(cat "$TMP/showdb.out")"
grep -q "user=\"$UID_ADA\"" "$TMP/d.log" && grep -q "event=\"referral.state\" referral=\"$R3\" .*user=\"$UID_BO\" role=\"clinician\"" "$TMP/d.log" || fail "log lacks user ids"
grep -Eq 'dr\.ada|dr\.bo|Lovelace' "$TMP/d.log" && fail "a name reached the log: $(grep -E 'dr\.ada|dr\.bo|Lovelace' "$TMP/d.log" | head -3)"
ok "two clinicians approve $R1 (CLI, own token file) and $R3 (curl): API, referrals show (API and --db) and store name each with user id, role, 127.0.0.1, reason; the log has user ids, no names"

# ---- services, roles, decline -----------------------------------------------------------------
A "$T_BOT" POST "/api/v1/referrals/$R4/approve"
[ "$CODE" = 200 ] || fail "service approve: $CODE"
[ "$(sqlite3 "$DB" "SELECT actor FROM audit WHERE referral_id=$R4 AND action='approve'")" = night-bot ] || fail "service not audited by its name"
A "$T_BO" POST "/api/v1/referrals/$R5/decline"
[ "$CODE" = 400 ] && grep -q "needs a reason" "$TMP/resp" || fail "decline without reason: $CODE $(cat "$TMP/resp")"
A "$T_BO" POST "/api/v1/referrals/$R5/decline" --data-urlencode "reason=patient chose hospice care"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.state)" = cancelled ] || fail "decline: $CODE $(cat "$TMP/resp")"
[ "$(jget "$TMP/resp" "d.audit.some(x=>x.action==='decline'&&x.actor==='dr.bo'&&x.reason==='patient chose hospice care')")" = true ] || fail "decline audit"
A "$T_BO" POST "/api/v1/referrals/$R1/retry"
[ "$CODE" = 403 ] || fail "clinician retry: $CODE"
A "$T_ROOT" POST "/api/v1/referrals/$R1/retry"
[ "$CODE" = 409 ] || fail "admin retry of an approved referral: $CODE"
A "$T_ROOT" POST "/api/v1/referrals/$(pending 1)/approve"
[ "$CODE" = 403 ] || fail "admin approve (a clinical act): $CODE"
A "$T_ROOT" GET "/api/v1/audit?limit=1000"
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" "d.audit.some(x=>x.action==='sign-in'&&x.actor==='dr.bo'&&x.user_id===$UID_BO&&x.source==='127.0.0.1')")" = true ] ||
  fail "audit API lacks the sign-in: $CODE"
ok "a service token acts under its own name (night-bot); decline needs a reason (400) then audits it; retry needs admin (403 for a clinician), approve is not an admin's (403); the audit API shows the sign-in"

# ---- users and tokens through the API (admin) ----------------------------------------------------
A "$T_BO" GET /api/v1/users; [ "$CODE" = 403 ] || fail "clinician lists users: $CODE"
A "$T_ROOT" GET /api/v1/users
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" "d.users.map(u=>u.name+':'+u.role+':'+u.kind).join(',')")" = \
  "dr.ada:clinician:person,dr.bo:clinician:person,it.root:admin:person,night-bot:clinician:service,nurse.cy:viewer:person" ] ||
  fail "users: $CODE $(cat "$TMP/resp")"
grep -q 'scrypt' "$TMP/resp" && fail "a password hash in the users answer"
A "$T_ROOT" POST /api/v1/users/dr.bo/tokens -H 'Content-Type: application/json' -d '{"days":1,"role":"viewer","label":"ward laptop"}'
[ "$CODE" = 201 ] || fail "token create: $CODE $(cat "$TMP/resp")"
NEWTOK=$(jget "$TMP/resp" d.token); NEWID=$(jget "$TMP/resp" d.id)
[[ "$NEWTOK" =~ ^cgt_ ]] || fail "token shape"
A "$NEWTOK" GET "/api/v1/referrals/$R1"; [ "$CODE" = 200 ] || fail "new token read: $CODE"
A "$NEWTOK" POST "/api/v1/referrals/$(pending 1)/approve"; [ "$CODE" = 403 ] || fail "viewer token of a clinician approved: $CODE"
A "$T_ROOT" GET /api/v1/users/dr.bo/tokens
[ "$(jget "$TMP/resp" "d.tokens.some(t=>t.id===$NEWID&&t.role==='viewer'&&t.label==='ward laptop'&&t.last_used!==null)")" = true ] ||
  fail "tokens list: $(cat "$TMP/resp")"
grep -q "$NEWTOK" "$TMP/resp" && fail "token secret listed"
A "$T_ROOT" POST "/api/v1/users/dr.bo/tokens/$NEWID/revoke"; [ "$CODE" = 200 ] || fail "revoke: $CODE"
A "$NEWTOK" GET "/api/v1/referrals/$R1"; [ "$CODE" = 401 ] || fail "revoked token still works: $CODE"
A "$T_ROOT" POST "/api/v1/users/dr.bo/tokens/$NEWID/revoke"; [ "$CODE" = 409 ] || fail "second revoke: $CODE"
A "$T_ROOT" POST /api/v1/users/nurse.cy/disable; [ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.disabled)" = true ] || fail "disable: $CODE"
A "$T_CY" GET /api/v1/referrals; [ "$CODE" = 401 ] || fail "disabled user's token works: $CODE"
A "$T_ROOT" POST /api/v1/users/nurse.cy/enable; [ "$CODE" = 200 ] || fail "enable: $CODE"
A "$T_ROOT" POST /api/v1/users/nurse.cy/role -H 'Content-Type: application/json' -d '{"role":"surgeon"}'; [ "$CODE" = 400 ] || fail "bad role: $CODE"
A "$T_ROOT" POST /api/v1/users/nobody/disable; [ "$CODE" = 404 ] || fail "unknown user: $CODE"
[ "$(sqlite3 "$DB" "SELECT group_concat(action, ',') FROM (SELECT action FROM audit WHERE actor='it.root' AND referral_id IS NULL ORDER BY id)")" = \
  "token-create,token-revoke,user-disable,user-enable" ] || fail "admin changes audit: $(sqlite3 "$DB" "SELECT actor, action FROM audit WHERE referral_id IS NULL")"
ok "users and tokens through the API (admin only): list without secrets, a token shown once and capped to its role, listed without secret, revoked (then 401), disable/enable (401 while disabled), unknown user 404; each change audited with the admin"

# ---- SIGHUP loads a renewed certificate ------------------------------------------------------------
serial() { openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$TMP/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -serial; }
[ "$(serial)" = "serial=1001" ] || fail "first certificate: $(serial)"
server_cert 4098
kill -HUP "$DPID"
reloaded() { grep -q 'event="reload.done"' "$TMP/d.log"; }
wait_for "reload.done" 10 reloaded
grep -q 'event="serve.tls_reloaded"' "$TMP/d.log" || fail "no tls_reloaded"
[ "$(serial)" = "serial=1002" ] || fail "renewed certificate not served: $(serial)"
CODE=$(C -o /dev/null -w '%{http_code}' "$ADMIN/healthz"); [ "$CODE" = 200 ] || fail "after reload: $CODE"
ok "SIGHUP: the renewed certificate (serial 1002) is served"

stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "exit status $DRC"
echo "test_daemon_access: $CHECKS checks passed"
