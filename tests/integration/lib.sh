# Shared helpers of the integration scripts (sourced, never run): paths, a temp folder, the
# EXIT trap that stops every process started (also on failure), check counting, and the
# reference FHIR server on a random 127.0.0.1 port with bounded waits.
#
#   . "$(dirname "$0")/lib.sh"
#   need_tools node curl          # SKIP (exit 77: ctest shows it skipped) without the server's node_modules
#   start_server ehr --seed DIR   # sets PID, PORT, BASE
SRC=${CARTGATE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CG=${CARTGATE_BIN:-$SRC/build/cartgate}
BIN=$CG
SERVER_DIR="$SRC/tests/fhir-server"
# The Node.js that scripts/bootstrap installed for the server when the system's is too old.
[ -d "$SERVER_DIR/runtime/bin" ] && PATH="$SERVER_DIR/runtime/bin:$PATH"
TMP=$(mktemp -d /tmp/cg-test.XXXXXX)
PIDS=()
CHECKS=0

# Stops every process in PIDS: SIGTERM, up to 10 s, then SIGKILL.
cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null
    kill -CONT "$p" 2>/dev/null # a paused process (SIGSTOP) ends on SIGTERM only once continued
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
  for f in "$TMP"/*.err "$TMP"/*.log; do [ -f "$f" ] && { echo "--- $f (tail)"; tail -25 "$f"; }; done
  exit 1
}
ok() { CHECKS=$((CHECKS + 1)); echo "ok $CHECKS - $*"; }

# need_tools TOOL...: skips the script when the reference server is not installed; fails when
# a tool is missing.
need_tools() {
  if [ ! -d "$SERVER_DIR/node_modules/@medplum/fhir-router" ]; then
    echo "SKIP: $SERVER_DIR/node_modules missing (run scripts/bootstrap)"
    exit 77
  fi
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not installed"
  done
}

# need_cartgate: fails when the binary under test is missing.
need_cartgate() { [ -x "$CG" ] || fail "cartgate binary not found at $CG"; }

# jget FILE EXPR: evaluates a JS expression over the parsed JSON `d` of FILE.
jget() { node -e 'const d=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); const v=('"$2"'); process.stdout.write(typeof v==="string"?v:JSON.stringify(v));' "$1"; }

# start_server NAME [--port N] ARGS...: starts the reference server (stdout NAME.out, stderr
# NAME.err in TMP); sets PID, PORT and BASE (http://127.0.0.1:PORT/fhir) once /healthz is 200.
start_server() {
  local name=$1
  shift
  local port_arg=(--port 0)
  if [ "${1:-}" = "--port" ]; then port_arg=(--port "$2"); shift 2; fi
  node "$SERVER_DIR/server.mjs" "${port_arg[@]}" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID=$!
  PIDS+=("$PID")
  PORT=""
  for _ in $(seq 1 600); do
    kill -0 "$PID" 2>/dev/null || fail "$name exited early"
    PORT=$(head -n1 "$TMP/$name.out" 2>/dev/null)
    if [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")" = 200 ]; then
      BASE="http://127.0.0.1:$PORT/fhir"
      return 0
    fi
    sleep 0.1
  done
  fail "$name not ready within 60 s"
}

stop_server() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
