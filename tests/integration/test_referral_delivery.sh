#!/usr/bin/env bash
# Integration test of referral delivery with the real `cartgate` binary against reference FHIR
# servers on loopback ("centers"):
#   A. approve -> exactly one ServiceRequest and one Task per referral at the center; the
#      Bundle passes the server's base-R4 validation; a second send changes nothing;
#      an unapproved referral is not sent.
#   B. center in "after" failure mode (does the write, answers 500) plus connection resets
#      after the write -> still exactly one of each.
#   C. one center down -> the other center's referrals go out; the stuck ones keep their last
#      error and go out once the center is back (on the same port).
#   D. closed loop: the center sets Task accepted (3.0) then completed (7.0) -> referral follows.
#   E. crash test: kill -9 the sender at seeded random moments across >= 20 referrals,
#      restarting each time; at the end every referral is at the center exactly once.
#      CARTGATE_CRASH_KILLS (default 10), CARTGATE_CRASH_REFERRALS (20), CARTGATE_CRASH_SEED (7);
#      bench/crash_referrals.sh runs it with 100 kills.
#   F. the daemon (`cartgate run`, asynchronous sender on its event loop): a center that
#      accepts TCP connections but never answers holds only its own queue: the other center's
#      referrals are delivered while the hung exchange is still open (no attempt recorded yet,
#      the client's 30 s per-attempt timeout has not run out), and /healthz answers meanwhile.
# The referrals come from the real pipeline: a `cartgate synth` cohort dropped into a files
# source of `cartgate run` (approval mode), which screens each patient, routes it and builds
# the BSeR package; "auto" sections then approve them with `cartgate referrals approve`.
set -u
. "$(dirname "$0")/lib.sh"
KILLS=${CARTGATE_CRASH_KILLS:-10}
N_CRASH=${CARTGATE_CRASH_REFERRALS:-20}
SEED=${CARTGATE_CRASH_SEED:-7}
need_tools node curl
need_cartgate

# write_centers FILE id:port ...
write_centers() {
  local file=$1
  shift
  {
    echo '{"centers": ['
    local first=1
    for spec in "$@"; do
      local id=${spec%%:*} port=${spec##*:}
      [ $first = 1 ] || echo ','
      first=0
      cat <<EOF
  {"id": "$id", "name": "Loopback $id (fictional)", "fhir": {"base": "http://127.0.0.1:$port/fhir"},
   "position": {"lat": 41.9, "lon": -87.6},
   "address": {"city": "Chicago", "state": "IL", "postalCode": "60611"},
   "accreditations": [{"body": "FACT", "expires": "2030-01-01"}],
   "products": ["tisa-cel", "axi-cel", "brexu-cel", "liso-cel", "ide-cel", "cilta-cel", "obe-cel"],
   "diseases": ["dlbcl_nos", "hgbcl", "pmbcl", "tfl", "fl_3b", "fl", "mcl", "cll_sll", "mzl",
                "b_all", "mm", "pcl", "pcnsl"], "capacity": "open",
   "contact": {"phone": "+1-555-0100"}}
EOF
    done
    echo ']}'
  } >"$file"
}

cg() { "$BIN" "$@" 2>>"$TMP/cartgate.log"; }

# state_count DB STATE [CENTER]
state_count() {
  local extra=()
  [ -n "${3:-}" ] && extra=(--center "$3")
  cg referrals list --db "$1" --state "$2" --json "${extra[@]}" | grep -c '"id"'
}

# total PORT TYPE [QUERY]: number of resources of TYPE at the server.
total() {
  curl -s "http://127.0.0.1:$1/fhir/$2?_summary=count${3:+&$3}" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const b=JSON.parse(s);process.stdout.write(String(b.total))})'
}

# exactly_once DB PORT CENTER: every referral of CENTER in DB is at PORT exactly once (SR and
# Task, searched by the placer identifier).
exactly_once() {
  local db=$1 port=$2 center=$3 n=0
  for placer in $(cg referrals list --db "$db" --center "$center" --json |
                  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n"))if(l.trim())console.log(JSON.parse(l).placer_id)})'); do
    local sr task
    sr=$(total "$port" ServiceRequest "identifier=urn:cartgate:demo-site:referral%7C$placer")
    task=$(total "$port" Task "identifier=urn:cartgate:demo-site:referral-task%7C$placer")
    [ "$sr" = 1 ] && [ "$task" = 1 ] || fail "placer $placer at $center: $sr ServiceRequest(s), $task Task(s)"
    n=$((n + 1))
  done
  echo "$n"
}

SEND_FAST=(--interval-ms 50 --backoff-ms 50 --attempts 2)

# ---- referrals through the real pipeline ----------------------------------------------
# A synth cohort (one Bundle per patient); the patients `cartgate screen` finds eligible or
# possibly eligible are handed out in order, each to one proposal only.
NEED=$((20 + N_CRASH))
"$BIN" synth --seed "$SEED" --patients $((2 * NEED + 40)) --format bundle --out "$TMP/cohort" \
  >/dev/null 2>"$TMP/synth.err" || fail "synth"
"$BIN" screen --as-of 2026-11-01 --json "$TMP/cohort" 2>"$TMP/screen.err" |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n"))if(l.trim()){const r=JSON.parse(l);if(r.category==="eligible"||r.category==="possibly_eligible")console.log(r.patient)}})' \
  >"$TMP/candidates.txt" || fail "screen of the cohort"
[ "$(wc -l <"$TMP/candidates.txt")" -ge "$NEED" ] ||
  fail "the cohort has $(wc -l <"$TMP/candidates.txt") candidates, $NEED needed"
NEXT=1
PROPOSALS=0

# propose DB CENTERS_FILE CENTER N: the next N candidates go through `cartgate run` (files
# source, approval mode, CENTER alone in its directory, site demo-site) into DB; returns once
# the daemon has proposed exactly N referrals to CENTER and stopped.
propose() {
  local db=$1 cfile=$2 center=$3 n=$4
  PROPOSALS=$((PROPOSALS + 1))
  local k=$PROPOSALS
  mkdir -p "$TMP/drop-$k"
  local id
  for id in $(sed -n "${NEXT},$((NEXT + n - 1))p" "$TMP/candidates.txt"); do
    cp "$TMP/cohort/$id.json" "$TMP/drop-$k/" || fail "no Bundle for $id"
  done
  NEXT=$((NEXT + n))
  node -e 'const fs=require("fs");const d=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
    d.centers=d.centers.filter(c=>c.id===process.argv[2]);fs.writeFileSync(process.argv[3],JSON.stringify(d));' \
    "$cfile" "$center" "$TMP/one-$k.json"
  printf '%s\n' '{' \
    '"site": {"id": "demo-site", "name": "Loopback site (fictional)", "location": {"lat": 41.59, "lon": -93.62}},' \
    "\"store\": {\"path\": \"$db\"}," \
    '"admin": {"enabled": false},' \
    "\"centers\": {\"file\": \"$TMP/one-$k.json\"}," \
    "\"criteria\": {\"dir\": \"$SRC/conf/criteria\"}," \
    '"as_of": "2026-11-01",' \
    '"referral": {"mode": "approval"},' \
    "\"sources\": [{\"name\": \"drop-$k\", \"kind\": \"files\", \"dir\": \"$TMP/drop-$k\", \"interval_s\": 1}]" \
    '}' >"$TMP/propose-$k.conf"
  "$BIN" run -c "$TMP/propose-$k.conf" 2>"$TMP/propose-$k.log" &
  local p=$!
  PIDS+=("$p")
  # daemon.ready follows the first poll and the screening of what it brought in; the store is
  # read only then (the daemon creates it)
  local got=0
  for _ in $(seq 1 1200); do
    kill -0 "$p" 2>/dev/null || fail "propose $k: the daemon exited early"
    if grep -q 'event="daemon.ready"' "$TMP/propose-$k.log"; then
      got=$(cg referrals list --db "$db" --center "$center" --json | grep -c '"id"')
      [ "$got" -ge "$n" ] && break
    fi
    sleep 0.1
  done
  kill -TERM "$p"
  wait "$p" || fail "propose $k: daemon exit status $?"
  got=$(cg referrals list --db "$db" --center "$center" --json | grep -c '"id"')
  [ "$got" = "$n" ] || fail "propose $k: $got referrals to $center, $n expected"
  # the screening stores its proposals without their package: a person looks at each (the
  # first reader composes it, here the CLI with the daemon's configuration)
  for id in $(cg referrals list --db "$db" --center "$center" --json |
              node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n"))if(l.trim())console.log(JSON.parse(l).id)})'); do
    cg referrals show -c "$TMP/propose-$k.conf" --db "$db" "$id" >/dev/null || fail "propose $k: show $id"
    [ "$(sqlite3 "$db" "SELECT package IS NOT NULL FROM referrals WHERE id=$id")" = 1 ] ||
      fail "propose $k: referral $id has no package after it was read"
  done
}

# approve_all DB CENTER: every pending referral of CENTER approved (as the "auto" mode would).
approve_all() {
  local id
  for id in $(cg referrals list --db "$1" --center "$2" --state pending_approval --json |
              node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n"))if(l.trim())console.log(JSON.parse(l).id)})'); do
    cg referrals approve --db "$1" "$id" >/dev/null || fail "approve $id"
  done
}

# ---- A. approve -> exactly once -------------------------------------------------------
start_server a
PA=$PORT
write_centers "$TMP/a.json" "ctr-a:$PA"
DB="$TMP/a.db"
propose "$DB" "$TMP/a.json" ctr-a 3
[ "$(state_count "$DB" pending_approval)" = 3 ] || fail "3 referrals should await approval"
cg referrals send --db "$DB" --centers "$TMP/a.json" >/dev/null || fail "send (nothing approved)"
[ "$(total "$PA" ServiceRequest)" = 0 ] || fail "an unapproved referral was sent"
ok "nothing is sent before approval"
cg referrals approve --db "$DB" 1 >/dev/null && cg referrals approve --db "$DB" 2 >/dev/null ||
  fail "approve"
cg referrals send --db "$DB" --centers "$TMP/a.json" "${SEND_FAST[@]}" --until-idle >"$TMP/send.out" ||
  fail "send: $(cat "$TMP/send.out")"
[ "$(state_count "$DB" sent)" = 2 ] || fail "2 referrals should be sent: $(cat "$TMP/send.out")"
[ "$(total "$PA" ServiceRequest)" = 2 ] && [ "$(total "$PA" Task)" = 2 ] ||
  fail "center A should hold 2 ServiceRequests and 2 Tasks"
[ "$(total "$PA" Patient)" = 2 ] && [ "$(total "$PA" DocumentReference)" = 2 ] ||
  fail "center A should hold the 2 Patients and 2 eligibility summaries"
ok "approve -> exactly one ServiceRequest + Task per referral, Bundle accepted by the validating server"
cg referrals approve --db "$DB" 1 >/dev/null 2>&1 && fail "approving a sent referral must fail"
cg referrals send --db "$DB" --centers "$TMP/a.json" >/dev/null || fail "second send"
[ "$(total "$PA" ServiceRequest)" = 2 ] || fail "second send duplicated"
ok "illegal re-approval refused; a second send pass changes nothing"

# ---- D. closed loop (on A's referral 1) ------------------------------------------------
TASK=$(cg referrals show --db "$DB" 1 | sed -n 's/.*at center .*, \(Task\/[^ ]*\).*/\1/p')
[ -n "$TASK" ] || fail "referral 1 has no Task reference"
set_task() { # STATUS CODE
  curl -s "$BASE/$TASK" >"$TMP/task.json"
  node -e '
    const fs=require("fs"); const t=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
    t.status=process.argv[2];
    t.businessStatus={coding:[{system:"http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS",code:process.argv[3]}]};
    fs.writeFileSync(process.argv[1], JSON.stringify(t));' "$TMP/task.json" "$1" "$2"
  [ "$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/fhir+json' \
        --data-binary "@$TMP/task.json" "$BASE/$TASK")" = 200 ] || fail "PUT $TASK: $(cat "$TMP/put.out")"
}
BASE="http://127.0.0.1:$PA/fhir"
set_task accepted 3.0
cg referrals poll --db "$DB" --centers "$TMP/a.json" >/dev/null || fail "poll"
cg referrals show --db "$DB" 1 | grep -q 'state        accepted' || fail "referral 1 should be accepted"
# two steps between two polls (the server's versionIds are not counts): both read from the
# Task's history, in order, the earlier one with the time the center took it
# (as for a referral sent before the site remembered versions: the history is read from the
# newest version that says what the site recorded last, so nothing earlier is recorded again)
sqlite3 "$DB" "DELETE FROM task_seen WHERE referral_id=1"
rows_before=$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE referral_id=1")
set_task in-progress 5.1.1
set_task on-hold 5.2
cg referrals poll --db "$DB" --centers "$TMP/a.json" >/dev/null || fail "poll"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE referral_id=1")" = $((rows_before + 2)) ] ||
  fail "the poll after two steps should add two audit rows (scheduled, on hold): $(sqlite3 "$DB" "SELECT action, to_state, detail FROM audit WHERE referral_id=1")"
cg referrals show --db "$DB" 1 | grep -q 'center:ctr-a .*accepted -> scheduled' || fail "audit lacks the consult scheduled between two polls: $(cg referrals show --db "$DB" 1)"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM audit WHERE referral_id=1 AND action='task-update' AND to_state='scheduled' AND detail LIKE 'Task.status=in-progress businessStatus=5.1.1 (at the center 20%'")" = 1 ] ||
  fail "the consult scheduled was not read from the Task's history: $(sqlite3 "$DB" "SELECT action, to_state, detail FROM audit WHERE referral_id=1")"
[ "$(sqlite3 "$DB" "SELECT task_status FROM referrals WHERE id=1")" = on-hold ] || fail "referral 1's Task.status after the poll"
set_task completed 7.0
cg referrals poll --db "$DB" --centers "$TMP/a.json" >/dev/null || fail "poll"
cg referrals show --db "$DB" 1 | grep -q 'state        completed' || fail "referral 1 should be completed"
cg referrals show --db "$DB" 1 | grep -q 'center:ctr-a .*sent -> accepted' || fail "audit lacks the accept"
ok "center Task accepted (3.0), then scheduled (5.1.1) and on hold (5.2) between two polls (read from its history), then completed (7.0) -> referral accepted, scheduled, completed, audited"

# ---- B. "after" failures and resets ----------------------------------------------------
start_server b
PB=$PORT
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d '{"seed": 3, "rules": [{"mode": "after", "every": 2, "methods": ["POST"]},
                            {"mode": "after-reset", "every": 3, "methods": ["POST", "GET"]}]}' \
  "http://127.0.0.1:$PB/admin/faults" || fail "set faults"
write_centers "$TMP/b.json" "ctr-b:$PB"
DB="$TMP/b.db"
propose "$DB" "$TMP/b.json" ctr-b 6
approve_all "$DB" ctr-b
timeout 300 "$BIN" referrals send --db "$DB" --centers "$TMP/b.json" "${SEND_FAST[@]}" --until-idle \
  >"$TMP/send-b.out" 2>>"$TMP/cartgate.log" || fail "send b: $(cat "$TMP/send-b.out")"
[ "$(state_count "$DB" sent)" = 6 ] || fail "6 referrals should be sent through the faults"
curl -s -X DELETE -o /dev/null "http://127.0.0.1:$PB/admin/faults"
[ "$(exactly_once "$DB" "$PB" ctr-b)" = 6 ] || fail "exactly-once check b"
[ "$(total "$PB" ServiceRequest)" = 6 ] && [ "$(total "$PB" Task)" = 6 ] || fail "duplicates at b"
ok "center answering 500 after writing + resets after writing -> still exactly one of each ($(cat "$TMP/send-b.out"))"

# ---- C. one center down ----------------------------------------------------------------
start_server dead
PDEAD=$PORT
stop_server "$PID"
start_server c
PC=$PORT
write_centers "$TMP/c.json" "ctr-up:$PC" "ctr-down:$PDEAD"
DB="$TMP/c.db"
propose "$DB" "$TMP/c.json" ctr-down 3
propose "$DB" "$TMP/c.json" ctr-up 3
approve_all "$DB" ctr-down
approve_all "$DB" ctr-up
cg referrals send --db "$DB" --centers "$TMP/c.json" "${SEND_FAST[@]}" --passes 3 >"$TMP/send-c.out" ||
  fail "send c"
[ "$(state_count "$DB" sent ctr-up)" = 3 ] || fail "the up center's referrals should be sent"
[ $(( $(state_count "$DB" sending ctr-down) + $(state_count "$DB" approved ctr-down) )) = 3 ] ||
  fail "the down center's referrals should wait (sending/approved), not fail"
# the ones tried show why they wait: the refused connection itself (HTTP 0), or on a later
# pass the search that looks for an earlier delivery before sending again (how many are tried
# before the center is set aside for the pass depends on timing)
cg referrals list --db "$DB" --center ctr-down >"$TMP/list-c.out"
tried=$(grep -c 'last error: ' "$TMP/list-c.out")
# (libcurl's wording differs: "Couldn't connect" on Debian 12, "Could not connect" on Debian 13)
[ "$tried" -ge 1 ] && [ "$(grep 'last error: ' "$TMP/list-c.out" | grep -Ec "Couldn't connect|Could not connect")" = "$tried" ] ||
  fail "stuck referrals should show their last error: $(cat "$TMP/list-c.out")"
[ "$(exactly_once "$DB" "$PC" ctr-up)" = 3 ] || fail "exactly-once check c"
ok "one center down: the other center's referrals delivered, stuck ones show their last error"
start_server revived --port "$PDEAD"
timeout 300 "$BIN" referrals send --db "$DB" --centers "$TMP/c.json" "${SEND_FAST[@]}" --until-idle \
  >"$TMP/send-c2.out" 2>>"$TMP/cartgate.log" || fail "send c2"
[ "$(state_count "$DB" sent ctr-down)" = 3 ] || fail "the revived center's referrals should be sent"
[ "$(exactly_once "$DB" "$PDEAD" ctr-down)" = 3 ] || fail "exactly-once check revived"
ok "the down center comes back -> its referrals resume and arrive exactly once"

# ---- E. crash test ---------------------------------------------------------------------
start_server e
PE=$PORT
# a little latency on every write widens the window in which a kill lands mid-request
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d '{"mode": "latency", "latency_ms": 30, "methods": ["POST"]}' "http://127.0.0.1:$PE/admin/faults"
write_centers "$TMP/e.json" "ctr-e:$PE"
DB="$TMP/e.db"
propose "$DB" "$TMP/e.json" ctr-e "$N_CRASH"
approve_all "$DB" ctr-e
RANDOM=$SEED
landed=0
for i in $(seq 1 "$KILLS"); do
  "$BIN" referrals send --db "$DB" --centers "$TMP/e.json" "${SEND_FAST[@]}" --until-idle \
    >>"$TMP/send-e.out" 2>>"$TMP/cartgate.log" &
  SP=$!
  PIDS+=("$SP")
  delay=$((RANDOM % 400 + 5))
  sleep "$(printf '0.%03d' "$delay")"
  if kill -0 "$SP" 2>/dev/null; then
    kill -9 "$SP" 2>/dev/null && landed=$((landed + 1))
  fi
  wait "$SP" 2>/dev/null
  [ "$(cg referrals list --db "$DB" --json | grep -c '"state":"sent"')" = "$N_CRASH" ] && break
done
timeout 300 "$BIN" referrals send --db "$DB" --centers "$TMP/e.json" "${SEND_FAST[@]}" --until-idle \
  >>"$TMP/send-e.out" 2>>"$TMP/cartgate.log" || fail "final send e"
[ "$(state_count "$DB" sent)" = "$N_CRASH" ] || fail "all $N_CRASH crash-test referrals should be sent"
[ "$(exactly_once "$DB" "$PE" ctr-e)" = "$N_CRASH" ] || fail "exactly-once check e"
[ "$(total "$PE" ServiceRequest)" = "$N_CRASH" ] && [ "$(total "$PE" Task)" = "$N_CRASH" ] ||
  fail "crash test: duplicates or losses at the center"
rec=$(grep -o 'recovered=[0-9]*' "$TMP/send-e.out" | awk -F= '{s+=$2} END {print s+0}')
ok "crash test: $landed kill -9 landed (seed $SEED) across $N_CRASH referrals; all at the center exactly once ($rec found by placer id after a crash)"

# ---- F. daemon: a hung center blocks neither the other center nor the admin API ----------
command -v sqlite3 >/dev/null 2>&1 || fail "sqlite3 not installed"
# accepts, reads, never answers; prints its port, then one line per connection
node -e 'const s=require("net").createServer(c=>{console.log("conn");c.on("error",()=>{});c.on("data",()=>{})});
s.listen(0,"127.0.0.1",()=>console.log(s.address().port))' >"$TMP/hang.out" 2>"$TMP/hang.err" &
PIDS+=("$!")
PH=""
for _ in $(seq 1 100); do
  PH=$(head -n1 "$TMP/hang.out" 2>/dev/null)
  [ -n "$PH" ] && break
  sleep 0.1
done
[[ "$PH" =~ ^[0-9]+$ ]] || fail "hanging listener did not print its port"
start_server g
PG=$PORT
write_centers "$TMP/f.json" "ctr-hang:$PH" "ctr-good:$PG"
DB="$TMP/f.db"
# the hung center's referrals come first in the outbox (lower ids)
propose "$DB" "$TMP/f.json" ctr-hang 2
propose "$DB" "$TMP/f.json" ctr-good 3
approve_all "$DB" ctr-hang
approve_all "$DB" ctr-good
export CARTGATE_ADMIN_TOKEN="f-token-$$"
printf '%s\n' '{' \
  '"site": {"id": "demo-site", "name": "Loopback site (fictional)", "location": {"lat": 41.59, "lon": -93.62}},' \
  "\"store\": {\"path\": \"$DB\"}," \
  '"log": {"level": "debug"},' \
  '"admin": {"port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},' \
  "\"centers\": {\"file\": \"$TMP/f.json\"}," \
  "\"criteria\": {\"dir\": \"$SRC/conf/criteria\"}," \
  '"referral": {"mode": "auto", "send_interval_s": 1, "task_poll_s": 1},' \
  '"sources": []' '}' >"$TMP/f.conf"
"$BIN" run -c "$TMP/f.conf" 2>"$TMP/daemon-f.log" &
DPF=$!
PIDS+=("$DPF")
ADMIN=""
for _ in $(seq 1 300); do
  kill -0 "$DPF" 2>/dev/null || fail "daemon f exited early"
  ap=$(sed -n 's/.*event="admin.listen" bind="[^"]*" port="\([0-9]*\)".*/\1/p' "$TMP/daemon-f.log" | tail -n1)
  [ -n "$ap" ] && { ADMIN="http://127.0.0.1:$ap"; break; }
  sleep 0.1
done
[ -n "$ADMIN" ] || fail "daemon f did not log admin.listen"
q() { sqlite3 -cmd ".timeout 5000" "$DB" "$1" 2>/dev/null; }
# bounded wait (at most 25 s, below the 30 s per-attempt timeout of the hung exchange)
for _ in $(seq 1 250); do
  [ "$(q "SELECT count(*) FROM referrals WHERE center_id='ctr-good' AND state='sent'")" = 3 ] && break
  sleep 0.1
done
good=$(q "SELECT count(*) FROM referrals WHERE center_id='ctr-good' AND state='sent'")
hung=$(q "SELECT count(*) FROM referrals WHERE center_id='ctr-hang' AND state='sending' AND attempts=0")
conns=$(grep -c conn "$TMP/hang.out")
[ "$good" = 3 ] || fail "ctr-good: $good of 3 referrals sent while ctr-hang hangs"
[ "${hung:-0}" -ge 1 ] && [ "${conns:-0}" -ge 1 ] ||
  fail "the hung exchange should still be open (sending without an attempt: $hung; connections: $conns)"
[ "$(q "SELECT count(*) FROM referrals WHERE center_id='ctr-hang' AND state='sending'")" = 1 ] ||
  fail "one referral per center in flight: $(q "SELECT state || ' ' || attempts FROM referrals WHERE center_id='ctr-hang'")"
hz=$(curl -s -m 3 -o "$TMP/hz.out" -w '%{http_code}' "$ADMIN/healthz")
[ "$hz" = 200 ] || fail "/healthz answered $hz while a send was in flight"
[ "$(q "SELECT count(*) FROM referrals WHERE center_id='ctr-hang' AND state='sending' AND attempts=0")" = 1 ] ||
  fail "the hung exchange ended before /healthz was checked"
[ "$(exactly_once "$DB" "$PG" ctr-good)" = 3 ] || fail "exactly-once check f"
ok "daemon: a center that accepts and never answers holds only its own queue (ctr-good 3/3 sent while its exchange is open; /healthz $hz meanwhile)"
kill -TERM "$DPF"
for _ in $(seq 1 100); do kill -0 "$DPF" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DPF" 2>/dev/null && fail "daemon f did not stop within 10 s of SIGTERM with a send in flight"
wait "$DPF"
drc=$?
[ "$drc" = 0 ] || fail "daemon f exit status $drc"
[ "$(q "SELECT count(*) FROM referrals WHERE center_id='ctr-hang' AND state IN ('sending','approved')")" = 2 ] ||
  fail "the hung center's referrals must stay in the outbox"
ok "SIGTERM with a send in flight: prompt stop, the hung center's referrals stay in the outbox"

echo "PASS: $CHECKS checks"
