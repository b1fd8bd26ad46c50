# bench/lib.sh — shared by the daemon benchmarks (sourced, not run): the scratch folder and its
# cleanup, CPU and time readers, the reference FHIR server on a loopback port, the daemon's
# configuration. The sourcing script sets SRC (the repository) first.
[ -d "$SRC/tests/fhir-server/runtime/bin" ] && PATH="$SRC/tests/fhir-server/runtime/bin:$PATH"
SPID=""
DPID=""
bench_cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  rm -rf "$TMP"
}
HZ=$(getconf CLK_TCK)
# cpu_s PID: the process's CPU seconds so far. From the scheduler's nanosecond counters of its
# live threads (/proc/PID/task/*/schedstat) where the kernel has them: utime+stime in /proc/PID/stat
# count in clock ticks (10 ms), a tenth of a whole run at 240 patients. Else from /proc/PID/stat.
cpu_s() {
  if [ -r "/proc/$1/schedstat" ]; then
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.6f\n", s / 1e9}'
  else
    awk -v hz="$HZ" '{print ($14 + $15) / hz}' "/proc/$1/stat"
  fi
}
ms_now() { date +%s%3N; }
calc() { awk "BEGIN {print $1}"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# bench_server SEED_DIR: the reference server seeded from SEED_DIR; sets SPID and PORT.
bench_server() {
  node "$SRC/tests/fhir-server/server.mjs" --port 0 --seed "$1" >"$TMP/srv.out" 2>"$TMP/srv.err" &
  SPID=$!
  PORT=""
  for _ in $(seq 1 600); do
    PORT=$(head -n1 "$TMP/srv.out" 2>/dev/null || true)
    [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "the reference server did not start" >&2
  cat "$TMP/srv.err" >&2
  return 1
}

# bench_daemon_conf FILE [nosource]: a daemon on a fresh store $TMP/d.db with one search source
# on the server at $PORT, proposals in approval mode, nothing sent within the run; with
# "nosource" the same daemon without its source (what starting costs: the fresh store, criteria,
# centers, libraries).
bench_daemon_conf() {
  rm -f "$TMP"/d.db*
  export CARTGATE_ADMIN_TOKEN=bench
  local sources='[{"name": "ehr", "kind": "search", "base_url": "http://127.0.0.1:'"$PORT"'/fhir",
              "interval_s": 3600, "page_size": 1000}]'
  [ "${2:-}" = nosource ] && sources='[]'
  cat >"$1" <<CONF
{"site": {"id": "bench", "location": {"lat": 41.59, "lon": -93.62}},
 "store": {"path": "$TMP/d.db"}, "log": {"level": "warn"},
 "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
 "centers": {"file": "$SRC/conf/centers.json"}, "criteria": {"dir": "$SRC/conf/criteria"},
 "as_of": "2026-11-01", "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
 "sources": $sources}
CONF
}
