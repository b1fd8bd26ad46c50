#!/usr/bin/env bash
# bench/daemon_ab.sh BIN_A BIN_B [PATIENTS] [PAIRS] — two builds of `cartgate run` on the same
# synth cohort and the same reference FHIR server, in interleaved pairs (A B, then B A, ...:
# drift of the machine falls on both), each run with a fresh store. Per run: the daemon's CPU
# (bench/lib.sh cpu_s) until every patient has a verdict, the server's CPU over the same window, the bytes
# the daemon wrote (/proc/PID/io wchar) and the store's size. Prints every run, the medians per
# build and the median of the per-pair ratios B/A; "pairs with B lower" says whether a change is
# larger than the machine's noise (the server's CPU for identical pages varies by ±20 % on a
# shared VM, so compare builds with each other, not a ratio to the server across sessions).
# VALGRIND=1 adds one run per build under `valgrind --tool=cachegrind` (instructions: load-
# independent; ≈ 20× slower). Builds: `cmake --install <build> --prefix DIR`, then DIR/bin/cartgate
# (so that each finds its own data folder). Not run by ctest.
set -euo pipefail
A=${1:?BIN_A}; B=${2:?BIN_B}; N=${3:-2000}; PAIRS=${4:-5}
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/bench/lib.sh"
for b in "$A" "$B"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 1; }; done
TMP=$(mktemp -d /tmp/cg-bench-ab.XXXXXX)
trap bench_cleanup EXIT
"$A" synth --seed 7 --patients "$N" --out "$TMP/cohort" --format ndjson 2>/dev/null
mkdir -p "$TMP/seed" && cp "$TMP"/cohort/*.000.ndjson "$TMP/seed/"
bench_server "$TMP/seed"

# run LABEL BIN [valgrind]: one daemon run; appends "LABEL cpu server_cpu wchar store_bytes [instructions]"
run() {
  local label=$1 bin=$2 vg=${3:-}
  bench_daemon_conf "$TMP/d.conf"
  sync
  local s0 s1 d w n left
  s0=$(cpu_s "$SPID")
  if [ -n "$vg" ]; then
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" run -c "$TMP/d.conf" 2>"$TMP/d.log" &
  else
    "$bin" run -c "$TMP/d.conf" 2>"$TMP/d.log" &
  fi
  DPID=$!
  local deadline=$(( $(date +%s) + ${CARTGATE_BENCH_TIMEOUT_S:-3600} ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    n=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM verdicts" 2>/dev/null || echo 0)
    left=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM daemon_dirty" 2>/dev/null || echo 1)
    [ "$n" = "$N" ] && [ "$left" = 0 ] && break
    kill -0 "$DPID" 2>/dev/null || { echo "$label: the daemon stopped:" >&2; tail -n3 "$TMP/d.log" >&2; exit 1; }
    sleep 0.1
  done
  d=$(cpu_s "$DPID"); s1=$(cpu_s "$SPID")
  w=$(awk '/^wchar/ {print $2}' "/proc/$DPID/io")
  kill -INT "$DPID"; wait "$DPID" || true; DPID=""
  [ "$n" = "$N" ] || { echo "$label: only $n of $N screened" >&2; exit 1; }
  local size ins=""
  size=$(cat "$TMP"/d.db* | wc -c)
  [ -n "$vg" ] && ins=$(sed -n 's/.*I *refs: *//p' "$TMP/d.log" | tr -d ,)
  echo "$label $d $(awk "BEGIN {print $s1 - $s0}") $w $size $ins" | tee -a "$TMP/runs.txt" >&2
}

: >"$TMP/runs.txt"
for p in $(seq 1 "$PAIRS"); do
  if [ $((p % 2)) = 1 ]; then run A "$A"; run B "$B"; else run B "$B"; run A "$A"; fi
done
echo "$(date -u +%Y-%m-%d) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $N patients, $PAIRS pairs"
echo "A = $A; B = $B"
for l in A B; do
  printf '%s median: daemon CPU %.3f ms/patient, server CPU %.3f ms/patient, daemon/server %.2f, wrote %.1f MB, store %.1f MB\n' "$l" \
    "$(awk -v l=$l -v n="$N" '$1==l {print 1000*$2/n}' "$TMP/runs.txt" | median)" \
    "$(awk -v l=$l -v n="$N" '$1==l {print 1000*$3/n}' "$TMP/runs.txt" | median)" \
    "$(awk -v l=$l '$1==l {print $2/($3>0?$3:0.01)}' "$TMP/runs.txt" | median)" \
    "$(awk -v l=$l '$1==l {print $4/1e6}' "$TMP/runs.txt" | median)" \
    "$(awk -v l=$l '$1==l {print $5/1e6}' "$TMP/runs.txt" | median)"
done
# per pair (the k-th A run with the k-th B run)
paste <(awk '$1=="A" {print $2}' "$TMP/runs.txt") <(awk '$1=="B" {print $2}' "$TMP/runs.txt") >"$TMP/pairs.txt"
printf 'B/A daemon CPU: median of per-pair ratios %.3f; pairs with B lower: %d of %d\n' \
  "$(awk '{print $2/$1}' "$TMP/pairs.txt" | median)" "$(awk '$2<$1' "$TMP/pairs.txt" | wc -l)" "$PAIRS"
if [ "${VALGRIND:-}" = 1 ]; then
  : >"$TMP/runs.txt"
  run A "$A" vg; run B "$B" vg
  ia=$(awk '$1=="A" {print $6}' "$TMP/runs.txt"); ib=$(awk '$1=="B" {print $6}' "$TMP/runs.txt")
  printf 'instructions (cachegrind): A %.2f G, B %.2f G, B/A %.3f\n' "$(awk "BEGIN {print $ia/1e9}")" \
    "$(awk "BEGIN {print $ib/1e9}")" "$(awk "BEGIN {print $ib/$ia}")"
fi
