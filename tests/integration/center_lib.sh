# Shared helpers of the two-instance tests (a site cartgate and a center cartgate on loopback;
# sourced after daemon_lib.sh by tests/integration/test_center*.sh).

# center_keys: the site's RSA key ($TMP/site.pem) and its JWKS ($TMP/site.jwks, kid k1), and a
# key the center does not know ($TMP/other.pem).
center_keys() {
  command -v openssl >/dev/null || fail "openssl not installed"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/site.pem" 2>/dev/null || fail "openssl genpkey"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/other.pem" 2>/dev/null || fail "openssl genpkey"
  chmod 600 "$TMP/site.pem" "$TMP/other.pem"
  node "$SERVER_DIR/tools/jwt.mjs" jwks "k1:$TMP/site.pem" >"$TMP/site.jwks" || fail "jwks"
}

# center_conf FILE DB PORT [NOTIFY_JSON]: a center cartgate on 127.0.0.1:PORT with the site
# "site-a" registered; its public URL is CENTER_PUBLIC when set (a proxy in front of it), else
# http://127.0.0.1:PORT.
center_conf() {
  cat >"$1" <<EOC
{
  "role": "center",
  "site": {"id": "center-1", "name": "Lakeshore Cell Therapy (test center)"},
  "store": {"path": "$2"},
  "log": {"level": "debug"},
  "admin": {"port": $3, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "centers": {"file": "$TMP/centers.json"},
  "criteria": {"dir": "$SRC/conf/criteria"},
  "intake": {"public_url": "${CENTER_PUBLIC:-http://127.0.0.1:$3}", "clients": ["site-a $TMP/site.jwks"], "token_ttl_s": 300}${4:+,
  $4}
}
EOC
}

# centers_smart CENTER_PORT OUT: the sample directory with every center at the center cartgate,
# SMART Backend Services as client site-a.
centers_smart() {
  node -e '
const fs=require("fs");
const d=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));
const base="http://127.0.0.1:"+process.argv[2];
for (const c of d.centers) c.fhir={base:base+"/fhir",auth:{type:"smart-backend",client_id:"site-a",
  token_url:base+"/fhir/auth/token",key_file:process.argv[4],key_id:"k1"}};
fs.writeFileSync(process.argv[3], JSON.stringify(d,null,1));' "$SRC/conf/centers.json" "$1" "$2" "$TMP/site.pem"
}

# token [KEY [ISS [AUD [JTI]]]]: asks the center at $CBASE for a token; body in $TMP/tok.json,
# status in CODE.
token() {
  local key=${1:-$TMP/site.pem} iss=${2:-site-a} aud=${3:-$CBASE/fhir/auth/token} jti=${4:-}
  local jwt
  jwt=$(node "$SERVER_DIR/tools/jwt.mjs" sign --key "$key" --alg RS384 --iss "$iss" --aud "$aud" --kid k1 ${jti:+--jti "$jti"}) || fail "sign"
  CODE=$(curl -s -o "$TMP/tok.json" -w '%{http_code}' -X POST \
    --data-urlencode grant_type=client_credentials \
    --data-urlencode client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
    --data-urlencode "client_assertion=$jwt" "$CBASE/fhir/auth/token")
}

# fhir METHOD PATH [curl args]: a FHIR request to the center with $CTOK; body $TMP/f.json, CODE.
fhir() {
  local m=$1 p=$2
  shift 2
  CODE=$(curl -s -o "$TMP/f.json" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $CTOK" \
    -H 'Content-Type: application/fhir+json' "$@" "$CBASE/fhir$p")
}

# start_center NAME CONF PORT: the center daemon, waiting for its listener on PORT; sets CPID.
start_center() {
  local before
  before=$(cat "$TMP/$1.log" 2>/dev/null | wc -l)
  "$CG" run -c "$2" 2>>"$TMP/$1.log" &
  CPID=$!
  PIDS+=("$CPID")
  for _ in $(seq 1 300); do
    kill -0 "$CPID" 2>/dev/null || fail "center $1 exited early"
    tail -n +$((before + 1)) "$TMP/$1.log" 2>/dev/null | grep -q "event=\"admin.listen\".*port=\"$3\"" && return 0
    sleep 0.1
  done
  fail "center $1 did not listen on $3"
}

# start_fault_proxy UPSTREAM_PORT SEED LOG [ARGS...]: tests/integration/fault_proxy.mjs in front
# of 127.0.0.1:UPSTREAM_PORT (502/503/resets by a seeded schedule, one JSON line per request in
# LOG); sets PROXY_PID and PROXY_PORT.
start_fault_proxy() {
  local up=$1 seed=$2 log=$3
  shift 3
  node "$SRC/tests/integration/fault_proxy.mjs" --upstream "http://127.0.0.1:$up" --seed "$seed" \
    --log "$log" "$@" >"$TMP/proxy.out" 2>"$TMP/proxy.err" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  PROXY_PORT=""
  for _ in $(seq 1 300); do
    kill -0 "$PROXY_PID" 2>/dev/null || fail "fault proxy exited early: $(cat "$TMP/proxy.err")"
    PROXY_PORT=$(head -n1 "$TMP/proxy.out" 2>/dev/null)
    [[ "$PROXY_PORT" =~ ^[0-9]+$ ]] && return 0
    sleep 0.1
  done
  fail "fault proxy did not listen"
}
