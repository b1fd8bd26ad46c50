#!/usr/bin/env bash
# Hospital sign-in through the daemon itself: `cartgate run` configured with oidc.* (client
# secret from a file) on its TLS listener, a real OpenID provider on loopback (the npm package
# oidc-provider, tests/oidc-provider/provider.mjs) and a driver playing the browser
# (signin.mjs, the code flow with PKCE, state and nonce):
#   - dr.grace (group oncology) signs in: provisioned as a clinician, and with her session and
#     CSRF token approves a referral; the audit names her (user id, role, source), the log
#     carries her user id only
#   - nurse.kim (group nurses) signs in as a viewer: reading works, approving -> 403
#   - bill.billing (no mapped group) is refused, and the refusal is audited
#   - the sign-in page offers the provider under oidc.label
# Skips when tests/oidc-provider/node_modules is missing (scripts/bootstrap).
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
OIDC_DIR="$SRC/tests/oidc-provider"
[ -d "$OIDC_DIR/node_modules/oidc-provider" ] || { echo "SKIP: $OIDC_DIR/node_modules missing (run scripts/bootstrap)"; exit 77; }
unset CARTGATE_ADMIN_TOKEN CARTGATE_TOKEN

test_ca
server_cert 8193
DPORT=$(free_port)
[ -n "$DPORT" ] || fail "no free port"
CG_URL="https://127.0.0.1:$DPORT"
printf 'oidc-secret-%s-%s\n' "$RANDOM" "$RANDOM" >"$TMP/oidc.secret"
chmod 600 "$TMP/oidc.secret"
node "$OIDC_DIR/provider.mjs" --port 0 --client-secret "$(head -n1 "$TMP/oidc.secret")" \
  --redirect-uri "$CG_URL/auth/oidc/callback" >"$TMP/idp.out" 2>"$TMP/idp.err" &
PIDS+=("$!")
IPORT=""
for _ in $(seq 1 200); do
  IPORT=$(head -n1 "$TMP/idp.out" 2>/dev/null)
  [ -n "$IPORT" ] && break
  sleep 0.1
done
[ -n "$IPORT" ] || fail "the OpenID provider did not start"

DB="$TMP/cg.db"
mkdir -p "$TMP/drop"
"$CG" synth --seed 5 --patients 30 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
cat >"$TMP/c.conf" <<EOF
{
  "site": {"id": "t-oidc", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$DB"},
  "log": {"level": "debug"},
  "admin": {"port": $DPORT, "tls_cert_file": "$TMP/tls.crt", "tls_key_file": "$TMP/tls.key"},
  "oidc": {"issuer": "http://127.0.0.1:$IPORT", "client_id": "cartgate",
           "client_secret_file": "$TMP/oidc.secret", "redirect_uri": "$CG_URL/auth/oidc/callback",
           "scopes": "openid profile groups", "label": "Test Hospital SSO",
           "role_map": ["cg-admins=admin", "oncology=clinician", "nurses=viewer"]},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]
}
EOF
"$CG" check-config -c "$TMP/c.conf" >/dev/null 2>"$TMP/cc.txt" || fail "check-config: $(cat "$TMP/cc.txt")"
start_daemon d "$TMP/c.conf"
grep -q 'event="admin.listen" .*tls="true" shared_token="false" oidc="true"' "$TMP/d.log" || fail "listen: $(grep admin.listen "$TMP/d.log")"
C() { curl -s --cacert "$TMP/ca.crt" "$@"; }
C -o "$TMP/login.html" "$CG_URL/auth/login"
grep -q 'Test Hospital SSO' "$TMP/login.html" && grep -q '/auth/oidc/start' "$TMP/login.html" || fail "sign-in page: $(head -c 400 "$TMP/login.html")"
ok "the daemon starts with oidc.* (secret from a file) on TLS; the sign-in page offers Test Hospital SSO"

screened() { [ "$(screened_count "$DB" 2>/dev/null)" = 30 ]; }
wait_for "30 patients screened" 60 screened
R1=$(sqlite3 "$DB" "SELECT id FROM referrals WHERE state='pending_approval' ORDER BY id LIMIT 1")
[ -n "$R1" ] || fail "no pending proposal"

browser() { # USER: signin.mjs output in $TMP/USER.json, its exit status returned
  NODE_EXTRA_CA_CERTS="$TMP/ca.crt" node "$OIDC_DIR/signin.mjs" --cartgate "$CG_URL" --user "$1" >"$TMP/$1.json" 2>"$TMP/$1.txt"
}
browser dr.grace || fail "dr.grace sign-in: $(cat "$TMP/dr.grace.json" "$TMP/dr.grace.txt")"
[ "$(jget "$TMP/dr.grace.json" 'd.session.user==="dr.grace" && d.session.role==="clinician" && d.session.via==="session"')" = true ] ||
  fail "grace session: $(cat "$TMP/dr.grace.json")"
grep -q 'HttpOnly; Secure; SameSite=Strict' "$TMP/dr.grace.json" || fail "grace cookie flags"
COOKIE=$(jget "$TMP/dr.grace.json" 'd.cookie.split(";")[0]')
CSRF=$(jget "$TMP/dr.grace.json" d.session.csrf)
GID=$(sqlite3 "$DB" "SELECT id FROM users WHERE name='dr.grace'")
[ -n "$GID" ] && [ "$(sqlite3 "$DB" "SELECT role FROM users WHERE id=$GID")" = clinician ] || fail "grace not provisioned"
CODE=$(C -o "$TMP/resp" -w '%{http_code}' -X POST -H "Cookie: $COOKIE" "$CG_URL/api/v1/referrals/$R1/approve")
[ "$CODE" = 403 ] || fail "approve without CSRF: $CODE"
CODE=$(C -o "$TMP/resp" -w '%{http_code}' -X POST -H "Cookie: $COOKIE" -H "X-CSRF-Token: $CSRF" \
  -H 'Content-Type: application/json' -d '{"reason":"tumor board 2026-11-01"}' "$CG_URL/api/v1/referrals/$R1/approve")
[ "$CODE" = 200 ] && [ "$(jget "$TMP/resp" d.state)" = approved ] || fail "grace approve: $CODE $(cat "$TMP/resp")"
[ "$(jget "$TMP/resp" "d.audit.some(a=>a.action==='approve'&&a.actor==='dr.grace'&&a.user_id===$GID&&a.role==='clinician'&&a.source==='127.0.0.1'&&a.reason==='tumor board 2026-11-01')")" = true ] ||
  fail "grace audit: $(jget "$TMP/resp" 'JSON.stringify(d.audit)')"
grep -q "event=\"referral.state\" referral=\"$R1\" .*user=\"$GID\"" "$TMP/d.log" || fail "log lacks grace's user id"
grep -Eq 'dr\.grace|Grace Hopper' "$TMP/d.log" && fail "a name reached the log"
ok "dr.grace signs in through the provider (provisioned clinician, cookie HttpOnly; Secure; SameSite=Strict) and approves $R1 with CSRF: audited by name, user $GID, 127.0.0.1, reason; the log has the id only"

browser nurse.kim || fail "nurse.kim sign-in: $(cat "$TMP/nurse.kim.json")"
[ "$(jget "$TMP/nurse.kim.json" 'd.session.role')" = viewer ] || fail "kim role"
KCOOKIE=$(jget "$TMP/nurse.kim.json" 'd.cookie.split(";")[0]')
KCSRF=$(jget "$TMP/nurse.kim.json" d.session.csrf)
R2=$(sqlite3 "$DB" "SELECT id FROM referrals WHERE state='pending_approval' ORDER BY id LIMIT 1")
CODE=$(C -o /dev/null -w '%{http_code}' -H "Cookie: $KCOOKIE" "$CG_URL/api/v1/referrals/$R2"); [ "$CODE" = 200 ] || fail "kim read: $CODE"
CODE=$(C -o "$TMP/resp" -w '%{http_code}' -X POST -H "Cookie: $KCOOKIE" -H "X-CSRF-Token: $KCSRF" "$CG_URL/api/v1/referrals/$R2/approve")
[ "$CODE" = 403 ] || fail "viewer approve: $CODE"
ok "nurse.kim signs in as a viewer: reads, approving -> 403"

browser bill.billing && fail "bill.billing (no mapped group) signed in"
[ "$(jget "$TMP/bill.billing.json" d.status)" = 401 ] || fail "bill: $(cat "$TMP/bill.billing.json")"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE action='sign-in-failed'")" -ge 1 ] || fail "refusal not audited"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM users WHERE name='bill.billing'")" = 0 ] || fail "bill provisioned"
ok "bill.billing (no mapped group) refused (401), not provisioned, audited"

stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "exit status $DRC"
echo "test_daemon_oidc: $CHECKS checks passed"
