#!/usr/bin/env bash
# What a reader skips is said, file by file, without content (issue #12):
#   - `cartgate screen` / `profile`: every refused NDJSON line as FILE:LINE, exit 1 unless
#     --keep-going; resources whose urn:uuid patient reference names no Patient of their Bundle
#     counted per file
#   - the daemon's drop folder: a Bundle's urn:uuid subjects resolve within it (the patient is
#     screened), the ones naming nothing are counted per file (event=files.unresolved with
#     source, file and count; cartgate_resources_unresolved_total) and never logged with content
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

mkdir -p "$TMP/in" "$TMP/drop"
"$CG" synth --seed 3 --patients 4 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP/cohort"/*.000.ndjson "$TMP/in/"
C="$TMP/in/Condition.000.ndjson"
# line 2 is not JSON, line 4 not an object
awk 'NR == 2 {print "{\"resourceType\": \"Condition\", broken"; next} NR == 4 {print "[1, 2]"; next} {print}' "$C" >"$C.new" && mv "$C.new" "$C"
"$CG" screen --as-of 2026-11-01 --json "$TMP/in" >"$TMP/s.out" 2>"$TMP/s.err"; rc=$?
[ "$rc" = 1 ] || fail "screen with refused lines exit $rc: $(cat "$TMP/s.err")"
grep -qxF "cartgate screen: $C:2: line refused: not a JSON object (skipped)" "$TMP/s.err" || fail "line 2 not named: $(cat "$TMP/s.err")"
grep -qxF "cartgate screen: $C:4: line refused: not a JSON object (skipped)" "$TMP/s.err" || fail "line 4 not named: $(cat "$TMP/s.err")"
grep -qxF "cartgate screen: skipped 2 unparsable NDJSON lines; exit status 1 (--keep-going accepts them)" "$TMP/s.err" ||
  fail "summary: $(cat "$TMP/s.err")"
grep -q broken "$TMP/s.err" && fail "a refused line's content reached stderr"
[ "$(wc -l <"$TMP/s.out")" = 4 ] || fail "the other patients were not all screened: $(wc -l <"$TMP/s.out")"
"$CG" screen --as-of 2026-11-01 --json --keep-going "$TMP/in" >/dev/null 2>"$TMP/k.err" || fail "--keep-going exit $?"
grep -qxF "cartgate screen: $C:2: line refused: not a JSON object (skipped)" "$TMP/k.err" || fail "keep-going: line not named"
grep -qxF "cartgate screen: skipped 2 unparsable NDJSON lines (--keep-going)" "$TMP/k.err" || fail "keep-going summary: $(cat "$TMP/k.err")"
"$CG" profile --as-of 2026-11-01 --json "$TMP/in" >/dev/null 2>"$TMP/p.err"; rc=$?
[ "$rc" = 1 ] && grep -qxF "cartgate profile: $C:4: line refused: not a JSON object (skipped)" "$TMP/p.err" ||
  fail "profile: exit $rc $(cat "$TMP/p.err")"
"$CG" profile --as-of 2026-11-01 --json --keep-going "$TMP/in" >/dev/null 2>/dev/null || fail "profile --keep-going exit $?"
ok "screen and profile name each refused NDJSON line as FILE:LINE without its content and exit 1; --keep-going exits 0"

# a Bundle: one patient by urn:uuid, a Condition resolving to it, three Observations naming a
# urn:uuid that is no entry, and one naming an Organization entry
PID_=$(head -n1 "$TMP/cohort/Patient.000.ndjson" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).id))')
node -e '
const fs=require("fs");
const pat=JSON.parse(fs.readFileSync(process.argv[1],"utf8").split("\n")[0]);
const cond=fs.readFileSync(process.argv[2],"utf8").trim().split("\n").map(JSON.parse).filter(c=>c.subject.reference==="Patient/"+pat.id);
const P="urn:uuid:11111111-1111-4111-8111-111111111111";
const e=[{fullUrl:P,resource:pat},{fullUrl:"urn:uuid:22222222-2222-4222-8222-222222222222",resource:{resourceType:"Organization",id:"org1",name:"x"}}];
for (const c of cond) e.push({fullUrl:"urn:uuid:"+require("crypto").randomUUID(),resource:{...c,subject:{reference:P}}});
for (let i=0;i<3;i++) e.push({resource:{resourceType:"Observation",id:"orph"+i,status:"final",code:{text:"x"},subject:{reference:"urn:uuid:99999999-9999-4999-8999-99999999999"+i}}});
e.push({resource:{resourceType:"Observation",id:"orph3",status:"final",code:{text:"x"},subject:{reference:"urn:uuid:22222222-2222-4222-8222-222222222222"}}});
fs.writeFileSync(process.argv[3], JSON.stringify({resourceType:"Bundle",type:"collection",entry:e}));' \
  "$TMP/cohort/Patient.000.ndjson" "$TMP/cohort/Condition.000.ndjson" "$TMP/b.json" || fail "bundle"
"$CG" screen --as-of 2026-11-01 --json "$TMP/b.json" >"$TMP/b.out" 2>"$TMP/b.err" || fail "screen bundle exit $?: $(cat "$TMP/b.err")"
grep -qxF "cartgate screen: $TMP/b.json: 4 resources whose patient reference names no patient (a urn:uuid that is no Patient of its Bundle): not read" "$TMP/b.err" ||
  fail "unresolved not counted per file: $(cat "$TMP/b.err")"
ok "screen counts the resources whose urn:uuid patient reference names no Patient, per file"

centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
source_conf d "{\"name\": \"drop\", \"kind\": \"files\", \"dir\": \"$TMP/drop\", \"interval_s\": 1}"
cp "$TMP/b.json" "$TMP/drop/b.json"
start_daemon d "$TMP/d.conf"
wait_for "the drop read" 60 test -e "$TMP/drop/done/b.json"
wait_for "the patient screened" 60 sh -c "[ \"\$(sqlite3 '$TMP/d.db' \"SELECT count(*) FROM verdicts WHERE patient_id='$PID_'\")\" = 1 ]"
grep -qF 'event="files.unresolved" source="drop" file="b.json" count="4"' "$TMP/d.log" || fail "no files.unresolved: $(grep -m3 unresolved "$TMP/d.log")"
grep -qF 'event="ingest.unresolved" source="drop" count="4"' "$TMP/d.log" || fail "no ingest.unresolved"
grep -q '99999999' "$TMP/d.log" && fail "an unresolved reference reached the log"
[ "$(metric 'cartgate_resources_unresolved_total{source="drop"}')" = 4 ] || fail "metric: $(metric 'cartgate_resources_unresolved_total{source="drop"}')"
N_RES=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM resources WHERE patient_id='$PID_' AND type='Condition'")
[ "$N_RES" -ge 1 ] || fail "the Condition naming the patient by urn:uuid was not filed under the patient"
stop_daemon "$DPID"
ok "the drop folder resolves urn:uuid subjects within the Bundle (patient screened, $N_RES Conditions filed) and counts the 4 naming nothing per file (log: source, file, count; metric)"
echo "PASS: $CHECKS checks"
