#!/usr/bin/env bash
# The listener under a connection flood, with few file descriptors (issue #12, edge hardening):
# the daemon runs under a hard descriptor limit of 120 (so raising the soft limit to the hard
# one changes nothing) with admin.max_connections 200, a search source on the reference EHR and
# a drop folder, both polled every second. Then a client opens 300 idle connections, far more
# than the cap, and holds them, and five slow clients send one byte every two seconds, for
# about 14 s. (A client that reconnects every evicted connection at once, hundreds a second,
# can still push out a health check that waits long between its connect and its request.)
# Checks:
#   - the cap is lowered to what the limit leaves beyond the descriptors kept for the store and
#     the sources (serve.cap_lowered, cartgate_http_connections_max < 200)
#   - /healthz answers 200 within 1 s at every probe throughout (a functional bound, generous:
#     an idle loop answers in milliseconds)
#   - both sources keep completing polls during the flood, and a file dropped during it is read
#   - idle connections beyond the cap are evicted (cartgate_http_evicted_total > 0), the slow
#     clients are all closed by the daemon, and running out of descriptors, if it happens at
#     all, is logged once per one-second rest, never once per wake-up
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
reads_setup 10
mkdir -p "$TMP/drop"
cat >"$TMP/flood.conf" <<EOF
{
  "site": {"id": "t-flood", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/flood.db"},
  "log": {"level": "info"},
  "admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN", "max_connections": 200},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [
    {"name": "ehr", "kind": "search", "base_url": "$EHR", "interval_s": 1, $AUTH},
    {"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1}
  ]
}
EOF
cat >"$TMP/lowfd" <<EOF
#!/usr/bin/env bash
ulimit -n 120 || exit 99
exec "$CG" "\$@"
EOF
chmod +x "$TMP/lowfd"
REAL_CG=$CG
CG="$TMP/lowfd" start_daemon d "$TMP/flood.conf"
CG=$REAL_CG
[ "$(awk '/Max open files/ {print $4}' /proc/$DPID/limits)" = 120 ] || fail "limit: $(grep 'Max open files' /proc/$DPID/limits)"
wait_for "first complete polls of both sources" 60 \
  sh -c "grep -q 'event=\"poll.done\" source=\"ehr\".*result=\"ok\"' '$TMP/d.log' && grep -q 'event=\"poll.done\" source=\"drop\".*result=\"ok\"' '$TMP/d.log'"
grep -q 'event="serve.cap_lowered" max_connections="200" cap="[0-9]*" nofile="120"' "$TMP/d.log" ||
  fail "no serve.cap_lowered: $(grep -m3 'serve\.' "$TMP/d.log")"
mval() { api /metrics; grep "^$1 " "$TMP/resp" | awk '{print $NF}'; } # a family without labels
CAP=$(mval cartgate_http_connections_max)
[ -n "$CAP" ] && [ "$CAP" -ge 4 ] && [ "$CAP" -lt 200 ] || fail "cap $CAP"
ok "under a descriptor limit of 120 the cap is lowered from 200 to $CAP (descriptors kept for the store and the sources)"

polls() { grep -c "event=\"poll.done\" source=\"$1\".*result=\"ok\"" "$TMP/d.log"; }
EHR0=$(polls ehr); DROP0=$(polls drop)
PORT=${ADMIN##*:}
cat >"$TMP/flood.js" <<'EOF'
// node flood.js PORT IDLE SLOW SECONDS: IDLE idle connections held open (one the server closes
// stays closed), SLOW clients sending one byte every 2 s; prints "opens=N closed_by_server=N
// slow_closed=N of SLOW" at the end.
const net = require('net');
const [port, idle, slow, secs] = process.argv.slice(2).map(Number);
let opens = 0, closed = 0, slowClosed = 0, stop = false;
const socks = [];
function idleConn() {
  opens++;
  const s = net.connect(port, '127.0.0.1');
  socks.push(s);
  s.on('error', () => {});
  s.on('close', () => { if (!stop) closed++; });
}
for (let i = 0; i < idle; i++) setTimeout(idleConn, i * 5);
const req = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(200) + '\r\n\r\n';
for (let i = 0; i < slow; i++) {
  const s = net.connect(port, '127.0.0.1');
  socks.push(s);
  let k = 0, done = false;
  s.on('error', () => {});
  s.on('close', () => { if (!done) { done = true; slowClosed++; } });
  const t = setInterval(() => { if (done || k >= req.length) return clearInterval(t); s.write(req[k++]); }, 2000);
}
setTimeout(() => {
  stop = true;
  console.log(`opens=${opens} closed_by_server=${closed} slow_closed=${slowClosed} of ${slow}`);
  for (const s of socks) s.destroy();
  process.exit(0);
}, secs * 1000);
EOF
node "$TMP/flood.js" "$PORT" 300 5 14 >"$TMP/flood.out" 2>&1 &
FPID=$!
PIDS+=("$FPID")
sleep 2
mkdir -p "$TMP/cohort2"
"$CG" synth --seed 77 --patients 3 --out "$TMP/cohort2" --format ndjson >/dev/null || fail "synth"
cp "$TMP/cohort2/Patient.000.ndjson" "$TMP/drop/flood-Patient.ndjson"
slowest=0
for i in $(seq 1 20); do
  out=$(curl -s -m 1 -o /dev/null -w '%{http_code} %{time_total}' "$ADMIN/healthz")
  [ "${out%% *}" = 200 ] || fail "/healthz probe $i during the flood: '$out' (curl -m 1)"
  t=${out##* }
  slowest=$(awk -v a="$slowest" -v b="$t" 'BEGIN {print (b > a) ? b : a}')
  sleep 0.5
done
ok "/healthz answered 200 within 1 s at each of 20 probes during the flood (slowest ${slowest} s)"
wait "$FPID" || fail "flood client failed: $(cat "$TMP/flood.out")"
kill -0 "$DPID" 2>/dev/null || fail "the daemon died under the flood"
EHR1=$(polls ehr); DROP1=$(polls drop)
[ $((EHR1 - EHR0)) -ge 3 ] && [ $((DROP1 - DROP0)) -ge 3 ] ||
  fail "sources stalled during the flood: ehr $EHR0 -> $EHR1, drop $DROP0 -> $DROP1"
wait_for "the dropped file read" 30 test -e "$TMP/drop/done/flood-Patient.ndjson"
ok "sources kept polling during the flood (ehr +$((EHR1 - EHR0)), drop +$((DROP1 - DROP0)) complete polls) and the file dropped during it was read"

read -r OPENS CLOSED SLOWC _ SLOWN < <(sed -n 's/opens=\([0-9]*\) closed_by_server=\([0-9]*\) slow_closed=\([0-9]*\) of \([0-9]*\)/\1 \2 \3 of \4/p' "$TMP/flood.out")
[ -n "${OPENS:-}" ] || fail "flood client output: $(cat "$TMP/flood.out")"
[ "$OPENS" -gt "$CAP" ] && [ "$CLOSED" -gt 0 ] || fail "the flood opened $OPENS connections, $CLOSED closed by the daemon (cap $CAP)"
[ "$SLOWC" = "$SLOWN" ] || fail "slow clients still open at the end: $SLOWC of $SLOWN closed"
EV=$(mval cartgate_http_evicted_total)
[ -n "$EV" ] && [ "$EV" -gt 0 ] || fail "nothing evicted: $EV"
AF=$(grep -c 'event="serve.accept_failed"' "$TMP/d.log")
[ "$AF" -le 20 ] || fail "accept failures logged $AF times in ~14 s"
RAW=$(grep -v '^ts=' "$TMP/d.log" | grep -ci 'too many open files')
[ "$RAW" = 0 ] || fail "$RAW unstructured 'Too many open files' lines, e.g. $(grep -v '^ts=' "$TMP/d.log" | grep -i -m1 'too many open files')"
ok "$OPENS idle connections against a cap of $CAP: $EV evicted, all $SLOWN slow clients closed by the daemon, accept failures logged $AF times"
stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "daemon exit $DRC"
echo "PASS: $CHECKS checks"
