#!/usr/bin/env bash
# Monitoring: the daemon's /metrics passes `promtool check metrics` (every family with HELP and
# TYPE, names and units as Prometheus expects), carries cartgate_build_info, the process_*
# figures and the age of the oldest referral awaiting approval; /readyz answers without a
# token and says nothing but ready or not; failed polls are counted by source and reason (a
# source where nothing listens: connect; one that answers 401, the daemon's own listener:
# auth), every reason shown for every source; conf/monitoring/alerts.yml passes `promtool check
# rules`, and every cartgate_/process_ series the alert rules and the Grafana dashboard use is
# one /metrics serves. promtool comes from scripts/bootstrap (tests/tools/bin) or the PATH.
set -u
. "$(dirname "$0")/daemon_lib.sh"
daemon_need_tools
PROMTOOL=$SRC/tests/tools/bin/promtool
[ -x "$PROMTOOL" ] || PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
  echo "SKIP: promtool not installed (scripts/bootstrap fetches it into tests/tools/bin)"
  exit 77
fi

mkdir -p "$TMP/drop"
"$CG" synth --seed 5 --patients 30 --out "$TMP/cohort" --format ndjson >/dev/null || fail "synth"
cp "$TMP"/cohort/*.000.ndjson "$TMP/drop/"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers.json"   # nothing listens: sends stay queued
APORT=$(free_port)
[ -n "$APORT" ] || fail "no free port"
cat >"$TMP/c.conf" <<CONF
{
  "site": {"id": "t-metrics", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/cg.db"},
  "admin": {"port": $APORT, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "as_of": "2026-11-01",
  "referral": {"send_interval_s": 3600, "task_poll_s": 3600},
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop", "interval_s": 1},
              {"name": "nobody", "kind": "search", "base_url": "http://127.0.0.1:9/fhir", "types": ["Patient"],
               "interval_s": 3600, "retry_s": 1, "timeout_s": 5},
              {"name": "self", "kind": "search", "base_url": "http://127.0.0.1:$APORT/fhir", "types": ["Patient"],
               "interval_s": 3600, "retry_s": 1}]
}
CONF
start_daemon d1 "$TMP/c.conf"
screened() { [ "$(screened_count "$TMP/cg.db" 2>/dev/null)" = 30 ]; }
wait_for "30 patients screened" 60 screened

CODE=$(curl -s -o "$TMP/ready" -w '%{http_code}' "$ADMIN/readyz")
{ [ "$CODE" = 200 ] || [ "$CODE" = 503 ]; } || fail "/readyz without a token: $CODE"
grep -qiE 'patient|referral|source|token' "$TMP/ready" && fail "/readyz says more than ready or not: $(cat "$TMP/ready")"
ok "/readyz answers $CODE without a token and reveals nothing"

api /metrics
[ "$CODE" = 200 ] || fail "/metrics: $CODE"
cp "$TMP/resp" "$TMP/metrics.txt"
"$PROMTOOL" check metrics <"$TMP/metrics.txt" >"$TMP/lint.out" 2>&1 || fail "promtool check metrics: $(cat "$TMP/lint.out")"
[ ! -s "$TMP/lint.out" ] || fail "promtool check metrics found problems: $(cat "$TMP/lint.out")"
ok "promtool check metrics: clean"

grep -q '^cartgate_build_info{version="[0-9][^"]*",sqlite="[0-9.]*"} 1$' "$TMP/metrics.txt" || fail "no cartgate_build_info"
for m in process_cpu_seconds_total process_resident_memory_bytes process_open_fds process_max_fds process_start_time_seconds; do
  v=$(awk -v m="$m" '$1==m {print $2}' "$TMP/metrics.txt")
  [ -n "$v" ] || fail "$m missing"
done
rss=$(awk '$1=="process_resident_memory_bytes" {print $2}' "$TMP/metrics.txt")
[ "$rss" -gt 1000000 ] || fail "process_resident_memory_bytes implausible: $rss"
start=$(awk '$1=="process_start_time_seconds" {printf "%d", $2}' "$TMP/metrics.txt")
now=$(date +%s)
[ $((now - start)) -ge 0 ] && [ $((now - start)) -lt 600 ] || fail "process_start_time_seconds $start vs now $now"
pending=$(sqlite3 "$TMP/cg.db" "SELECT count(*) FROM referrals WHERE state='pending_approval'")
age=$(awk '$1=="cartgate_pending_approval_oldest_age_seconds" {print $2}' "$TMP/metrics.txt")
[ -n "$age" ] || fail "no cartgate_pending_approval_oldest_age_seconds"
if [ "$pending" -gt 0 ]; then
  awk -v a="$age" 'BEGIN {exit !(a > 0)}' || fail "$pending pending approval(s) but oldest age $age"
fi
ok "build_info, process CPU/RSS/fds/start time, oldest pending approval ($pending pending, $age s)"

failures() { awk -v k="cartgate_poll_failures_total{source=\"$1\",reason=\"$2\"}" '$1==k {print $2}' "$TMP/metrics.txt"; }
both_failed() {
  api /metrics && cp "$TMP/resp" "$TMP/metrics.txt"
  [ "$(failures nobody connect)" -ge 1 ] 2>/dev/null && [ "$(failures self auth)" -ge 1 ] 2>/dev/null
}
wait_for "a failed poll of each failing source counted" 120 both_failed
for r in connect network timeout tls auth http_4xx http_5xx parse incomplete ingest store files other; do
  for src in drop nobody self; do
    [ -n "$(failures $src $r)" ] || fail "no cartgate_poll_failures_total for source $src reason $r"
  done
done
[ "$(failures drop connect)" = 0 ] && [ "$(failures nobody auth)" = 0 ] && [ "$(failures self connect)" = 0 ] ||
  fail "failures counted under the wrong source or reason: $(grep poll_failures "$TMP/metrics.txt" | grep -v ' 0$')"
nfail=$(awk '$1 ~ /^cartgate_polls_total\{source="nobody",result="failed"\}/ {print $2}' "$TMP/metrics.txt")
nconn=$(failures nobody connect)
[ "$nfail" = "$nconn" ] || fail "nobody: $nfail failed polls but $nconn counted by reason"
grep -q 'event="poll.done" source="nobody" kind="search" result="failed" reason="connect"' "$TMP/d1.log" || fail "no poll.done reason=connect: $(grep poll.done "$TMP/d1.log" | grep nobody | head -2)"
grep -q 'event="poll.done" source="self" kind="search" result="failed" reason="auth"' "$TMP/d1.log" || fail "no poll.done reason=auth"
"$PROMTOOL" check metrics <"$TMP/metrics.txt" >"$TMP/lint2.out" 2>&1 && [ ! -s "$TMP/lint2.out" ] || fail "promtool after failures: $(cat "$TMP/lint2.out")"
ok "poll failures by reason: nobody listening = connect ($nconn), 401 = auth ($(failures self auth)); 13 reasons x 3 sources shown; promtool clean"
stop_daemon "$DPID"

"$PROMTOOL" check rules "$SRC/conf/monitoring/alerts.yml" >"$TMP/rules.out" 2>&1 || fail "promtool check rules: $(cat "$TMP/rules.out")"
ok "promtool check rules conf/monitoring/alerts.yml: $(grep -o '[0-9]* rules found' "$TMP/rules.out")"

# every series the rules and the dashboard use exists (histogram series by their base name)
node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$SRC/conf/monitoring/grafana-dashboard.json" ||
  fail "grafana-dashboard.json is not JSON"
used=$(grep -ohE '\b(cartgate|process)_[a-z_]+' "$SRC/conf/monitoring/alerts.yml" "$SRC/conf/monitoring/grafana-dashboard.json" | sort -u)
[ -n "$used" ] || fail "no series found in conf/monitoring"
for s in $used; do
  base=${s%_bucket}
  grep -q "^# TYPE $base " "$TMP/metrics.txt" || fail "conf/monitoring uses $s, which /metrics does not serve"
done
ok "every series of the alert rules and the dashboard is served ($(echo "$used" | wc -l) series)"
echo "test_metrics: $CHECKS checks passed"
