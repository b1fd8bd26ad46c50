#!/usr/bin/env bash
# check-config loads every file and folder the configuration names, as `cartgate run` would:
# a good configuration (criteria, mappings, centers, a ZCTA table, TLS certificate and key, a
# CA bundle, a bearer token file, an OpenID Connect client secret) is ok; each broken one is
# reported as FILE:LINE of the option that names it, and run refuses the same file; a missing
# drop folder or store folder is a warning (run starts; the source's polls fail).
set -u
. "$(dirname "$0")/daemon_lib.sh"
need_cartgate
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }
test_ca
server_cert 1
printf 'GEOID\tINTPTLAT\tINTPTLONG\n50309\t41.58\t-93.62\n' >"$TMP/zcta.txt"
echo "ehr-token-$$" >"$TMP/ehr.token"
echo "oidc-secret-$$" >"$TMP/oidc.secret"
mkdir -p "$TMP/drop" "$TMP/state"
# conf FILE CRITERIA CENTERS ZCTA CERT KEY CA TOKENFILE: one option a line, so each has its own
conf() {
  cat >"$1" <<CONF
{
  "site": {"id": "t-cc"},
  "store": {"path": "$TMP/state/cg.db"},
  "criteria": {
    "dir": "$2"
  },
  "centers": {
    "file": "$3",
    "zcta_file": "$4"
  },
  "admin": {
    "port": 0,
    "tls_cert_file": "$5",
    "tls_key_file": "$6"
  },
  "oidc": {
    "issuer": "https://127.0.0.1:1/realms/x",
    "client_id": "cartgate",
    "client_secret_file": "$TMP/oidc.secret",
    "redirect_uri": "https://127.0.0.1:8443/auth/oidc/callback",
    "role_map": ["*=viewer"]
  },
  "sources": [
    {"name": "ehr", "kind": "search", "base_url": "https://127.0.0.1:1/fhir",
     "ca_file": "$7",
     "auth": {"kind": "bearer", "token_file": "$8"}},
    {"name": "drops", "kind": "files", "dir": "$TMP/drop"}
  ]
}
CONF
}
# line_of FILE TEXT: the line holding TEXT
line_of() { grep -n -F "$2" "$1" | head -n1 | cut -d: -f1; }
GOOD=("$SRC/conf/criteria" "$SRC/conf/centers.json" "$TMP/zcta.txt" "$TMP/tls.crt" "$TMP/tls.key" "$TMP/ca.crt" "$TMP/ehr.token")
conf "$TMP/good.conf" "${GOOD[@]}"
"$CG" check-config -c "$TMP/good.conf" >"$TMP/good.out" 2>"$TMP/good.err" || fail "good config refused: $(cat "$TMP/good.err")"
grep -q ": ok (site t-cc" "$TMP/good.out" && [ ! -s "$TMP/good.err" ] || fail "good config: $(cat "$TMP/good.out" "$TMP/good.err")"
ok "a configuration whose files all load is ok, without warnings"

# bad CASE-NAME INDEX VALUE EXPECT: the good config with argument INDEX replaced; the error names
# the option's line and says EXPECT
bad() {
  local name=$1 idx=$2 val=$3 expect=$4 args=("${GOOD[@]}")
  args[$idx]=$val
  conf "$TMP/$name.conf" "${args[@]}"
  "$CG" check-config -c "$TMP/$name.conf" >"$TMP/$name.out" 2>"$TMP/$name.err" && fail "$name: check-config said ok"
  local line
  line=$(line_of "$TMP/$name.conf" "$val")
  grep -qF "$TMP/$name.conf:$line: $expect" "$TMP/$name.err" || fail "$name: expected '$TMP/$name.conf:$line: $expect', got: $(cat "$TMP/$name.err")"
  grep -q ": 1 error in the files it names$" "$TMP/$name.err" || fail "$name: more than the one error: $(cat "$TMP/$name.err")"
}
mkdir -p "$TMP/empty-criteria"
echo '{"broken": ' >"$TMP/broken.json"
echo "not a certificate" >"$TMP/junk.pem"
openssl genrsa -out "$TMP/other.key" 2048 2>/dev/null || fail "openssl genrsa"
printf 'ZIP\tLAT\n1\t2\n' >"$TMP/badzcta.txt"
bad missing-criteria 0 "$TMP/no-such-criteria" "criteria.dir: $TMP/no-such-criteria is not a folder"
bad empty-criteria 0 "$TMP/empty-criteria" "criteria.dir: "
bad missing-centers 1 "$TMP/no-centers.json" "centers.file: $TMP/no-centers.json"
bad broken-centers 1 "$TMP/broken.json" "centers.file: $TMP/broken.json"
bad bad-zcta 2 "$TMP/badzcta.txt" "centers.zcta_file: $TMP/badzcta.txt:1: header must name the columns"
bad junk-cert 3 "$TMP/junk.pem" "admin.tls_cert_file: TLS: cannot load the certificate chain $TMP/junk.pem"
bad other-key 4 "$TMP/other.key" "admin.tls_key_file: TLS: cannot load the private key $TMP/other.key"
bad junk-ca 5 "$TMP/junk.pem" "sources[0].ca_file: $TMP/junk.pem: no PEM certificate in the file"
ok "each broken file is named at the line of its option: criteria folder missing or empty, centers missing or malformed, ZCTA header, TLS certificate, a key that does not match, a CA bundle without a certificate"

# run refuses what check-config refuses (the same loaders)
"$CG" run -c "$TMP/broken-centers.conf" >"$TMP/run.out" 2>&1 &
RP=$!
PIDS+=("$RP")
for _ in $(seq 1 100); do kill -0 "$RP" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RP" 2>/dev/null && fail "run kept running with a malformed center directory"
wait "$RP"; rc=$?
[ "$rc" != 0 ] && grep -q "$TMP/broken.json" "$TMP/run.out" || fail "run: rc=$rc $(tail -3 "$TMP/run.out")"
ok "run refuses the malformed center directory too (exit $rc)"

# warnings: a drop folder and a store folder that do not exist yet
sed -e "s|$TMP/drop|$TMP/no-drop|" -e "s|$TMP/state/cg.db|$TMP/no-state/cg.db|" "$TMP/good.conf" >"$TMP/warn.conf"
"$CG" check-config -c "$TMP/warn.conf" >"$TMP/warn.out" 2>"$TMP/warn.err" || fail "warnings failed the check: $(cat "$TMP/warn.err")"
grep -q "warn.conf:$(line_of "$TMP/warn.conf" "$TMP/no-drop"): sources\[1\].dir: warning: drop folder $TMP/no-drop does not exist" "$TMP/warn.err" &&
  grep -q "warn.conf:$(line_of "$TMP/warn.conf" "$TMP/no-state"): store.path: warning: folder $TMP/no-state does not exist" "$TMP/warn.err" &&
  grep -q ": ok (site" "$TMP/warn.out" || fail "warnings: $(cat "$TMP/warn.out" "$TMP/warn.err")"
ok "a missing drop folder and store folder are warnings at their lines; the check still passes"
echo "test_check_config_files: $CHECKS checks passed"
