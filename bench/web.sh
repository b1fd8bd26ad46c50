#!/usr/bin/env bash
# bench/web.sh [PATIENTS] [REQUESTS] — response times of the clinician's pages with PATIENTS
# screened patients in the store (default 10,000), as ratios to /healthz on the same listener
# in the same run: the worklist's first page, a page deep in the list (offset ~ the middle),
# the worklist filtered by disease, and the patient page of a candidate (which screens the
# cached record again). REQUESTS (>= 200) sequential keep-alive requests each, interleaved
# round-robin so load from other processes hits all alike; median and p99 in ms, and the
# daemon's peak RSS (VmHWM) after serving. The cohort goes in through a files source (a drop
# folder of NDJSON). Not run by ctest.
set -euo pipefail
N=${1:-10000}
REQ=${2:-200}
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$SRC/tests/fhir-server/runtime/bin" ] && PATH="$SRC/tests/fhir-server/runtime/bin:$PATH"
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
[ -x "$CG" ] || { echo "build cartgate first ($CG)"; exit 1; }
TMP=$(mktemp -d /tmp/cg-bench-web.XXXXXX)
DPID=""
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
export CARTGATE_ADMIN_TOKEN="bench-$RANDOM-$RANDOM"
"$CG" synth --seed 7 --patients "$N" --out "$TMP/cohort" --format ndjson 2>/dev/null
mkdir -p "$TMP/drop"
cp "$TMP"/cohort/*.ndjson "$TMP/drop/"
cat >"$TMP/d.conf" <<EOF
{"site": {"id": "bench", "name": "Bench Hospital", "location": {"lat": 41.59, "lon": -93.62}},
 "store": {"path": "$TMP/d.db"}, "log": {"level": "info"},
 "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
 "centers": {"file": "$SRC/conf/centers.json"}, "criteria": {"dir": "$SRC/conf/criteria"},
 "as_of": "2026-11-01", "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
 "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}]}
EOF
"$CG" run -c "$TMP/d.conf" 2>"$TMP/d.log" &
DPID=$!
PORT=""
for _ in $(seq 1 600); do
  PORT=$(sed -n 's/.*event="admin.listen" bind="[^"]*" port="\([0-9]*\)".*/\1/p' "$TMP/d.log" | tail -n1)
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "no listener"; tail -5 "$TMP/d.log"; exit 1; }
t0=$(date +%s)
for _ in $(seq 1 7200); do
  n=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM verdicts" 2>/dev/null || echo 0)
  d=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM daemon_dirty" 2>/dev/null || echo 1)
  [ "$n" = "$N" ] && [ "$d" = 0 ] && break
  sleep 0.5
done
[ "$n" = "$N" ] || { echo "only $n of $N screened"; exit 1; }
echo "screened $N patients in $(( $(date +%s) - t0 )) s; on the worklist: $(sqlite3 "$TMP/d.db" "SELECT count(*) FROM worklist WHERE on_list = 1")"
ONLIST=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM worklist WHERE on_list = 1")
MID=$(( (ONLIST / 50 / 2) + 1 ))
PID_PAGE=$(sqlite3 "$TMP/d.db" "SELECT patient_id FROM worklist WHERE on_list = 1 AND category = 'eligible' ORDER BY patient_id LIMIT 1")
node - "$PORT" "$REQ" "$MID" "$PID_PAGE" <<'EOF'
const http = require('http');
const [port, req, mid, pid] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const token = process.env.CARTGATE_ADMIN_TOKEN;
const paths = { healthz: '/healthz', worklist: '/ui/', 'worklist deep page': `/ui/?page=${mid}`,
                'worklist by disease': '/ui/?disease=dlbcl_nos', 'patient page': `/ui/patients/${pid}` };
const get = (p) => new Promise((res, rej) => {
  const t = process.hrtime.bigint();
  http.get({ host: '127.0.0.1', port, path: p, agent, headers: { Authorization: `Bearer ${token}` } }, (r) => {
    let n = 0; r.on('data', (c) => { n += c.length; });
    r.on('end', () => r.statusCode === 200 ? res([Number(process.hrtime.bigint() - t) / 1e6, n]) : rej(new Error(`${p}: ${r.statusCode}`)));
  }).on('error', rej);
});
(async () => {
  const ms = Object.fromEntries(Object.keys(paths).map((k) => [k, []])), bytes = {};
  for (const k of Object.keys(paths)) await get(paths[k]); // warm
  for (let i = 0; i < +req; i++)
    for (const [k, p] of Object.entries(paths)) { const [t, n] = await get(p); ms[k].push(t); bytes[k] = n; }
  const q = (a, f) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(f * s.length))]; };
  const med = (a) => { const s = [...a].sort((x, y) => x - y), n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
  const h = med(ms.healthz), hp = q(ms.healthz, 0.99);
  console.log(`| page | bytes | median ms | p99 ms | median / healthz | p99 / healthz p99 |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const k of Object.keys(paths))
    console.log(`| ${k} | ${bytes[k]} | ${med(ms[k]).toFixed(2)} | ${q(ms[k], 0.99).toFixed(2)} | ${(med(ms[k]) / h).toFixed(1)} | ${(q(ms[k], 0.99) / hp).toFixed(1)} |`);
  console.log(`(${req} requests per page, sequential, keep-alive, interleaved)`);
})().catch((e) => { console.error(e.message); process.exit(1); });
EOF
echo "daemon peak RSS (VmHWM): $(awk '/VmHWM/ {print $2, $3}' "/proc/$DPID/status")"
