#!/usr/bin/env bash
# The clinician's pages in real headless Chromium (tests/browser/web_test.mjs: puppeteer-core
# driving the system browser, axe-core on every page) against the real daemon, with a synth
# cohort in the reference EHR server and a reference center:
#   sign in -> the worklist lists exactly the ground-truth candidates (plus the patients with
#   a consult recommendation alone) -> a patient page's gates and timeline agree with
#   `cartgate screen --json` / `cartgate profile --json` -> approve (default center, a note)
#   -> the referral reaches the center (the note in its ServiceRequest) -> the referrals page
#   shows it sent, then accepted once the center's Task changes; decline with a coded reason
#   -> gone from the worklist and audited; a viewer sees no action buttons and a forged POST
#   gets 403; a delivery the center refuses fails and an administrator retries it; a proposal
#   whose center the centers file drops (SIGHUP) says on the patient, referral and referrals
#   pages that it could not be prepared and why, and is approved to a center ranked today; axe-core: no serious or critical violation on any page; a screenshot of every
#   page in build/artifacts/browser/. Skips (77) without Chromium or the browser packages.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "SKIP: chromium not installed (scripts/bootstrap installs it)"; exit 77; }
[ -d "$SRC/tests/browser/node_modules/puppeteer-core" ] || { echo "SKIP: tests/browser packages missing (scripts/bootstrap runs npm ci)"; exit 77; }
unset CARTGATE_ADMIN_TOKEN CARTGATE_TOKEN

N=40
cohort "$TMP" 7 "$N"
"$CG" screen --as-of 2026-11-01 --json "$TMP/cohort" >"$TMP/screen.ndjson" 2>/dev/null || fail "cartgate screen"
start_server ehr --seed "$TMP/seed"
EHR=$BASE
start_server center
CENTER=$BASE
CENTER_ADMIN="http://127.0.0.1:$PORT/admin"
centers_for "$CENTER" "$TMP/centers.json"
DB="$TMP/web.db"
PW_ADA='ada: correct horse battery'
PW_CY='cy: only looking at lists'
PW_OPS='ops: keeps the lights on'
echo "$PW_ADA" | "$CG" users add dr.ada --role clinician --display 'Dr Ada Lovelace' --password-stdin --db "$DB" >/dev/null 2>&1 || fail "add ada"
echo "$PW_CY" | "$CG" users add nurse.cy --role viewer --password-stdin --db "$DB" >/dev/null 2>&1 || fail "add cy"
echo "$PW_OPS" | "$CG" users add it.ops --role admin --password-stdin --db "$DB" >/dev/null 2>&1 || fail "add ops"
cat >"$TMP/web.conf" <<EOF
{
  "site": {"id": "t-web", "name": "Demo Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$DB"},
  "log": {"level": "debug"},
  "admin": {"port": 0},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 1, "task_poll_s": 1},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 3600, "page_size": 500}]
}
EOF
start_daemon web "$TMP/web.conf"
P=$DPID
wait_for "$N patients screened" 120 all_screened "$DB"
ok "$N patients screened; $(sqlite3 "$DB" "SELECT count(*) FROM referrals WHERE state='pending_approval'") proposals await approval"

ART="${CARTGATE_BUILD_DIR:-$SRC/build}/artifacts/browser"
rm -rf "$ART"
CENTERS="$TMP/centers.json" DPID="$P" DLOG="$TMP/web.log" ADMIN="$ADMIN" ARTIFACTS="$ART" CENTER="$CENTER" CENTER_ADMIN="$CENTER_ADMIN" PW_OPS="$PW_OPS" DB="$DB" CG="$CG" CHROMIUM="$CHROMIUM" PW_ADA="$PW_ADA" PW_CY="$PW_CY" \
  CRITERIA="$SRC/conf/criteria" SCREEN="$TMP/screen.ndjson" GT="$TMP/cohort/ground_truth.ndjson" COHORT_DIR="$TMP/cohort" \
  node "$SRC/tests/browser/web_test.mjs" >"$TMP/browser.out" 2>&1
rc=$?
cat "$TMP/browser.out"
[ $rc = 0 ] || fail "browser checks failed (above); screenshots in $ART"
ok "browser: $(ls "$ART" | wc -l) pages checked with axe-core, screenshots in $ART"
grep -q 'Ada\|Lovelace' "$TMP/web.log" && fail "the log names the clinician"
node -e '
const fs=require("fs");
const log=fs.readFileSync(process.argv[1],"utf8");
const bad=fs.readFileSync(process.argv[2],"utf8").trim().split("\n").map(JSON.parse)
  .flatMap(p=>[(p.name&&p.name[0]&&p.name[0].family)||"", ...(p.identifier||[]).map(i=>i.value||"")]).filter(x=>x.length>3)
  .filter(x=>log.includes(x));
if (bad.length) { console.log("names or MRNs in the log: "+bad.slice(0,5).join(", ")); process.exit(1); }' "$TMP/web.log" "$TMP/cohort/Patient.000.ndjson" ||
  fail "PHI in the daemon log"
ok "the daemon log carries no patient name or record number, nor the clinician's name"
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "daemon exit status $DRC"
ok "daemon stopped cleanly"
