#!/usr/bin/env bash
# bench/cds.sh [PATIENTS] [ROUNDS] [CALLS] [FETCH] — latency of the CDS Hooks service of
# `cartgate run` as the EHR sees it (tests/cds-ehr/ehr.mjs bench, Node fetch on loopback):
#   - POST /cds-services/cartgate-car-t with a full prefetch built from synth patients (JWT
#     verified, replay recorded in the store, the one screening path, the card), ROUNDS x CALLS
#     calls (>= 500), each interleaved with a GET /cds-services (discovery) on the same
#     listener: the baseline in the same run; the headline is the ratio of their medians
#     (median over the rounds), with the median and p99 of each;
#   - FETCH calls without prefetch: the service reads the 8 prefetch queries from the reference
#     FHIR server (tests/fhir-server, bearer token) before screening.
# JWTs are signed before the clock starts. The key set is fetched once (cached). Not run by
# ctest. CARTGATE_BIN runs another binary.
set -euo pipefail
N=${1:-50}
ROUNDS=${2:-5}
CALLS=${3:-100}
FETCH=${4:-100}
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$SRC/tests/fhir-server/runtime/bin" ] && PATH="$SRC/tests/fhir-server/runtime/bin:$PATH"
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
[ -x "$CG" ] || { echo "build cartgate first ($CG)"; exit 1; }
[ -d "$SRC/tests/cds-ehr/node_modules/jose" ] || { echo "run scripts/bootstrap first (tests/cds-ehr)"; exit 1; }
TMP=$(mktemp -d /tmp/cg-bench-cds.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
wait_port() { # FILE: the first line once it is a port
  local p=""
  for _ in $(seq 1 600); do
    p=$(head -n1 "$1" 2>/dev/null || true)
    [[ "$p" =~ ^[0-9]+$ ]] && { echo "$p"; return 0; }
    sleep 0.1
  done
  echo "no port in $1" >&2
  exit 1
}
"$CG" synth --seed 7 --patients "$N" --out "$TMP/cohort" --format ndjson >/dev/null 2>&1
"$CG" synth --seed 7 --patients "$N" --out "$TMP/bundles" --format bundle >/dev/null 2>&1
mkdir -p "$TMP/seed" "$TMP/keys" && cp "$TMP"/cohort/*.000.ndjson "$TMP/seed/"
TOKEN="bench-$$"
node "$SRC/tests/fhir-server/server.mjs" --port 0 --seed "$TMP/seed" --token "$TOKEN" >"$TMP/srv.out" 2>"$TMP/srv.err" &
PIDS+=($!)
SPORT=$(wait_port "$TMP/srv.out")
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SPORT/healthz")" = 200 ] && break
  sleep 0.1
done
node "$SRC/tests/cds-ehr/ehr.mjs" jwks "$TMP/keys" >"$TMP/jwks.out" 2>"$TMP/jwks.err" &
PIDS+=($!)
JPORT=$(wait_port "$TMP/jwks.out")
APORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});')
cat >"$TMP/d.conf" <<CONF
{"site": {"id": "bench", "location": {"lat": 41.59, "lon": -93.62}},
 "store": {"path": "$TMP/d.db"}, "log": {"level": "warn"},
 "admin": {"port": $APORT},
 "centers": {"file": "$SRC/conf/centers.json"}, "criteria": {"dir": "$SRC/conf/criteria"},
 "as_of": "2026-11-01", "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
 "cds": {"enabled": true, "public_url": "http://127.0.0.1:$APORT",
         "clients": ["https://ehr.test.example/cds-client http://127.0.0.1:$JPORT/jwks.json"],
         "fhir_servers": ["http://127.0.0.1:$SPORT/fhir"], "fetch_timeout_ms": 10000},
 "sources": []}
CONF
"$CG" run -c "$TMP/d.conf" 2>"$TMP/d.log" &
PIDS+=($!)
for _ in $(seq 1 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$APORT/healthz")" = 200 ] && break
  sleep 0.1
done
node "$SRC/tests/cds-ehr/ehr.mjs" bench --cartgate "http://127.0.0.1:$APORT" --public "http://127.0.0.1:$APORT" \
  --keys "$TMP/keys" --bundles "$TMP/bundles" --truth "$TMP/bundles/ground_truth.ndjson" \
  --fhir "http://127.0.0.1:$SPORT/fhir" --token "$TOKEN" --rounds "$ROUNDS" --calls "$CALLS" --fetch "$FETCH" >"$TMP/bench.json"
node -e '
const d=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
const f=(x)=>x.toFixed(2);
console.log(`patients ${process.argv[2]}, ${d.calls} service calls with prefetch (${d.cards} cards), ${d.discovery_calls} discovery calls, ${d.fetch_calls} calls reading the FHIR server`);
console.log(`service with prefetch: median ${f(d.service.median)} ms, p99 ${f(d.service.p99)} ms`);
console.log(`discovery (baseline): median ${f(d.discovery.median)} ms, p99 ${f(d.discovery.p99)} ms`);
console.log(`ratio service/discovery (median of ${d.rounds.length} rounds): ${f(d.ratio_median_of_rounds)}  rounds: ${d.rounds.map(r=>f(r.ratio)).join(" ")}`);
console.log(`service without prefetch (8 reads from the reference FHIR server): median ${f(d.fetch.median)} ms, p99 ${f(d.fetch.p99)} ms`);
' "$TMP/bench.json" "$N"
echo "load average: $(cut -d" " -f1-3 /proc/loadavg); $(nproc) cores"
