#!/usr/bin/env bash
# The referral packet a center's intake nurse reads (issue 17 item 3): built on the referring
# side for every proposed referral and carried in its Bundle; `cartgate referrals packet ID`
# renders it as text, HTML, its JSON document or a PDF laid out by pango. For every synth
# candidate: the PDF opens with pdftotext and holds the diagnosis, the lines of therapy, the
# dates of the pathology and imaging reports of the lookback (and the Bundle the reports), the
# label citation and the referring clinician, and no repository path or table row; the first
# page of one is kept as a PNG under the build folder (artifacts/packet/) for a reviewer.
# A files source (no FHIR server needed).
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
command -v pdftotext >/dev/null && command -v pdftoppm >/dev/null ||
  skip "pdftotext/pdftoppm (poppler-utils) missing: scripts/bootstrap installs them"

mkdir -p "$TMP/drop"
"$CG" synth --seed 11 --patients 40 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"   # nothing listens: sends stay queued
cat >"$TMP/c.conf" <<CONF
{
  "site": {"id": "t-packet", "name": "Demo Community Hospital",
           "location": {"lat": 41.59, "lon": -93.62},
           "referrer": {"name": "Dr. Ada Rivera, hematology-oncology", "phone": "+1-515-555-0142",
                        "direct": "rivera@direct.demo-community.example.org"}},
  "store": {"path": "$TMP/cg.db"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]
}
CONF
start_daemon d1 "$TMP/c.conf"
screened() { [ "$(screened_count "$TMP/cg.db" 2>/dev/null)" = 40 ]; }
wait_for "40 patients screened" 60 screened
# pango and cairo are loaded only when a PDF is drawn (packet.h): the daemon that screened and
# proposed (packets composed as HTML and JSON) maps none of them
[ -z "$(pdf_libs /proc/$DPID/maps)" ] || fail "the daemon maps the PDF renderer without drawing a PDF: $(pdf_libs /proc/$DPID/maps)"
stop_daemon "$DPID"

# the screening stores its proposals without their package: the CLI composes it when it first
# reads one, with the daemon's configuration (-c)
ids=$(sqlite3 "$TMP/cg.db" "SELECT id FROM referrals ORDER BY id")
n=$(echo "$ids" | grep -c .)
[ "$n" -ge 10 ] || fail "expected at least 10 proposed referrals from 40 synth patients, got $n"

# the Bundle: a PractitionerRole requests, with the team's phone and Direct address
first=$(echo "$ids" | head -n1)
"$CG" referrals payload "$first" -c "$TMP/c.conf" --db "$TMP/cg.db" >"$TMP/b.json" || fail "payload"
[ "$(jget "$TMP/b.json" '(()=>{const sr=d.entry.find(e=>e.resource.resourceType==="ServiceRequest");
  const pr=d.entry.find(e=>e.fullUrl===sr.resource.requester.reference);
  return pr.resource.resourceType+"|"+pr.resource.practitioner.display+"|"+pr.resource.telecom.map(t=>t.system+":"+t.value).join(",")})()')" = \
  "PractitionerRole|Dr. Ada Rivera, hematology-oncology|phone:+1-515-555-0142,email:rivera@direct.demo-community.example.org" ] ||
  fail "the ServiceRequest's requester is not the referring clinician's PractitionerRole"
[ "$(jget "$TMP/b.json" 'd.entry.find(e=>e.resource.resourceType==="DocumentReference").resource.content.map(c=>c.attachment.contentType).join(",")')" = \
  "text/plain; charset=utf-8,application/json,text/html; charset=utf-8,application/vnd.cartgate.packet+json" ] ||
  fail "the eligibility DocumentReference lacks the packet attachments"
ok "the Bundle carries the packet (HTML and its document) and the referring clinician as requester"

# every candidate's packet as a PDF, read back as text
bad=0 nrep=0
for id in $ids; do
  "$CG" referrals packet "$id" -c "$TMP/c.conf" --db "$TMP/cg.db" --pdf "$TMP/p$id.pdf" >/dev/null 2>"$TMP/err" ||
    fail "packet $id --pdf: $(cat "$TMP/err")"
  [ "$(stat -c %a "$TMP/p$id.pdf")" = 600 ] || fail "packet PDF not created 0600"
  pdftotext -layout "$TMP/p$id.pdf" "$TMP/p$id.txt" || fail "pdftotext cannot read packet $id"
  t="$TMP/p$id.txt"
  pid=$(sqlite3 "$TMP/cg.db" "SELECT patient_id FROM referrals WHERE id=$id")
  # the diagnosis as one of the EHR's Conditions of the patient names it
  node -e '
const fs=require("fs"); const pid=process.argv[2];
for (const l of fs.readFileSync(process.argv[1],"utf8").trim().split("\n")) {
  const c=JSON.parse(l); if (c.subject.reference!=="Patient/"+pid) continue;
  const t=c.code.text||(c.code.coding||[]).map(x=>x.display).find(Boolean); if (t) console.log(t.slice(0,30)); }' \
    "$TMP/cohort/Condition.000.ndjson" "$pid" >"$TMP/dx"
  flat=$(tr -s ' \n' ' ' <"$t")
  found=0
  while read -r dx; do [[ "$flat" == *"$dx"* ]] && found=1; done <"$TMP/dx"
  [ "$found" = 1 ] || { echo "packet $id names none of the diagnoses $(tr '\n' ';' <"$TMP/dx")"; bad=$((bad + 1)); cp "$t" "$TMP/bad.txt"; }
  for want in "Referral for CAR T-cell therapy evaluation" "Lines of therapy" "Dr. Ada Rivera" \
              "+1-515-555-0142" "Demo Community Hospital" "Insurance"; do
    grep -Fq -- "$want" "$t" || { echo "packet $id lacks \"$want\""; bad=$((bad + 1)); cp "$t" "$TMP/bad.txt"; }
  done
  # the patient's pathology and imaging reports of the last 730 days (the default lookback from
  # the as-of day 2026-11-01): each one's date in the packet's reports table
  grep -Fq "Pathology and imaging reports" "$t" || { echo "packet $id lacks its reports section"; bad=$((bad + 1)); }
  node -e '
const fs=require("fs"); const pid=process.argv[2];
const from=new Date(Date.UTC(2026,10,1)-730*86400000).toISOString().slice(0,10);
for (const l of fs.readFileSync(process.argv[1],"utf8").trim().split("\n")) {
  const r=JSON.parse(l); if (r.subject.reference!=="Patient/"+pid) continue;
  const d=(r.effectiveDateTime||r.issued||"").slice(0,10); if (d>=from) console.log(d); }' \
    "$TMP/cohort/DiagnosticReport.000.ndjson" "$pid" >"$TMP/dr"
  while read -r d; do
    grep -Fq -- "$d" "$t" || { echo "packet $id lacks the report of $d"; bad=$((bad + 1)); cp "$t" "$TMP/bad.txt"; }
  done <"$TMP/dr"
  nrep=$((nrep + $(grep -c . "$TMP/dr")))
  # a label verdict cites its label; a consultation on refer-early grounds cites its guideline
  cat=$(sqlite3 "$TMP/cg.db" "SELECT category FROM verdicts WHERE patient_id='$pid'")
  case $cat in
    eligible|possibly_eligible) cite="US Prescribing Information" ;;
    *) cite="NMDP/ASTCT" ;;
  esac
  [[ "$flat" == *"$cite"* ]] || { echo "packet $id ($cat) lacks \"$cite\""; bad=$((bad + 1)); cp "$t" "$TMP/bad.txt"; }
  if grep -Eq '\.tsv|\.json|clinical\.md|codes\.md|update-2026|conf/|mappings/|gateway/|provenance|row [0-9]' "$t"; then
    echo "packet $id shows internals: $(grep -Eo '.{0,30}(\.tsv|\.json|clinical\.md|codes\.md|update-2026|conf/|mappings/|gateway/|provenance|row [0-9]).{0,30}' "$t" | head -n2)"
    bad=$((bad + 1))
  fi
done
[ "$bad" = 0 ] || { cat "$TMP/bad.txt" >&2; fail "$bad packet check(s) failed (above)"; }
[ "$nrep" -ge 10 ] || fail "only $nrep pathology/imaging reports in the packets' lookback (synth makes them for each candidate)"
ok "$n packets rendered as PDF: each opens with pdftotext and holds the diagnosis, lines of therapy, $nrep pathology/imaging reports by date, label citation, referring clinician and phone; no repository paths or table rows"
# the Bundle carries the same reports as DiagnosticReport entries (references to the patient only)
nb=$(jget "$TMP/b.json" 'd.entry.filter(e=>e.resource.resourceType==="DiagnosticReport").length')
pf=$(sqlite3 "$TMP/cg.db" "SELECT patient_id FROM referrals WHERE id=$first")
nw=$(node -e '
const fs=require("fs"); const pid=process.argv[2]; let n=0;
const from=new Date(Date.UTC(2026,10,1)-730*86400000).toISOString().slice(0,10);
for (const l of fs.readFileSync(process.argv[1],"utf8").trim().split("\n")) {
  const r=JSON.parse(l); if (r.subject.reference==="Patient/"+pid && (r.effectiveDateTime||"").slice(0,10)>=from) n++; }
console.log(n)' "$TMP/cohort/DiagnosticReport.000.ndjson" "$pf")
[ "$nb" = "$nw" ] || fail "Bundle of referral $first: $nb DiagnosticReport entries, $nw expected"
ok "the Bundle carries the patient's $nb pathology/imaging reports of the lookback"

# a lines-of-therapy table with a drug in it (a patient with treatment on record)
grep -l "rituximab\|lenalidomide\|bortezomib\|ibrutinib" "$TMP"/p*.txt >/dev/null || fail "no packet lists a drug of a line"

art="${CARTGATE_BUILD_DIR:-$SRC/build}/artifacts/packet"
mkdir -p "$art"
pdftoppm -png -r 60 -f 1 -l 2 "$TMP/p$first.pdf" "$art/packet" || fail "pdftoppm"
ls "$art"/packet*.png >/dev/null 2>&1 || fail "no PNG rendered"
ok "first pages rendered to $(ls "$art"/packet*.png | tr '\n' ' ')"

# text, HTML and JSON renderings; bad requests
"$CG" referrals packet "$first" --db "$TMP/cg.db" >"$TMP/pk.txt" || fail "packet (text)"
grep -q "^Referring clinician (whom to call)" "$TMP/pk.txt" || fail "text packet lacks its sections"
"$CG" referrals packet "$first" --db "$TMP/cg.db" --html >"$TMP/pk.html" || fail "packet --html"
head -c 15 "$TMP/pk.html" | grep -q "<!doctype html>" || fail "HTML packet does not start as a page"
grep -qi "<script" "$TMP/pk.html" && fail "HTML packet holds a script"
grep -q "https://" "$TMP/pk.html" || fail "HTML packet lacks the label link"
"$CG" referrals packet "$first" --db "$TMP/cg.db" --json >"$TMP/pk.json" || fail "packet --json"
[ "$(jget "$TMP/pk.json" 'd.kind+"/"+d.version')" = "cartgate-packet/1" ] || fail "packet document kind"
"$CG" referrals packet "$first" --db "$TMP/cg.db" --html --json 2>"$TMP/err" && fail "two renderings accepted"
grep -q "choose one of --html, --json, --pdf FILE" "$TMP/err" || fail "no cause: $(cat "$TMP/err")"
"$CG" referrals packet 999999 --db "$TMP/cg.db" 2>"$TMP/err" && fail "packet of a missing referral"
grep -q "referral 999999 does not exist" "$TMP/err" || fail "no cause: $(cat "$TMP/err")"
"$CG" referrals packet "$first" --db "$TMP/cg.db" --pdf "$TMP/no/such/dir/p.pdf" 2>"$TMP/err" && fail "PDF into a missing folder"
grep -q "No such file or directory" "$TMP/err" || fail "no cause: $(cat "$TMP/err")"
"$CG" referrals show "$first" --db "$TMP/cg.db" --pdf "$TMP/x.pdf" 2>"$TMP/err" && fail "--pdf on show accepted"
grep -q "are for the packet action" "$TMP/err" || fail "no cause: $(cat "$TMP/err")"
ok "text, HTML (no script) and JSON renderings; one rendering at a time; a missing referral or folder is an error with its cause"

# the PDF renderer is loaded when the first PDF is drawn, not at start (issue 20): what the
# loader initializes (LD_DEBUG=libs) for a command that draws none and for one that draws one
LD_DEBUG=libs "$CG" version 2>"$TMP/ld.version" >/dev/null || fail "version"
n_version=$(grep -c "calling init:" "$TMP/ld.version")
[ -z "$(pdf_libs "$TMP/ld.version")" ] || fail "cartgate version loads the PDF renderer: $(pdf_libs "$TMP/ld.version")"
LD_DEBUG=libs "$CG" referrals packet "$first" --db "$TMP/cg.db" >/dev/null 2>"$TMP/ld.text" || fail "packet (text)"
[ -z "$(pdf_libs "$TMP/ld.text")" ] || fail "the text packet loads the PDF renderer: $(pdf_libs "$TMP/ld.text")"
LD_DEBUG=libs "$CG" referrals packet "$first" --db "$TMP/cg.db" --pdf "$TMP/again.pdf" >/dev/null 2>"$TMP/ld.pdf" ||
  fail "packet --pdf: $(grep -v '^[[:space:]]*[0-9]*:' "$TMP/ld.pdf")"
for lib in libpangocairo-1.0 libpango-1.0 libcairo libgobject-2.0 libfontconfig; do
  grep -q "calling init: .*/$lib\.so" "$TMP/ld.pdf" || fail "drawing a PDF did not load $lib"
done
ok "cartgate version initializes $n_version libraries, none of pango/cairo's (nor does a text packet); drawing a PDF loads pango, cairo, gobject, fontconfig"
# version --pdf: the renderer's versions and a test page without a patient
"$CG" version --pdf "$TMP/test-page.pdf" >"$TMP/v.out" 2>&1 || fail "version --pdf: $(cat "$TMP/v.out")"
grep -Eq '^PDF renderer pango 1\.[0-9.]+, cairo 1\.[0-9.]+ \(loaded when a PDF is first drawn\)$' "$TMP/v.out" ||
  fail "version --pdf does not name the renderer: $(cat "$TMP/v.out")"
pdftotext "$TMP/test-page.pdf" - | grep -q "Referral for CAR T-cell therapy evaluation" || fail "the test page does not read back"
ok "version --pdf: the renderer's versions and a test page that pdftotext reads"
# a renderer that cannot be loaded (here a broken libpangocairo first on the loader's path):
# the PDF fails with the loader's reason and leaves no file; every other rendering still works
mkdir -p "$TMP/broken"
echo "not a library" >"$TMP/broken/libpangocairo-1.0.so.0"
LD_LIBRARY_PATH="$TMP/broken" "$CG" referrals packet "$first" --db "$TMP/cg.db" --pdf "$TMP/none.pdf" 2>"$TMP/err" >/dev/null &&
  fail "a PDF without its renderer succeeded"
grep -q "the PDF renderer is not installed: $TMP/broken/libpangocairo-1.0.so.0: " "$TMP/err" || fail "no cause: $(cat "$TMP/err")"
ls "$TMP"/none.pdf* >/dev/null 2>&1 && fail "a failed PDF left a file: $(ls "$TMP"/none.pdf*)"
LD_LIBRARY_PATH="$TMP/broken" "$CG" version --pdf "$TMP/none.pdf" >/dev/null 2>"$TMP/err" && fail "version --pdf without its renderer succeeded"
grep -q "^cartgate version: the PDF renderer is not installed: " "$TMP/err" || fail "version --pdf: no cause: $(cat "$TMP/err")"
LD_LIBRARY_PATH="$TMP/broken" "$CG" referrals packet "$first" --db "$TMP/cg.db" --html >"$TMP/pk2.html" || fail "HTML packet without the PDF renderer"
cmp -s "$TMP/pk.html" "$TMP/pk2.html" || fail "the HTML packet differs without the PDF renderer"
ok "without a loadable renderer: the PDF fails with the loader's reason and no file, the HTML packet is unchanged"
echo "test_packet: $CHECKS checks passed"
