#!/usr/bin/env bash
# `cartgate users`: add people and a service, passwords only from stdin or the terminal
# (policy enforced, never stored in clear), list (no secrets), role, disable/enable, passwd,
# API tokens printed once and stored hashed, tokens list, revoke; every change audited with the
# operator ("local:<os user>"); usage errors exit 2, refusals exit 1.
set -u
. "$(dirname "$0")/lib.sh"
need_cartgate
command -v sqlite3 >/dev/null || fail "sqlite3 not installed"
DB="$TMP/cg.db"
U() { "$CG" users "$@" --db "$DB"; }

echo 'correct horse battery' | U add dr.ada --role clinician --display 'Dr Ada' --password-stdin >"$TMP/o" 2>"$TMP/e" ||
  fail "add: $(cat "$TMP/e")"
echo 'another good password' | U add nurse.bo --role viewer --password-stdin >/dev/null 2>&1 || fail "add viewer"
U add ehr-bot --role viewer --service >/dev/null 2>&1 || fail "add service"
ok "users added (person with a password from stdin, a service without)"

echo 'tiny9' | U add weak --role viewer --password-stdin >/dev/null 2>"$TMP/e"; rc=$?
[ $rc = 1 ] && grep -q "at least 12" "$TMP/e" && ! grep -q tiny9 "$TMP/e" || fail "short password: rc=$rc $(cat "$TMP/e")"
echo 'correct horse battery' | U add dr.ada --role viewer --password-stdin >/dev/null 2>"$TMP/e"; rc=$?
[ $rc = 1 ] && grep -q "exists already" "$TMP/e" || fail "duplicate: rc=$rc"
U add x --role surgeon --no-password >/dev/null 2>&1; [ $? = 2 ] || fail "bad role not a usage error"
U add --role viewer >/dev/null 2>&1; [ $? = 2 ] || fail "missing name not a usage error"
"$CG" users list >/dev/null 2>&1; [ $? = 2 ] || fail "missing --db not a usage error"
ok "refusals: short password (not echoed), taken name, unknown role, usage errors"

[ "$(sqlite3 "$DB" "SELECT count(*) FROM users WHERE pw_hash LIKE '\$scrypt\$ln=15,r=8,p=3\$%'")" = 2 ] || fail "not scrypt"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM users WHERE pw_hash LIKE '%horse%'")" = 0 ] || fail "clear password"
ok "passwords stored as scrypt strings only"

U list >"$TMP/list" || fail "list"
grep -Eq "dr.ada +clinician +person +password +active" "$TMP/list" || fail "list: $(cat "$TMP/list")"
grep -Eq "ehr-bot +viewer +service +tokens" "$TMP/list" || fail "list service"
U list --json >"$TMP/list.json" || fail "list --json"
[ "$(jget "$TMP/list.json" 'd.users.map(u=>u.name+":"+u.role).join(",")')" = "dr.ada:clinician,ehr-bot:viewer,nurse.bo:viewer" ] ||
  fail "json: $(cat "$TMP/list.json")"
ok "list as a table and as JSON"

TOK=$(U token ehr-bot --days 30 --label nightly 2>"$TMP/e") || fail "token: $(cat "$TMP/e")"
[[ "$TOK" =~ ^cgt_[A-Za-z0-9_-]{43}$ ]] || fail "token shape: $TOK"
grep -q "shown once" "$TMP/e" || fail "no shown-once note"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM api_tokens WHERE hash = CAST('$TOK' AS BLOB) OR label LIKE '%cgt_%'")" = 0 ] || fail "token in clear"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM api_tokens WHERE length(hash) = 32 AND role = 'viewer'")" = 1 ] || fail "token row"
U token nurse.bo --role admin >/dev/null 2>"$TMP/e"; [ $? = 1 ] && grep -q "more than its user" "$TMP/e" || fail "role cap"
U tokens ehr-bot >"$TMP/tokens" || fail "tokens"
grep -q nightly "$TMP/tokens" && ! grep -q "$TOK" "$TMP/tokens" || fail "tokens list: $(cat "$TMP/tokens")"
TID=$(sqlite3 "$DB" "SELECT id FROM api_tokens LIMIT 1")
U revoke ehr-bot "$TID" >/dev/null || fail "revoke"
U revoke ehr-bot "$TID" >/dev/null 2>&1; [ $? = 1 ] || fail "second revoke"
[ "$(sqlite3 "$DB" "SELECT revoked_ms > 0 FROM api_tokens WHERE id = $TID")" = 1 ] || fail "not revoked"
ok "API token printed once, stored as SHA-256, capped by the user's role, listed without secret, revoked"

U role nurse.bo clinician >/dev/null || fail "role"
U disable nurse.bo >/dev/null || fail "disable"
U list | grep -Eq "nurse.bo +clinician .* disabled" || fail "disabled not listed"
U enable nurse.bo >/dev/null || fail "enable"
echo 'a brand new password' | U passwd nurse.bo --password-stdin >/dev/null || fail "passwd"
U disable nobody >/dev/null 2>"$TMP/e"; [ $? = 1 ] && grep -q "no such user" "$TMP/e" || fail "unknown user"
ok "role, disable, enable, passwd; unknown users refused"

me=$(id -un)
n=$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE actor = 'local:$me' AND role = 'admin' AND source = 'local' AND referral_id IS NULL")
[ "$n" = 9 ] || fail "audit rows by the operator: $n; $(sqlite3 "$DB" 'SELECT actor, action, detail FROM audit')"
[ "$(sqlite3 "$DB" "SELECT group_concat(action, ',') FROM (SELECT action FROM audit ORDER BY id)")" = \
  "user-add,user-add,user-add,token-create,token-revoke,user-role,user-disable,user-enable,user-passwd" ] ||
  fail "audit actions: $(sqlite3 "$DB" 'SELECT action FROM audit ORDER BY id' | tr '\n' ,)"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE action = 'user-add'")" = 3 ] || fail "user-add audit"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE detail LIKE '%horse%' OR detail LIKE '%cgt_%'")" = 0 ] || fail "secret in audit"
ok "every change audited with the operator, no secret in the audit"
echo "$CHECKS passed, 0 failed"
