#!/usr/bin/env bash
# bench/bulk.sh [PATIENTS] [RUNS] [CONCURRENCY...] — bulk ingest of a large $export from the
# reference FHIR server: `cartgate run` with a bulk source (kick-off, status, manifest, every
# NDJSON file streamed into a fresh store) beside a baseline measured in the same run: `curl`
# doing the same kick-off, status polling and downloads of the same files to /dev/null (no
# parsing, no store). Each CONCURRENCY (default "1 4") is the number of files downloaded at
# once, by curl (xargs -P) and by cartgate (the source's download_concurrency), the modes
# interleaved run by run.
# Per run: wall time from kick-off to the job's DELETE after the last file (cartgate: the
# poll's own duration, the ms= of its poll.done line), CPU time (curl: every curl process, user+sys; cartgate: the
# daemon's user+sys from /proc when poll.done is logged, start-up included) and the
# server's CPU over the same window. Reported: medians of RUNS (>= 5) and resources/s.
# Not run by ctest.
set -euo pipefail
N=${1:-3000}
RUNS=${2:-5}
shift $(( $# >= 2 ? 2 : $# ))
CONCS=("$@")
[ ${#CONCS[@]} -gt 0 ] || CONCS=(1 4)
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/bench/lib.sh"
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
[ -x "$CG" ] || { echo "build cartgate first ($CG)"; exit 1; }
TMP=$(mktemp -d /tmp/cg-bench-bulk.XXXXXX)
trap bench_cleanup EXIT

"$CG" synth --seed 7 --patients "$N" --out "$TMP/cohort" --format ndjson 2>/dev/null
mkdir -p "$TMP/seed" && cp "$TMP"/cohort/*.000.ndjson "$TMP/seed/"
node -e '
const fs=require("fs");
const ids=fs.readFileSync(process.argv[1],"utf8").trim().split("\n").map(l=>JSON.parse(l).id);
fs.writeFileSync(process.argv[2], JSON.stringify({resourceType:"Group",id:"cohort",type:"person",actual:true,
  member:ids.map(id=>({entity:{reference:"Patient/"+id}}))})+"\n");' "$TMP/cohort/Patient.000.ndjson" "$TMP/seed/Group.ndjson"
RES=$(cat "$TMP"/cohort/*.000.ndjson | wc -l)
TYPES=$(ls "$TMP"/cohort/*.000.ndjson | xargs -n1 basename | sed 's/\.000\.ndjson$//' | paste -sd, -)
node "$SRC/tests/fhir-server/server.mjs" --port 0 --seed "$TMP/seed" --no-validate >"$TMP/srv.out" 2>"$TMP/srv.err" &
SPID=$!
for _ in $(seq 1 1200); do
  PORT=$(head -n1 "$TMP/srv.out" 2>/dev/null || true)
  [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" = 200 ] && break
  sleep 0.1
done
BASE="http://127.0.0.1:$PORT/fhir"
KICK="$BASE/Group/cohort/\$export?_type=$TYPES"
export CARTGATE_ADMIN_TOKEN=bench

# curl_run CONC: kick-off, status polling, every file to /dev/null with CONC at once; prints
# "wall_ms curl_cpu_s resources".
curl_run() {
  local conc=$1 t0 t1 status manifest
  t0=$(ms_now)
  status=$(curl -s -D - -o /dev/null -H 'Prefer: respond-async' -H 'Accept: application/fhir+json' "$KICK" |
    sed -n 's/^[Cc]ontent-[Ll]ocation: *//p' | tr -d '\r')
  while :; do
    code=$(curl -s -o "$TMP/manifest.json" -w '%{http_code}' "$status")
    [ "$code" = 200 ] && break
    [ "$code" = 202 ] || { echo "status $code" >&2; exit 1; }
    sleep 0.2
  done
  # output URLs without starting node inside the timed part (the server writes "url":"..." compact)
  grep -o '"url":"[^"]*"' "$TMP/manifest.json" | sed 's/^"url":"//; s/"$//' >"$TMP/urls.txt"
  /usr/bin/time -f '%U %S' -o "$TMP/curl.time" \
    xargs -P "$conc" -n 1 curl -s -f -o /dev/null -H 'Accept: application/fhir+ndjson' <"$TMP/urls.txt"
  curl -s -o /dev/null -X DELETE "$status"
  t1=$(ms_now)
  local n
  n=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).output.reduce((s,o)=>s+o.count,0))' "$TMP/manifest.json")
  echo "$(( t1 - t0 )) $(awk '{print $1 + $2}' "$TMP/curl.time") $n"
}

# cartgate_run CONC: a daemon with one bulk source on a fresh store; prints
# "poll_ms daemon_cpu_s resources".
cartgate_run() {
  local conc=$1 line
  rm -f "$TMP"/d.db*
  cat >"$TMP/d.conf" <<EOF
{"site": {"id": "bench", "location": {"lat": 41.59, "lon": -93.62}},
 "store": {"path": "$TMP/d.db"}, "log": {"level": "info"},
 "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
 "centers": {"file": "$SRC/conf/centers.json"}, "criteria": {"dir": "$SRC/conf/criteria"},
 "as_of": "2026-11-01", "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
 "sources": [{"name": "ehr", "kind": "bulk", "base_url": "$BASE", "group_id": "cohort",
              "types": ["$(echo "$TYPES" | sed 's/,/", "/g')"], "interval_s": 3600,
              "download_concurrency": $conc}]}
EOF
  "$CG" run -c "$TMP/d.conf" 2>"$TMP/d.log" &
  DPID=$!
  line=""
  for _ in $(seq 1 12000); do
    line=$(grep -m1 'event="poll.done"' "$TMP/d.log" || true)
    [ -n "$line" ] && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
  done
  local cpu
  cpu=$(cpu_s "$DPID")
  kill "$DPID"
  wait "$DPID" || true
  DPID=""
  [[ "$line" == *result=\"ok\"* ]] || { echo "cartgate poll failed: $line" >&2; tail -5 "$TMP/d.log" >&2; exit 1; }
  local ms changed
  ms=$(sed -n 's/.* ms="\([0-9]*\)".*/\1/p' <<<"$line")
  changed=$(sed -n 's/.* changed="\([0-9]*\)".*/\1/p' <<<"$line")
  echo "$ms $cpu $changed"
}

: >"$TMP/runs.txt"
for r in $(seq 1 "$RUNS"); do
  for c in "${CONCS[@]}"; do
    for mode in curl cartgate; do
      s0=$(cpu_s "$SPID")
      out=$(${mode}_run "$c")
      s1=$(cpu_s "$SPID")
      echo "$mode $c $out $(calc "$s1 - $s0")" >>"$TMP/runs.txt"
      echo "run $r: $mode conc=$c: $out server_cpu=$(calc "$s1 - $s0")" >&2
    done
  done
done

printf 'cohort %d patients, %d resources in %d types; runs %d (medians); %s\n' "$N" "$RES" \
  "$(echo "$TYPES" | tr ',' '\n' | wc -l)" "$RUNS" "$(date -u +%Y-%m-%d)"
printf '%-9s %4s %9s %11s %9s %10s %9s\n' mode conc wall_ms resources/s cpu_s server_cpu resources
for c in "${CONCS[@]}"; do
  for mode in curl cartgate; do
    rows=$(awk -v m="$mode" -v c="$c" '$1 == m && $2 == c' "$TMP/runs.txt")
    wall=$(awk '{print $3}' <<<"$rows" | median)
    cpu=$(awk '{print $4}' <<<"$rows" | median)
    nres=$(awk '{print $5}' <<<"$rows" | median)
    scpu=$(awk '{print $6}' <<<"$rows" | median)
    printf '%-9s %4d %9.0f %11.0f %9.2f %10.2f %9.0f\n' "$mode" "$c" "$wall" "$(calc "$nres * 1000 / $wall")" "$cpu" "$scpu" "$nres"
  done
  cw=$(awk -v c="$c" '$1 == "curl" && $2 == c {print $3}' "$TMP/runs.txt" | median)
  gw=$(awk -v c="$c" '$1 == "cartgate" && $2 == c {print $3}' "$TMP/runs.txt" | median)
  printf 'conc %d: cartgate wall / curl wall = %.2f\n' "$c" "$(calc "$gw / $cw")"
done
