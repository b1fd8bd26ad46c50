#!/usr/bin/env bash
# bench/daemon.sh [PATIENTS[,PATIENTS...]] [RUNS] — end-to-end throughput of `cartgate run`
# (search source) screening a synth cohort served by the reference FHIR server, against a
# baseline measured in the same session: `cartgate screen` over the same cohort files (no HTTP,
# no store). Several cohort sizes (e.g. 240,2000,20000) run one after the other in one
# invocation, each with its own cohort and server, and a summary table ends the output.
# Per run (fresh store, same server): wall time from daemon start until every patient has a
# verdict in the store, the daemon's CPU time (bench/lib.sh cpu_s), the server's CPU time over the same
# window, and the daemon's peak RSS (VmHWM). Median of RUNS (>= 5). Proposals are created
# (approval mode) but nothing is sent. The headline figure is the daemon's CPU per patient as
# a ratio to the server's CPU per patient in the same run (median of the per-run ratios); after
# each run the same daemon is started without its source and its CPU read once idle (its start:
# a fresh store, criteria, centers, libraries, which the already running server does not pay),
# and the ratio is also given for the daemon's CPU beyond that start:
# the server's cost per patient is flat, so a ratio that stays put from 240 to 20,000
# patients means the daemon's cost per patient does not grow with the store. With two or more
# sizes a last table gives the cost of each further patient: between consecutive sizes, the
# growth of the daemon's median CPU over the growth of the server's (no start in it). CARTGATE_BIN
# runs another binary (an older build, for before/after: `cmake --install <build> --prefix DIR`
# and CARTGATE_BIN=DIR/bin/cartgate, so that its `screen` finds its data folder). Not run by
# ctest.
set -euo pipefail
SIZES=${1:-240}
RUNS=${2:-5}
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/bench/lib.sh"
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
[ -x "$CG" ] || { echo "build cartgate first ($CG)"; exit 1; }
TMP=$(mktemp -d /tmp/cg-bench-daemon.XXXXXX)
stop_server() {
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  SPID=""
}
trap bench_cleanup EXIT

# One cohort size: its cohort, its server, RUNS runs, its block of figures and a summary row.
bench_one() {
  local N=$1
  rm -rf "$TMP/cohort" "$TMP/seed"
  "$CG" synth --seed 7 --patients "$N" --out "$TMP/cohort" --format ndjson 2>/dev/null
  mkdir -p "$TMP/seed" && cp "$TMP"/cohort/*.000.ndjson "$TMP/seed/"
  bench_server "$TMP/seed"
  : >"$TMP/base.txt"
  : >"$TMP/runs.txt"
  for r in $(seq 1 "$RUNS"); do
    # baseline: offline screening of the same files
    t0=$(ms_now)
    "$CG" screen --as-of 2026-11-01 --json "$TMP/cohort" >/dev/null 2>&1
    t1=$(ms_now)
    echo "$(( t1 - t0 ))" >>"$TMP/base.txt"
    # the daemon
    bench_daemon_conf "$TMP/d.conf"
    s0=$(cpu_s "$SPID")
    t0=$(ms_now)
    "$CG" run -c "$TMP/d.conf" 2>"$TMP/d.log" &
    DPID=$!
    deadline=$(( $(date +%s) + ${CARTGATE_BENCH_TIMEOUT_S:-3600} ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
      n=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM verdicts" 2>/dev/null || echo 0)
      left=$(sqlite3 "$TMP/d.db" "SELECT count(*) FROM daemon_dirty" 2>/dev/null || echo 1)
      [ "$n" = "$N" ] && [ "$left" = 0 ] && break
      sleep 0.1
    done
    t1=$(ms_now)
    dcpu=$(cpu_s "$DPID")
    s1=$(cpu_s "$SPID")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$DPID/status")
    kill "$DPID"
    wait "$DPID" || true
    DPID=""
    [ "$n" = "$N" ] || { echo "run $r: only $n of $N screened"; tail "$TMP/d.log"; exit 1; }
    scpu_run=$(calc "$s1 - $s0")
    # what starting costs, which the already running server does not pay: the same daemon
    # without its source, its CPU once it is idle (a fresh store, criteria, centers, libraries)
    bench_daemon_conf "$TMP/s.conf" nosource
    "$CG" run -c "$TMP/s.conf" 2>"$TMP/s.log" &
    DPID=$!
    sleep 0.5
    start=$(cpu_s "$DPID")
    kill "$DPID"
    wait "$DPID" || true
    DPID=""
    echo "$(( t1 - t0 )) $dcpu $scpu_run $rss $(calc "$dcpu / ($scpu_run > 0 ? $scpu_run : 0.01)") $start $(calc "($dcpu - $start) / ($scpu_run > 0 ? $scpu_run : 0.01)")" >>"$TMP/runs.txt"
    echo "run $r: daemon $(( t1 - t0 )) ms wall, ${dcpu}s CPU (its start alone ${start}s), server $(calc "$s1 - $s0")s CPU, peak RSS ${rss} KiB; baseline screen $(tail -n1 "$TMP/base.txt") ms" >&2
  done
  base_ms=$(median <"$TMP/base.txt")
  wall_ms=$(awk '{print $1}' "$TMP/runs.txt" | median)
  dcpu=$(awk '{print $2}' "$TMP/runs.txt" | median)
  scpu=$(awk '{print $3}' "$TMP/runs.txt" | median)
  rss=$(awk '{print $4}' "$TMP/runs.txt" | median)
  ratio=$(awk '{print $5}' "$TMP/runs.txt" | median)
  start=$(awk '{print $6}' "$TMP/runs.txt" | median)
  ratio_run=$(awk '{print $7}' "$TMP/runs.txt" | median)
  res=$(cat "$TMP"/seed/*.ndjson | wc -l)
  printf 'patients %d (%s resources), runs %d (medians)\n' "$N" "$res" "$RUNS"
  printf 'baseline  cartgate screen (files, no HTTP/store): %6d ms  %7.1f patients/s\n' "$base_ms" "$(calc "$N * 1000 / $base_ms")"
  printf 'daemon    EHR server -> store -> profile -> verdict: %6d ms  %7.1f patients/s  (ratio %.2f of baseline)\n' \
    "$wall_ms" "$(calc "$N * 1000 / $wall_ms")" "$(calc "$base_ms / $wall_ms")"
  printf 'CPU       daemon %.2f s, reference server %.2f s (server/daemon %.1fx)\n' "$dcpu" "$scpu" "$(calc "$scpu / $dcpu")"
  printf 'CPU/patient daemon %.3f ms, reference server %.3f ms: daemon/server %.2f (median of per-run ratios)\n' \
    "$(calc "$dcpu * 1000 / $N")" "$(calc "$scpu * 1000 / $N")" "$ratio"
  printf 'start     daemon %.2f s CPU to start on a fresh store (no source); beyond it %.3f ms per patient: daemon/server %.2f\n' \
    "$start" "$(calc "($dcpu - $start) * 1000 / $N")" "$ratio_run"
  printf 'peak RSS  daemon %.1f MiB\n' "$(calc "$rss / 1024")"
  stop_server
  printf '| %s | %s | %s ms (%.1f patients/s) | %s ms (%.1f patients/s) | %.2f | %.3f ms | %.3f ms | **%.2f** | %.2f s | %.3f ms | **%.2f** | %.1f MiB |\n' \
    "$N" "$res" "$base_ms" "$(calc "$N * 1000 / $base_ms")" "$wall_ms" "$(calc "$N * 1000 / $wall_ms")" \
    "$(calc "$base_ms / $wall_ms")" "$(calc "$dcpu * 1000 / $N")" "$(calc "$scpu * 1000 / $N")" "$ratio" \
    "$start" "$(calc "($dcpu - $start) * 1000 / $N")" "$ratio_run" \
    "$(calc "$rss / 1024")" >>"$TMP/summary.txt"
  echo "$N $dcpu $scpu" >>"$TMP/sizes.txt"
}

: >"$TMP/summary.txt"
: >"$TMP/sizes.txt"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for size in ${SIZES//,/ }; do
  bench_one "$size"
done
echo
echo "$(date -u +%Y-%m-%d) $(nproc) cores; load average $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; $CG ($("$CG" version 2>/dev/null | head -n1); source tree at $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo '| patients | resources | baseline screen | daemon end-to-end | end-to-end / baseline | daemon CPU/patient | server CPU/patient | daemon/server CPU | daemon start CPU | daemon CPU/patient beyond its start | daemon/server CPU beyond the start | daemon peak RSS |'
echo '|---|---|---|---|---|---|---|---|---|---|---|---|'
cat "$TMP/summary.txt"
# The cost of each further patient, with no start in it: between two cohort sizes of this run,
# the growth of the daemon's median CPU over the growth of the server's (sizes in the order given)
if [ "$(wc -l <"$TMP/sizes.txt")" -ge 2 ]; then
  echo
  echo '| from → to patients | daemon CPU per further patient | server CPU per further patient | daemon/server per further patient |'
  echo '|---|---|---|---|'
  prev=""
  while read -r n d s; do
    if [ -n "$prev" ]; then
      read -r pn pd ps <<<"$prev"
      if [ "$n" -gt "$pn" ]; then
        printf '| %s → %s | %.3f ms | %.3f ms | **%.2f** |\n' "$pn" "$n" \
          "$(calc "($d - $pd) * 1000 / ($n - $pn)")" "$(calc "($s - $ps) * 1000 / ($n - $pn)")" \
          "$(calc "($d - $pd) / (($s - $ps) > 0 ? ($s - $ps) : 0.001)")"
      fi
    fi
    prev="$n $d $s"
  done <"$TMP/sizes.txt"
fi
