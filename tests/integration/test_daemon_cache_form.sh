#!/usr/bin/env bash
# The resource cache keeps each resource in its binary form (fhir/fhir_bin.h), and a store
# written by an older version keeps its JSON text rows readable. A synth cohort screened by the
# daemon (files source) leaves every cached resource a BLOB. The same store with every resource
# turned back into its JSON text (as older versions wrote it), its verdicts removed and its
# patients marked for screening gives the same verdicts, member for member, screened from the
# text rows; the same files dropped again then replace the text rows by the binary form (each
# counted as a change once), the verdicts still the same.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools

N=30
"$CG" synth --seed 23 --patients $N --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
mkdir -p "$TMP/drop"
source_conf run "{\"name\": \"drop\", \"kind\": \"files\", \"dir\": \"$TMP/drop\", \"interval_s\": 1}"
DB="$TMP/run.db"
settled() { [ "$(screened_count "$DB" 2>/dev/null)" = $N ] &&
  [ "$(sqlite3 "$DB" 'SELECT count(*) FROM daemon_dirty' 2>/dev/null)" = 0 ]; }

# 1. screened from the files: every cached resource in the binary form
cp "$TMP"/cohort/*.ndjson "$TMP/drop/"
start_daemon run "$TMP/run.conf"
wait_for "$N patients screened" 120 settled
stop_daemon "$DPID"
total=$(sqlite3 "$DB" "SELECT count(*) FROM resources")
[ "$total" -gt $N ] || fail "only $total resources cached"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE typeof(json) <> 'blob'")" = 0 ] ||
  fail "resources cached other than in the binary form"
ok "$total resources cached, each in the binary form"
# what support reads of one: `cartgate store resource` prints it as the JSON it came as
pat=$(head -n1 "$TMP"/cohort/*Patient*.ndjson)
pid=$(node -e 'console.log(JSON.parse(process.argv[1]).id)' "$pat")
"$CG" store resource --db "$DB" "Patient/$pid" >"$TMP/shown.json" 2>"$TMP/shown.err" ||
  fail "store resource: $(cat "$TMP/shown.err")"
node -e '
const fs=require("fs"), a=JSON.parse(process.argv[1]), b=JSON.parse(fs.readFileSync(process.argv[2],"utf8"));
if (JSON.stringify(a)!==JSON.stringify(b)) { console.log("printed: "+JSON.stringify(b).slice(0,300)); process.exit(1); }' \
  "$pat" "$TMP/shown.json" >"$TMP/shown.cmp" || fail "the printed resource is not the one sent: $(cat "$TMP/shown.cmp")"
"$CG" store resource --db "$DB" "Patient/not-there" >/dev/null 2>"$TMP/shown.err"
[ $? = 1 ] && grep -q "not cached" "$TMP/shown.err" || fail "an absent resource: $(cat "$TMP/shown.err")"
ok "cartgate store resource prints a cached resource as the JSON it came as; an absent one says so"
sqlite3 "$DB" "SELECT verdict_json FROM verdicts ORDER BY patient_id" >"$TMP/bin.verdicts"

# 2. the store as an older version left it: JSON text rows; verdicts gone, patients marked
node -e '
const fs=require("fs"), path=require("path");
const q=(s)=>"\x27"+s.split("\x27").join("\x27\x27")+"\x27";
let sql="BEGIN;\n";
for (const f of fs.readdirSync(process.argv[1]).filter(f=>f.endsWith(".ndjson")))
  for (const line of fs.readFileSync(path.join(process.argv[1],f),"utf8").split("\n")) {
    if (!line.trim()) continue;
    const r=JSON.parse(line);
    if (!r.resourceType || !r.id) continue; /* the cohort expectations, not a resource */
    sql+=`UPDATE resources SET json = ${q(line)} WHERE type = ${q(r.resourceType)} AND id = ${q(r.id)};\n`;
  }
sql+="DELETE FROM worklist; DELETE FROM verdicts;\n";
sql+="INSERT OR IGNORE INTO daemon_dirty(patient_id, marked_ms) SELECT DISTINCT patient_id, 0 FROM resources WHERE patient_id <> \x27\x27;\nCOMMIT;\n";
fs.writeFileSync(process.argv[2], sql);' "$TMP/cohort" "$TMP/older.sql" || fail "writing the older rows"
sqlite3 "$DB" <"$TMP/older.sql" || fail "turning the cache into text rows"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE typeof(json) = 'text'")" = "$total" ] ||
  fail "not every row is JSON text"
find "$TMP/drop" -maxdepth 1 -type f -delete
start_daemon run2 "$TMP/run.conf"
wait_for "$N patients screened again from text rows" 120 settled
stop_daemon "$DPID"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE typeof(json) = 'text'")" = "$total" ] ||
  fail "the text rows changed without new data"
sqlite3 "$DB" "SELECT verdict_json FROM verdicts ORDER BY patient_id" >"$TMP/text.verdicts"
cmp -s "$TMP/bin.verdicts" "$TMP/text.verdicts" ||
  fail "verdicts screened from JSON text rows differ: $(diff "$TMP/bin.verdicts" "$TMP/text.verdicts" | head -c 600)"
ok "an older store's $total JSON text rows: the same $N verdicts, member for member"

# 3. the same data again: the text rows become the binary form, counted as changes once
cp "$TMP"/cohort/*.ndjson "$TMP/drop/"
start_daemon run3 "$TMP/run.conf"
converted() { [ "$(sqlite3 "$DB" "SELECT count(*) FROM resources WHERE typeof(json) = 'blob'" 2>/dev/null)" = "$total" ] &&
  [ "$(sqlite3 "$DB" 'SELECT count(*) FROM daemon_dirty' 2>/dev/null)" = 0 ] &&
  grep -q 'event="poll.done".*changed="[1-9]' "$TMP/run3.log"; }
wait_for "the text rows replaced by the binary form" 120 converted
stop_daemon "$DPID"
sqlite3 "$DB" "SELECT verdict_json FROM verdicts ORDER BY patient_id" >"$TMP/again.verdicts"
cmp -s "$TMP/bin.verdicts" "$TMP/again.verdicts" || fail "verdicts differ after the rows were replaced"
ok "the same files again: every row back in the binary form, the verdicts unchanged"
echo "test_daemon_cache_form: $CHECKS checks passed"
