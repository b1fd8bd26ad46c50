#!/usr/bin/env bash
# The transport and secret rules of the configuration, through the real binary: check-config
# refuses what `run` could not use or should not do, each with FILE:LINE, and `run` refuses the
# same before it listens:
#   - a center directory with plain http:// endpoints to a host that is not loopback (the
#     directory's FILE:LINE), accepted with centers.insecure_plain_http
#   - a source base_url in plain http:// to a host that is not loopback, accepted with the
#     source's insecure_plain_http
#   - an empty admin token file and an oversized SMART key file
set -u
. "$(dirname "$0")/daemon_lib.sh"
need_tools node
need_cartgate

mkdir -p "$TMP/drop"
centers_for "http://center.example:8080/fhir" "$TMP/centers-plain.json"
centers_for "http://127.0.0.1:9/fhir" "$TMP/centers-lo.json"
conf() { # FILE EXTRA_TOP_LEVEL_JSON CENTERS_JSON
  cat >"$1" <<EOF
{
  "site": {"id": "t-edge"},
  "store": {"path": "$TMP/cg.db"},
  "admin": {"port": 0},
  "centers": $3,
  $2
  "sources": [{"name": "drop", "kind": "files", "dir": "$TMP/drop"}]
}
EOF
}
# the first center's fhir.base line in the generated directory
BL=$(grep -n '"base": "http://center.example:8080/fhir"' "$TMP/centers-plain.json" | head -1 | cut -d: -f1)
[ -n "$BL" ] || fail "no base line in the generated directory"
N=$(grep -c '"base": "http://center.example:8080/fhir"' "$TMP/centers-plain.json")

conf "$TMP/plain.conf" "" "{\"file\": \"$TMP/centers-plain.json\"}"
"$CG" check-config -c "$TMP/plain.conf" >"$TMP/cc.out" 2>&1 && fail "check-config accepted plain http centers"
FIRST=$(grep -m1 'center "' "$TMP/cc.out")
ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).centers[0].id)' "$TMP/centers-plain.json")
WANT="$TMP/centers-plain.json:$BL: center \"$ID\": fhir.base \"http://center.example:8080/fhir\" is plain http:// to center.example (not a loopback host): referrals would cross the network in clear; use https, or set centers.insecure_plain_http in the configuration for a private network you control"
[ "$FIRST" = "$WANT" ] || fail "check-config message:
got:  $FIRST
want: $WANT"
grep -q "^$TMP/plain.conf: $N errors in the files it names\$" "$TMP/cc.out" || fail "summary: $(tail -1 "$TMP/cc.out")"
[ "$(grep -c 'is plain http:// to center.example' "$TMP/cc.out")" = "$N" ] || fail "not every center named"
"$CG" run -c "$TMP/plain.conf" >"$TMP/run.out" 2>&1 &
RP=$!
PIDS+=("$RP")
for _ in $(seq 1 100); do kill -0 "$RP" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RP" 2>/dev/null && fail "run kept running with plain http centers"
wait "$RP"; rc=$?
[ "$rc" = 1 ] || fail "run exit $rc"
grep -qF "event=\"config.error\" detail=\"$TMP/centers-plain.json:$BL: center \\\"$ID\\\": fhir.base" "$TMP/run.out" ||
  fail "run log: $(head -3 "$TMP/run.out")"
grep -q 'admin.listen' "$TMP/run.out" && fail "run listened before refusing"
ok "plain http:// centers off loopback: check-config names each ($N, FILE:LINE of the directory), run refuses (exit 1) before listening"

conf "$TMP/allowed.conf" "" "{\"file\": \"$TMP/centers-plain.json\", \"insecure_plain_http\": true}"
"$CG" check-config -c "$TMP/allowed.conf" >"$TMP/cc2.out" 2>&1 || fail "centers.insecure_plain_http refused: $(cat "$TMP/cc2.out")"
conf "$TMP/lo.conf" "" "{\"file\": \"$TMP/centers-lo.json\"}"
"$CG" check-config -c "$TMP/lo.conf" >"$TMP/cc3.out" 2>&1 || fail "loopback centers refused: $(cat "$TMP/cc3.out")"
ok "centers.insecure_plain_http allows them; loopback http centers pass"

cat >"$TMP/src.conf" <<EOF
{
  "site": {"id": "t-edge"},
  "centers": {"file": "$TMP/centers-lo.json"},
  "sources": [
    {"name": "ehr", "kind": "search", "base_url": "http://ehr.example/fhir"}
  ]
}
EOF
"$CG" check-config -c "$TMP/src.conf" >"$TMP/cc4.out" 2>&1 && fail "check-config accepted a plain http EHR"
grep -qxF "$TMP/src.conf:5: sources[0].base_url: \"http://ehr.example/fhir\" is plain http:// to ehr.example (not a loopback host): patient data and credentials would cross the network in clear; use https, or set sources[0].insecure_plain_http for a private network you control" "$TMP/cc4.out" ||
  fail "source message: $(cat "$TMP/cc4.out")"
sed -i 's|"base_url": "http://ehr.example/fhir"|"base_url": "http://ehr.example/fhir", "insecure_plain_http": true|' "$TMP/src.conf"
"$CG" check-config -c "$TMP/src.conf" >"$TMP/cc5.out" 2>&1 || fail "insecure_plain_http on the source refused: $(cat "$TMP/cc5.out")"
ok "a plain http:// EHR off loopback refused by check-config (FILE:LINE), accepted with the source's insecure_plain_http"

: >"$TMP/empty.tok"
head -c 70000 /dev/zero | tr '\0' 'k' >"$TMP/huge.pem"
cat >"$TMP/sec.conf" <<EOF
{
  "site": {"id": "t-edge"},
  "admin": {"port": 0, "token_file": "$TMP/empty.tok"},
  "centers": {"file": "$TMP/centers-lo.json"},
  "sources": [{"name": "ehr", "kind": "search", "base_url": "https://ehr.example/fhir",
               "auth": {"kind": "smart", "client_id": "c", "key_file": "$TMP/huge.pem"}}]
}
EOF
"$CG" check-config -c "$TMP/sec.conf" >"$TMP/cc6.out" 2>&1 && fail "check-config accepted an empty token file"
grep -qxF "$TMP/sec.conf:3: admin.token_file: secret file $TMP/empty.tok is empty" "$TMP/cc6.out" ||
  fail "empty token file: $(cat "$TMP/cc6.out")"
grep -qxF "$TMP/sec.conf:6: sources[0].auth.key_file: secret file $TMP/huge.pem is 70000 bytes, more than the 65536 a secret file may hold" "$TMP/cc6.out" ||
  fail "oversized key file: $(cat "$TMP/cc6.out")"
ok "an empty admin token file and an oversized key file refused by check-config (FILE:LINE), not at run"
echo "PASS: $CHECKS checks"
