#!/usr/bin/env bash
# CDS Hooks through the daemon itself: a test EHR in Node (tests/cds-ehr, jose) signs its JWTs
# (RS384, ES384) and serves its key set on loopback; a synth cohort is the EHR's data (prefetch
# built from each patient's Bundle, and the reference FHIR server seeded with the same cohort,
# behind a bearer token). Checks (tests/cds-ehr/ehr.mjs run): discovery; a card for each
# ground-truth candidate and none for the others (a refer-early consult excepted); every card
# agrees with `cartgate screen --json` on the same data and date and has the CDS Hooks shape;
# wrong iss / aud / expired / replayed jti / bad signature / foreign jku / HS256 -> 401; key
# rotation; prefetch missing + fhirAuthorization -> read from the FHIR server with that token;
# missing and no authorization -> 412; feedback. Then here: feedback stored, counted in
# /metrics, and the accepted card's patient has a referral pending approval through the one
# proposal path; once a clinician declines that proposal in cartgate the patient gets no card for
# the same verdict (counted), others still do; logs carry no fixture names.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
EHR_DIR="$SRC/tests/cds-ehr"
[ -d "$EHR_DIR/node_modules/jose" ] || { echo "SKIP: $EHR_DIR/node_modules missing (run scripts/bootstrap)"; exit 77; }
N=${CARTGATE_CDS_PATIENTS:-24}
SEED=${CARTGATE_CDS_SEED:-11}
AS_OF=2026-11-01
cohort "$TMP" "$SEED" "$N"
"$CG" synth --seed "$SEED" --patients "$N" --out "$TMP/bundles" --format bundle >/dev/null || fail "synth bundles"
FHIR_TOKEN="fhir-token-$$-$RANDOM"
start_server ehr --seed "$TMP/seed" --token "$FHIR_TOKEN"
EHR=$BASE
EHR_ADMIN="http://127.0.0.1:$PORT/admin"
mkdir -p "$TMP/keys"
node "$EHR_DIR/ehr.mjs" jwks "$TMP/keys" >"$TMP/jwks.out" 2>"$TMP/jwks.err" &
JPID=$!
PIDS+=("$JPID")
JPORT=""
for _ in $(seq 1 100); do
  JPORT=$(head -n1 "$TMP/jwks.out" 2>/dev/null)
  [[ "$JPORT" =~ ^[0-9]+$ ]] && break
  kill -0 "$JPID" 2>/dev/null || fail "the test EHR's key server exited"
  sleep 0.1
done
[[ "$JPORT" =~ ^[0-9]+$ ]] || fail "the test EHR's key server did not start"
APORT=$(free_port)
PUBLIC="http://127.0.0.1:$APORT"
cat >"$TMP/cds.conf" <<CONF
{
  "site": {"id": "t-cds", "name": "CDS Community Hospital", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/cds.db"},
  "log": {"level": "debug"},
  "admin": {"port": $APORT, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "$AS_OF",
  "cds": {
    "enabled": true,
    "public_url": "$PUBLIC",
    "clients": ["https://ehr.test.example/cds-client http://127.0.0.1:$JPORT/jwks.json"],
    "fhir_servers": ["$EHR"]
  },
  "sources": []
}
CONF
"$CG" check-config -c "$TMP/cds.conf" >"$TMP/check.out" 2>&1 || fail "check-config: $(cat "$TMP/check.out")"
start_daemon cds "$TMP/cds.conf"
P=$DPID
[ "$ADMIN" = "$PUBLIC" ] || fail "listener at $ADMIN, expected $PUBLIC"
ok "daemon serves CDS Hooks on its listener ($PUBLIC)"
"$CG" screen --json --as-of "$AS_OF" "$TMP"/bundles/p*.json >"$TMP/screen.ndjson" 2>"$TMP/screen.err" || fail "cartgate screen"
node "$EHR_DIR/ehr.mjs" run --cartgate "$ADMIN" --public "$PUBLIC" --keys "$TMP/keys" --jwks "http://127.0.0.1:$JPORT" \
  --bundles "$TMP/bundles" --screen "$TMP/screen.ndjson" --truth "$TMP/bundles/ground_truth.ndjson" \
  --fhir "$EHR" --fhiradmin "$EHR_ADMIN" --token "$FHIR_TOKEN" --out "$TMP/run.json" >"$TMP/run.out" 2>"$TMP/run.err"
RC=$?
cat "$TMP/run.out"
CHECKS=$((CHECKS + $(grep -c '^ok ' "$TMP/run.out")))
[ $RC = 0 ] || fail "the test EHR's checks failed ($(grep -c '^not ok' "$TMP/run.out") failed): $(tail -3 "$TMP/run.err")"
ACC=$(jget "$TMP/run.json" d.accepted)
OVR=$(jget "$TMP/run.json" d.overridden)
CARD=$(jget "$TMP/run.json" d.acceptedCard)

# feedback stored with its patient, outcome and reason
[ "$(sqlite3 "$TMP/cds.db" "SELECT patient_id || '|' || outcome FROM cds_feedback WHERE card = '$CARD'")" = "$ACC|accepted" ] ||
  fail "accepted feedback not stored: $(sqlite3 "$TMP/cds.db" 'SELECT * FROM cds_feedback')"
[ "$(sqlite3 "$TMP/cds.db" "SELECT outcome || '|' || override_reason FROM cds_feedback WHERE patient_id = '$OVR'")" = "overridden|patient-declines Patient declines / discussed" ] ||
  fail "overridden feedback not stored: $(sqlite3 "$TMP/cds.db" 'SELECT * FROM cds_feedback')"
ok "feedback stored (accepted with its suggestion, overridden with its reason)"
# the accepted card's patient: a referral pending a clinician's approval, through the one proposal path
pending_for() { [ "$(sqlite3 "$TMP/cds.db" "SELECT count(*) FROM referrals WHERE patient_id = '$ACC' AND state = 'pending_approval'")" = 1 ]; }
wait_for "a referral proposal for $ACC" 30 pending_for
[ "$(sqlite3 "$TMP/cds.db" "SELECT count(*) FROM referrals WHERE patient_id = '$OVR'")" = 0 ] || fail "an overridden card proposed a referral"
ok "the accepted card's patient has one referral pending approval; the overridden one none"
grep -q "event=\"referral.created\".*patient=\"$ACC\"" "$TMP/cds.log" || fail "no referral.created log line for $ACC"
# a clinician declines that proposal in cartgate: the patient's card is held back until the
# verdict changes (same data: no card, counted), while the overridden patient still gets one
cdscall() { node "$EHR_DIR/ehr.mjs" call --cartgate "$ADMIN" --public "$PUBLIC" --keys "$TMP/keys" --bundles "$TMP/bundles" --pid "$1" >"$TMP/call.json" 2>>"$TMP/run.err" || fail "call $1"; }
RID=$(sqlite3 "$TMP/cds.db" "SELECT id FROM referrals WHERE patient_id = '$ACC'")
api "/api/v1/referrals/$RID/decline" -X POST -H 'Content-Type: application/json' -d '{"reason":"patient prefers to continue locally"}'
[ "$CODE" = 200 ] || fail "decline: $CODE $(cat "$TMP/resp")"
cdscall "$ACC"
[ "$(jget "$TMP/call.json" 'd.status + "/" + d.body.cards.length')" = "200/0" ] || fail "a card after the referral was declined: $(head -c 300 "$TMP/call.json")"
cdscall "$OVR"
[ "$(jget "$TMP/call.json" 'd.status + "/" + d.body.cards.length')" = "200/1" ] || fail "the overridden patient lost its card: $(head -c 300 "$TMP/call.json")"
ok "a patient whose referral was declined in cartgate gets no card for the same verdict; others still do"
# metrics: HELP/TYPE, feedback by outcome, calls by result; promtool when present
api /metrics
[ "$CODE" = 200 ] || fail "/metrics $CODE"
grep -q '^# TYPE cartgate_cds_feedback gauge' "$TMP/resp" || fail "no TYPE for cartgate_cds_feedback"
grep -q "^cartgate_cds_feedback{service=\"cartgate-car-t\",outcome=\"accepted\"} 1\$" "$TMP/resp" || fail "feedback accepted not counted: $(grep cds_feedback "$TMP/resp")"
grep -q "^cartgate_cds_feedback{service=\"cartgate-car-t\",outcome=\"overridden\"} 1\$" "$TMP/resp" || fail "feedback overridden not counted"
UNAUTH=$(grep '^cartgate_cds_calls_total{result="unauthorized"}' "$TMP/resp" | awk '{print $2}')
[ "${UNAUTH:-0}" -ge 8 ] || fail "401s not counted: $UNAUTH"
PRE=$(grep '^cartgate_cds_calls_total{result="precondition_failed"}' "$TMP/resp" | awk '{print $2}')
[ "${PRE:-0}" -ge 3 ] || fail "412s not counted: $PRE"
[ "$(grep '^cartgate_cds_cards_suppressed_total ' "$TMP/resp" | awk '{print $2}')" = 1 ] || fail "the held-back card not counted"
if command -v promtool >/dev/null 2>&1; then
  promtool check metrics <"$TMP/resp" >"$TMP/promtool.out" 2>&1 || fail "promtool: $(cat "$TMP/promtool.out")"
fi
ok "metrics count CDS calls by result and feedback by outcome"
# the program dashboard shows the same figures (page and CSV)
api /ui/program.csv
[ "$CODE" = 200 ] || fail "/ui/program.csv $CODE"
grep -q '^cds,,cartgate-car-t:accepted,1$' "$TMP/resp" || fail "CSV: accepted feedback: $(grep '^cds' "$TMP/resp")"
grep -q '^cds,,cartgate-car-t:overridden,1$' "$TMP/resp" || fail "CSV: overridden feedback: $(grep '^cds' "$TMP/resp")"
CARDS=$(sqlite3 "$TMP/cds.db" "SELECT count(*) FROM cds_cards WHERE service='cartgate-car-t'")
[ "$CARDS" -ge 2 ] && grep -q "^cds,,cartgate-car-t:cards,$CARDS\$" "$TMP/resp" || fail "CSV: cards shown ($CARDS): $(grep '^cds' "$TMP/resp")"
grep -q '^cds_override_reason,,"patient-declines Patient declines / discussed",1$' "$TMP/resp" || fail "CSV: override reason: $(grep '^cds_over' "$TMP/resp")"
api /ui/program
[ "$CODE" = 200 ] || fail "/ui/program $CODE"
grep -q '<li>patient-declines Patient declines / discussed: 1</li>' "$TMP/resp" || fail "the program page lacks the override reason"
ok "the program dashboard shows cards shown ($CARDS), feedback accepted and overridden, and why"
# the 401s are logged with the reason, never the token; no PHI in the log
grep -q 'event="cds.unauthorized".*reason="jti seen before (replay)"' "$TMP/cds.log" || fail "replay not logged"
grep -q 'event="cds.unauthorized".*reason="iss https://other-ehr.example is not an allowed CDS client"' "$TMP/cds.log" || fail "wrong iss not logged"
if grep -q 'eyJ' "$TMP/cds.log"; then fail "a JWT reached the log"; fi
if grep -q "$FHIR_TOKEN" "$TMP/cds.log"; then fail "the FHIR token reached the log"; fi
node -e '
const fs=require("fs");
const log=fs.readFileSync(process.argv[1],"utf8");
const bad=[];
for (const l of fs.readFileSync(process.argv[2],"utf8").trim().split("\n")) {
  const p=JSON.parse(l);
  for (const n of p.name||[]) for (const g of [...(n.given||[]), n.family]) if (g && g.length>3 && log.includes("\""+g+"\"")) bad.push(g);
  if (p.birthDate && log.includes(p.birthDate)) bad.push(p.birthDate);
}
if (bad.length) { console.log(bad.slice(0,5).join(" ")); process.exit(1); }' "$TMP/cds.log" "$TMP/cohort/Patient.000.ndjson" >"$TMP/phi.out" || fail "PHI in the log: $(cat "$TMP/phi.out")"
ok "401s logged with their reason; no token, JWT, name or birth date in the log"
# credentials before the body: a hook call declaring 900 KB without a bearer JWT, or with one
# naming no allowed client, gets its 401 at once, the body never read, the connection closed
node -e '
const net=require("net"), port=+process.argv[1];
const b64=o => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt=b64({alg:"RS384",typ:"JWT"})+"."+b64({iss:"https://other-ehr.example",sub:"x"})+".c2ln";
function ask(head) {
  return new Promise(res => {
    const s=net.connect(port, "127.0.0.1"), t0=Date.now();
    let out="", done=false;
    const end=closed => { if (!done) { done=true; s.destroy(); res({out, closed, ms: Date.now()-t0}); } };
    s.on("data", d => out+=d); s.on("end", () => end(true)); s.on("error", () => end(true));
    s.write(head);
    setTimeout(() => end(false), 10000);
  });
}
(async () => {
  for (const auth of [null, jwt]) {
    const r=await ask("POST /cds-services/cartgate-car-t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
      (auth ? "Authorization: Bearer "+auth+"\r\n" : "") + "Content-Length: 900000\r\n\r\n");
    if (!/^HTTP\/1.1 401 /.test(r.out) || !r.out.includes("WWW-Authenticate: Bearer error=\"invalid_token\"") || !r.closed || r.ms > 3000) {
      console.error((auth ? "unknown iss" : "no JWT")+": "+r.ms+" ms closed="+r.closed+": "+r.out.slice(0, 300));
      process.exit(1);
    }
  }
})();' "$APORT" || fail "CDS credentials before the body"
ok "hook calls declaring 900 KB without a JWT or with one naming no allowed client: 401 at once, the body never read"
stop_daemon "$P"
[ "$DRC" = 0 ] || fail "daemon exit status $DRC"
echo "passed: $CHECKS checks"
