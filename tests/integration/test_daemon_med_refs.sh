#!/usr/bin/env bash
# A medication row may name its Medication by an absolute URL ("https://ehr/fhir/Medication/x")
# as well as by "Medication/x": the daemon's screening job loads the shared Medication either
# way (daemon.c add_referenced_medications, through fhir_ref_split as the referral package
# does; the profile resolves both). The same synth cohort screened twice by the daemon (files
# source), once as written and once with every Medication reference made absolute, gives the
# same verdicts, member for member (the URL's base aside, should evidence quote it). Without
# the Medication the drugs of a line are unknown and the explanations differ.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

N=40
"$CG" synth --seed 21 --patients $N --out "$TMP/rel" --format ndjson >/dev/null || fail "synth"
BASEURL="https://ehr.example/fhir/"
n_refs=$(cat "$TMP"/rel/*.ndjson | grep -o '"reference":"Medication/' | wc -l)
[ "$n_refs" -gt 0 ] || fail "the cohort names no Medication by reference"
mkdir -p "$TMP/abs"
for f in "$TMP"/rel/*.ndjson; do
  sed "s#\"reference\":\"Medication/#\"reference\":\"${BASEURL}Medication/#g" "$f" >"$TMP/abs/$(basename "$f")"
done
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
# screen NAME: the daemon over $TMP/NAME's files; verdict JSON lines in $TMP/NAME.verdicts
screen() {
  mkdir -p "$TMP/drop-$1"
  source_conf "$1" "{\"name\": \"drop\", \"kind\": \"files\", \"dir\": \"$TMP/drop-$1\", \"interval_s\": 1}"
  cp "$TMP/$1"/*.ndjson "$TMP/drop-$1/"
  start_daemon "$1" "$TMP/$1.conf"
  DB="$TMP/$1.db"
  settled() { [ "$(screened_count "$DB" 2>/dev/null)" = $N ] &&
    [ "$(sqlite3 "$DB" 'SELECT count(*) FROM daemon_dirty' 2>/dev/null)" = 0 ]; }
  wait_for "$N patients screened ($1)" 120 settled
  stop_daemon "$DPID"
  sqlite3 "$TMP/$1.db" "SELECT verdict_json FROM verdicts ORDER BY patient_id" >"$TMP/$1.verdicts"
}
screen rel
screen abs
node -e '
const fs=require("fs");
const rows=(f)=>new Map(fs.readFileSync(f,"utf8").trim().split("\n").map(l=>{const r=JSON.parse(l.split(process.argv[3]).join(""));return [r.patient,r];}));
const r=rows(process.argv[1]), a=rows(process.argv[2]);
const bad=[];
for (const [p,v] of r) {
  const w=a.get(p);
  if (!w) { bad.push(`${p}: no verdict with absolute references`); continue; }
  for (const k of new Set([...Object.keys(v),...Object.keys(w)]))
    if (JSON.stringify(v[k])!==JSON.stringify(w[k])) bad.push(`${p} ${k}: ${JSON.stringify(v[k]).slice(0,200)} / ${JSON.stringify(w[k]).slice(0,200)}`);
}
if (r.size!==a.size) bad.push(`${r.size} verdicts against ${a.size}`);
if (bad.length) { console.log(bad.length+" differences: "+bad.slice(0,3).join("\n")); process.exit(1); }' \
  "$TMP/rel.verdicts" "$TMP/abs.verdicts" "$BASEURL" >"$TMP/cmp.out" ||
  fail "verdicts with absolute Medication references differ: $(cat "$TMP/cmp.out")"
ok "$n_refs Medication references made absolute URLs: the daemon's $N verdicts are the same, member for member"
echo "test_daemon_med_refs: $CHECKS checks passed"
