#!/usr/bin/env bash
# A patient whose screening writes fail leaves nothing written, and the other patients of the
# same batch keep theirs: the daemon first tries a batch without a savepoint per patient and,
# when one fails, rolls the batch back and screens it again one savepoint per patient
# (daemon.c screen_pending). The failure is injected in the store itself: a trigger refuses
# one patient's worklist row, which is written after the patient's verdict row in the same
# transaction. The failure is logged and counted once. A files source (no FHIR server needed).
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

mkdir -p "$TMP/drop"
"$CG" synth --seed 7 --patients 6 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
source_conf c "{\"name\": \"drop\", \"kind\": \"files\", \"dir\": \"$TMP/drop\", \"interval_s\": 1}"
# the store made by a first start with nothing to read, then the failure injected
start_daemon d0 "$TMP/c.conf"
made() { [ "$(sqlite3 "$TMP/c.db" 'PRAGMA user_version' 2>/dev/null)" -gt 0 ] 2>/dev/null; }
wait_for "the store created" 30 made
stop_daemon "$DPID"
PIDS_ALL=$(node -e 'const fs=require("fs");
process.stdout.write(fs.readFileSync(process.argv[1],"utf8").trim().split("\n").map(l=>JSON.parse(l).id).sort().join(" "))' \
  "$TMP/cohort/Patient.000.ndjson")
read -r -a PS <<<"$PIDS_ALL"
[ "${#PS[@]}" = 6 ] || fail "6 synthetic patients expected: $PIDS_ALL"
BAD=${PS[3]} # not the first: the patients before it are written again by the second pass
sqlite3 "$TMP/c.db" "CREATE TRIGGER test_refuse AFTER INSERT ON worklist WHEN NEW.patient_id = '$BAD'
  BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;" || fail "trigger"

cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
start_daemon d1 "$TMP/c.conf"
settled() { [ "$(screened_count "$TMP/c.db" 2>/dev/null)" = 5 ] &&
  [ "$(sqlite3 "$TMP/c.db" 'SELECT count(*) FROM daemon_dirty' 2>/dev/null)" = 0 ] &&
  [ "$(sqlite3 "$TMP/c.db" 'SELECT count(*) FROM held' 2>/dev/null)" = 0 ]; }
wait_for "5 patients screened, none left to screen" 60 settled
api /metrics
ERRS=$(awk '$1 == "cartgate_screen_errors_total" {print $2}' "$TMP/resp")
stop_daemon "$DPID"

[ "$(sqlite3 "$TMP/c.db" "SELECT count(*) FROM verdicts WHERE patient_id = '$BAD'")" = 0 ] ||
  fail "the failed patient's verdict was kept without its worklist row"
[ "$(sqlite3 "$TMP/c.db" "SELECT count(*) FROM referrals WHERE patient_id = '$BAD'")" = 0 ] ||
  fail "the failed patient has a referral"
for p in "${PS[@]}"; do
  [ "$p" = "$BAD" ] && continue
  [ "$(sqlite3 "$TMP/c.db" "SELECT count(*) FROM verdicts v JOIN worklist w USING (patient_id) WHERE patient_id = '$p'")" = 1 ] ||
    fail "patient $p has no verdict and worklist row"
done
ok "the patient whose writes failed has nothing written; the 5 others of its batch have their verdicts and worklist rows"

n=$(grep -c "event=\"screen.failed\" patient=\"$BAD\"" "$TMP/d1.log")
[ "$n" = 1 ] || fail "screen.failed logged $n times for the failed patient: $(grep screen.failed "$TMP/d1.log")"
[ "$(grep -c 'event="screen.failed"' "$TMP/d1.log")" = 1 ] || fail "another patient failed: $(grep screen.failed "$TMP/d1.log")"
[ "$ERRS" = 1 ] || fail "cartgate_screen_errors_total $ERRS, 1 expected"
grep -q 'refused by the test' "$TMP/d1.log" || fail "the store's error is not in the log"
ok "the failure logged and counted once (screen.failed, cartgate_screen_errors_total 1)"

# the trigger gone and the patient's data changed: it is screened like the others
sqlite3 "$TMP/c.db" "DROP TRIGGER test_refuse" || fail "drop trigger"
node -e 'const fs=require("fs"); const bad=process.argv[2];
const p=fs.readFileSync(process.argv[1],"utf8").trim().split("\n").map(l=>JSON.parse(l)).find(r=>r.id===bad);
p.gender = p.gender === "female" ? "male" : "female";
fs.writeFileSync(process.argv[3], JSON.stringify(p)+"\n");' "$TMP/cohort/Patient.000.ndjson" "$BAD" "$TMP/drop/zz-again.ndjson" ||
  fail "changed patient"
start_daemon d2 "$TMP/c.conf"
all6() { [ "$(screened_count "$TMP/c.db" 2>/dev/null)" = 6 ] &&
  [ "$(sqlite3 "$TMP/c.db" 'SELECT count(*) FROM daemon_dirty' 2>/dev/null)" = 0 ]; }
wait_for "the 6th patient screened once it can be written" 60 all6
stop_daemon "$DPID"
[ "$(sqlite3 "$TMP/c.db" "SELECT count(*) FROM worklist WHERE patient_id = '$BAD'")" = 1 ] ||
  fail "the patient's worklist row"
ok "the same patient screened once its writes succeed"
echo "test_daemon_screen_unit: $CHECKS checks passed"
