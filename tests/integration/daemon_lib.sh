# Shared helpers of the daemon integration tests (sourced by tests/integration/test_daemon_*.sh).
# Everything runs on 127.0.0.1 with random ports; every process started is stopped by the
# EXIT trap, also on failure. Loops are bounded.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TOKEN="admin-token-$$-$RANDOM"
export CARTGATE_ADMIN_TOKEN="$TOKEN"

# The daemon tests' tool check: the reference server, node, curl, sqlite3 and the binary.
daemon_need_tools() {
  need_tools node curl sqlite3
  need_cartgate
}

# cohort DIR SEED N: a synth cohort in DIR/cohort and a seed folder DIR/seed (resources plus a
# Group "cohort" listing every patient) for the reference server.
cohort() {
  local dir=$1 seed=$2 n=$3
  "$CG" synth --seed "$seed" --patients "$n" --out "$dir/cohort" --format ndjson >/dev/null ||
    fail "synth failed"
  mkdir -p "$dir/seed"
  cp "$dir"/cohort/*.000.ndjson "$dir/seed/"
  node -e '
const fs=require("fs");
const ids=fs.readFileSync(process.argv[1],"utf8").trim().split("\n").map(l=>JSON.parse(l).id);
const g={resourceType:"Group",id:"cohort",type:"person",actual:true,
  member:ids.map(id=>({entity:{reference:"Patient/"+id}}))};
fs.writeFileSync(process.argv[2], JSON.stringify(g)+"\n");' "$dir/cohort/Patient.000.ndjson" "$dir/seed/Group.ndjson"
}

# demo_seed OUT: the demo DLBCL fixture (a collection Bundle) as NDJSON for the reference
# server, its urn:uuid references made Type/id.
demo_seed() {
  node -e '
const fs=require("fs");
const b=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
const map=new Map(b.entry.map(e=>[e.fullUrl, e.resource.resourceType+"/"+e.resource.id]));
const out=b.entry.map(e=>JSON.stringify(e.resource, (k,v)=>k==="reference"&&map.has(v)?map.get(v):v));
fs.writeFileSync(process.argv[2], out.join("\n")+"\n");' "$SRC/tests/fixtures/demo-dlbcl-bundle.json" "$1" ||
    fail "demo fixture"
}

# centers_for CENTER_BASE OUT: the sample directory with every center at CENTER_BASE.
centers_for() {
  node -e '
const fs=require("fs");
const d=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
for (const c of d.centers) c.fhir={base:process.argv[2],auth:{type:"none"}};
fs.writeFileSync(process.argv[3], JSON.stringify(d,null,1));' "$SRC/conf/centers.json" "$1" "$2"
}

# start_daemon NAME CONF: runs cartgate run -c CONF; sets DPID and ADMIN (http://127.0.0.1:port).
start_daemon() {
  local name=$1 conf=$2
  "$CG" run -c "$conf" 2>>"$TMP/$name.log" &
  DPID=$!
  PIDS+=("$DPID")
  ADMIN=""
  for _ in $(seq 1 300); do
    kill -0 "$DPID" 2>/dev/null || fail "daemon $name exited early"
    local port
    port=$(sed -n 's/.*event="admin.listen" bind="[^"]*" port="\([0-9]*\)".*/\1/p' "$TMP/$name.log" 2>/dev/null | tail -n1)
    if [ -n "$port" ]; then
      ADMIN="http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  fail "daemon $name did not log admin.listen"
}

# stop_daemon PID: SIGTERM and wait (bounded); sets DRC to the exit status.
stop_daemon() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "daemon did not stop within 60 s of SIGTERM"
  wait "$pid"
  DRC=$?
}

# api PATH [curl args]: GET with the token; body in $TMP/resp, status in $CODE.
api() {
  local path=$1
  shift
  CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$@" "$ADMIN$path")
}

# metric NAME_WITH_LABELS: value from /metrics (empty when absent).
metric() {
  api /metrics
  grep -F "$1 " "$TMP/resp" | head -n1 | awk '{print $NF}'
}

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.5 s.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local i
  for i in $(seq 1 $((secs * 2))); do
    "$@" && return 0
    sleep 0.5
  done
  fail "timed out after ${secs}s waiting for: $what"
}

# screened_count: patients with a verdict (store).
screened_count() { sqlite3 "$1" "SELECT count(*) FROM verdicts"; }
# pdf_libs FILE: the PDF renderer's libraries (pango, cairo and what they bring) that FILE names
# (/proc/PID/maps, LD_DEBUG output), one line; empty when none. They are loaded when a process
# first draws a PDF (gateway/referral/packet.h).
pdf_libs() { grep -Eo '/lib(pangocairo-1\.0|pango-1\.0|cairo|gobject-2\.0|fontconfig|harfbuzz)\.so[.0-9]*' "$1" | sort -u | tr '\n' ' '; }

# source_conf NAME SOURCE_JSON [GRACE]: $TMP/NAME.conf, a daemon with that one source, store
# $TMP/NAME.db, centers $TMP/centers.json, as of 2026-11-01, nothing sent.
source_conf() {
  cat >"$TMP/$1.conf" <<EOF
{
  "site": {"id": "t-src", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/$1.db"},
  "log": {"level": "debug"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "shutdown_grace_s": ${3:-30},
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [$2]
}
EOF
}
# verdicts_of DB: "patient|category" lines, sorted.
verdicts_of() { sqlite3 "$1" "SELECT patient_id || '|' || category FROM verdicts ORDER BY 1"; }
# all_screened DB: all $N patients have a verdict and none waits for screening.
all_screened() { [ "$(screened_count "$1" 2>/dev/null)" = $N ] && [ "$(sqlite3 "$1" 'SELECT count(*) FROM daemon_dirty')" = 0 ]; }
# reads_setup N SERVER_ARGS...: a synth cohort of N (seed 21) with its `cartgate screen`
# verdicts in $TMP/expected.txt, centers that are never reached, and the reference server
# "ehr" requiring a bearer token (TOK, in $TMP/ehr.token) with a second origin (--alt-port):
# sets EHR, EPORT, QADMIN (its admin API), ALT (the second origin) and AUTH (the sources'
# "auth" member).
reads_setup() {
  N=$1
  shift
  cohort "$TMP" 21 "$N"
  expected_verdicts "$TMP/cohort" "$TMP/expected.txt"
  [ "$(wc -l <"$TMP/expected.txt")" = "$N" ] || fail "screen gave $(wc -l <"$TMP/expected.txt") rows"
  centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"
  printf 'reads-%s-%s\n' "$RANDOM" "$RANDOM" >"$TMP/ehr.token"
  chmod 600 "$TMP/ehr.token"
  TOK=$(head -n1 "$TMP/ehr.token")
  start_server ehr --seed "$TMP/seed" --token "$TOK" --alt-port 0 "$@"
  EHR=$BASE
  EPORT=$PORT
  QADMIN="http://127.0.0.1:$PORT/admin"
  ALT="http://127.0.0.1:$(sed -n 2p "$TMP/ehr.out")"
  AUTH="\"auth\":{\"kind\":\"bearer\",\"token_file\":\"$TMP/ehr.token\"}"
}
# quirks JSON: replaces the quirks of the server at QADMIN.
quirks() { [ "$(curl -s -o "$TMP/q.out" -w '%{http_code}' -X POST -d "$1" "$QADMIN/quirks")" = 200 ] || fail "quirks $1: $(cat "$TMP/q.out")"; }
# held_of DB: patients held by an incomplete poll; cursor_of DB KEY: a cursor's value.
held_of() { sqlite3 "$1" "SELECT count(*) FROM held"; }
cursor_of() { sqlite3 "$1" "SELECT value FROM cursors WHERE key='$2'"; }

# expected_verdicts COHORT_DIR OUT: `cartgate screen` of the cohort files as "patient|category".
expected_verdicts() {
  "$CG" screen --as-of 2026-11-01 --json "$1" >"$2.ndjson" 2>/dev/null || fail "cartgate screen $1"
  node -e '
const fs=require("fs");
const rows=fs.readFileSync(process.argv[1],"utf8").trim().split("\n").map(JSON.parse);
fs.writeFileSync(process.argv[2], rows.map(r=>r.patient+"|"+r.category).sort().join("\n")+"\n");' "$2.ndjson" "$2"
}

# test_ca: a test CA in $TMP/ca.crt (key $TMP/ca.key); then server_cert SERIAL writes
# $TMP/tls.crt and $TMP/tls.key (0600) for 127.0.0.1, signed by it. openssl's chatter goes to
# $TMP/openssl.txt.
pki() { openssl "$@" >/dev/null 2>>"$TMP/openssl.txt" || fail "openssl $1: $(tail -3 "$TMP/openssl.txt")"; }
test_ca() {
  command -v openssl >/dev/null || fail "openssl not installed"
  pki req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/ca.key" -out "$TMP/ca.crt" -days 2 -subj "/CN=cartgate test CA"
}
server_cert() {
  pki req -newkey rsa:2048 -nodes -keyout "$TMP/tls.key.new" -out "$TMP/tls.csr" -subj /CN=127.0.0.1
  printf 'subjectAltName=IP:127.0.0.1\n' >"$TMP/san.ext"
  pki x509 -req -in "$TMP/tls.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -set_serial "$1" -days 1 \
    -extfile "$TMP/san.ext" -out "$TMP/tls.crt.new"
  mv "$TMP/tls.key.new" "$TMP/tls.key"
  mv "$TMP/tls.crt.new" "$TMP/tls.crt"
  chmod 600 "$TMP/tls.key"
}
# free_port: a TCP port free on 127.0.0.1 right now (for a URL needed before the listener
# starts, e.g. an OpenID Connect redirect URI).
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'; }

# phi_terms PATIENTS_NDJSON OUT [all]: the PHI of the Patient resources, one term a line (at
# least 3 characters; grep -F -w -f OUT finds them): names, identifiers (MRNs), birth dates,
# address lines, telecom; with "all" also the patient ids, cities and postal codes (for text
# that must not name a patient at all, such as a notification).
phi_terms() {
  node -e '
const fs=require("fs");
const all=process.argv[3]==="all", out=new Set();
for (const l of fs.readFileSync(process.argv[1],"utf8").trim().split("\n")) {
  const p=JSON.parse(l);
  if (all) out.add(p.id);
  for (const n of p.name||[]) { if (n.family) out.add(n.family); for (const g of n.given||[]) out.add(g); }
  for (const i of p.identifier||[]) if (i.value) out.add(i.value);
  if (p.birthDate) out.add(p.birthDate);
  for (const a of p.address||[]) {
    for (const x of a.line||[]) out.add(x);
    if (all && a.city) out.add(a.city);
    if (all && a.postalCode) out.add(a.postalCode);
  }
  for (const t of p.telecom||[]) if (t.value) out.add(t.value);
}
fs.writeFileSync(process.argv[2], [...out].filter(s=>s.length>=3).join("\n")+"\n");' "$1" "$2" "${3:-}"
}
