# Shared helpers of the daemon integration tests (sourced by tests/integration/test_daemon_*.sh).
# Everything runs on 127.0.0.1 with random ports; every process started is stopped by the
# EXIT trap, also on failure. Loops are bounded.
SRC=${CARTGATE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
SERVER_DIR="$SRC/tests/fhir-server"
TMP=$(mktemp -d /tmp/cg-daemon-test.XXXXXX)
PIDS=()
CHECKS=0
TOKEN="admin-token-$$-$RANDOM"
export CARTGATE_ADMIN_TOKEN="$TOKEN"

cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for f in "$TMP"/*.log "$TMP"/*.err; do [ -f "$f" ] && { echo "--- $f (tail)"; tail -25 "$f"; }; done
  exit 1
}
ok() { CHECKS=$((CHECKS + 1)); echo "ok $CHECKS - $*"; }

need_tools() {
  if [ ! -d "$SERVER_DIR/node_modules/@medplum/fhir-router" ]; then
    echo "SKIP: $SERVER_DIR/node_modules missing (run scripts/bootstrap)"
    exit 0
  fi
  for tool in node curl sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not installed"
  done
  [ -x "$CG" ] || fail "cartgate binary not found at $CG"
}

# jget FILE EXPR: evaluates a JS expression over the parsed JSON `d` of FILE.
jget() { node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); const v=('"$2"'); process.stdout.write(typeof v==="string"?v:JSON.stringify(v));' "$1"; }

# start_server NAME ARGS...: sets PORT and BASE (http://127.0.0.1:PORT/fhir).
start_server() {
  local name=$1
  shift
  node "$SERVER_DIR/server.mjs" --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  local pid=$!
  PIDS+=("$pid")
  PORT=""
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || fail "$name exited early"
    PORT=$(head -n1 "$TMP/$name.out" 2>/dev/null)
    if [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" = 200 ]; then
      BASE="http://127.0.0.1:$PORT/fhir"
      return 0
    fi
    sleep 0.1
  done
  fail "$name not ready within 60 s"
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
    port=$(sed -n 's/.*event=admin.listen bind=[^ ]* port=\([0-9]*\).*/\1/p' "$TMP/$name.log" 2>/dev/null | tail -n1)
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
