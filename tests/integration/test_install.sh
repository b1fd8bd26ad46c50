#!/usr/bin/env bash
# Install layout: `cmake --install` into a temporary prefix, the installed tree moved elsewhere
# (relocation), then `version`, `screen`, `centers`, `check-config` and `run` from there with
# the source and build trees out of sight: as root they are hidden under empty tmpfs mounts in
# a private mount namespace (unshare), so any read of the build or source tree fails; without
# that (no root) the test checks the paths the binary reports instead.
. "$(dirname "$0")/daemon_lib.sh"
need_cartgate
unset CARTGATE_DATA_DIR CARTGATE_CRITERIA_DIR
BUILD=${CARTGATE_BUILD_DIR:-$SRC/build}
[ -f "$BUILD/cmake_install.cmake" ] || fail "no cmake_install.cmake in $BUILD"

cmake --install "$BUILD" --prefix "$TMP/prefix" >"$TMP/install.log" 2>&1 || fail "cmake --install: $(tail -n3 "$TMP/install.log")"
for f in bin/cartgate share/cartgate/criteria/params.json share/cartgate/mappings/drugs.tsv \
         share/cartgate/centers.json share/cartgate/cartgate.conf etc/cartgate/cartgate.conf; do
  [ -e "$TMP/prefix/$f" ] || fail "cmake --install did not install $f"
done
[ -d "$TMP/prefix/var/lib/cartgate" ] || fail "no var/lib/cartgate"
[ "$(stat -c %a "$TMP/prefix/var/lib/cartgate")" = 700 ] || fail "var/lib/cartgate is not 0700"
[ "$(stat -c %a "$TMP/prefix/etc/cartgate/cartgate.conf")" = 640 ] || fail "cartgate.conf is not 0640"
n_crit=$(ls "$SRC"/conf/criteria/*.json | wc -l)
[ "$(ls "$TMP"/prefix/share/cartgate/criteria/*.json | wc -l)" = "$n_crit" ] || fail "criteria files missing"
ok "cmake --install: FHS layout (bin, share/cartgate, etc/cartgate 0640, var/lib/cartgate 0700)"

# relocation: the installed tree moved to another folder
mv "$TMP/prefix" "$TMP/moved"
P=$TMP/moved
BUILD_CG=$CG
CG=$P/bin/cartgate
cp "$SRC/tests/fixtures/demo-dlbcl-bundle.json" "$TMP/bundle.json"

hide=0
if [ "$(id -u)" -eq 0 ] && unshare -m --propagation private true 2>/dev/null; then
  hide=1
fi
# "${HIDDEN[@]}" CMD...: runs CMD with the source and build trees hidden (when root); unshare
# and sh exec, so $! of a background run is CMD's own pid.
HIDDEN=()
if [ $hide -eq 1 ]; then
  HIDDEN=(unshare -m --propagation private sh -c '
    src=$1 build=$2; shift 2
    mount -t tmpfs -o size=1m,mode=0755 cg-hidden "$src" || exit 97
    case "$build" in "$src"/*) ;; *) mount -t tmpfs -o size=1m cg-hidden "$build" || exit 97 ;; esac
    exec "$@"' sh "$SRC" "$BUILD")
fi
out_of_tree() { "${HIDDEN[@]}" "$@"; }

out_of_tree "$CG" version >"$TMP/version.txt" 2>&1 || fail "version: $(cat "$TMP/version.txt")"
grep -qxF "data $P/share/cartgate (installed prefix $P)" "$TMP/version.txt" ||
  fail "version does not name the moved prefix: $(sed -n 2p "$TMP/version.txt")"
for item in criteria mappings centers.json; do
  grep -qE "^  $item +$P/share/cartgate/$item\$" "$TMP/version.txt" || fail "version: $item not under $P"
done
ok "version: data folder relative to the moved prefix, every item present"

# screen: the installed criteria and mapping tables give the same verdicts as the build tree
"$BUILD_CG" screen --as-of 2026-11-01 --json "$TMP/bundle.json" >"$TMP/screen.build" 2>&1 ||
  fail "screen from the build tree failed"
out_of_tree "$CG" screen --as-of 2026-11-01 --json "$TMP/bundle.json" >"$TMP/screen.inst" 2>&1 ||
  fail "installed screen: $(head -n3 "$TMP/screen.inst")"
grep -q '"category"' "$TMP/screen.inst" || fail "installed screen printed no verdict"
cmp -s "$TMP/screen.build" "$TMP/screen.inst" || fail "installed screen differs from the build tree's"
ok "screen from the moved install: same verdicts as the build tree"

# $CARTGATE_DATA_DIR overrides the prefix; a wrong one is named in the error
CARTGATE_DATA_DIR=$TMP/nowhere "$CG" version | grep -qxF "data $TMP/nowhere (\$CARTGATE_DATA_DIR)" ||
  fail "version ignores CARTGATE_DATA_DIR"
if CARTGATE_DATA_DIR=$TMP/nowhere "$CG" screen "$TMP/bundle.json" >"$TMP/screen.bad" 2>&1; then
  fail "screen succeeded without criteria"
fi
grep -q "$TMP/nowhere/criteria" "$TMP/screen.bad" || fail "screen error does not name the folder: $(cat "$TMP/screen.bad")"
ok "CARTGATE_DATA_DIR overrides the prefix; a missing folder is named in the error"

out_of_tree "$CG" centers --near 41.59,-93.62 --json >"$TMP/centers.json" 2>&1 || fail "centers: $(head -n3 "$TMP/centers.json")"
grep -q '"name"' "$TMP/centers.json" || fail "centers listed nothing"
ok "centers: the installed center directory"

export CARTGATE_EHR_TOKEN=ehr-token
out_of_tree "$CG" check-config -c "$P/etc/cartgate/cartgate.conf" >"$TMP/check.txt" 2>&1 ||
  fail "check-config of the installed sample: $(cat "$TMP/check.txt")"
grep -q ": ok (site " "$TMP/check.txt" || fail "check-config said: $(cat "$TMP/check.txt")"
ok "check-config: the installed /etc sample passes"

# the daemon from the moved install loads criteria, centers and mappings from it (defaults)
mkdir -p "$TMP/state/drop"
cat >"$TMP/run.conf" <<EOF
{
  "site": {"id": "install-test", "location": {"lat": 41.59, "lon": -93.62}},
  "store": {"path": "$TMP/state/cartgate.db"},
  "admin": {"bind": "127.0.0.1", "port": 0, "token_env": "CARTGATE_ADMIN_TOKEN"},
  "sources": [{"name": "drops", "kind": "files", "dir": "$TMP/state/drop", "interval_s": 1}]
}
EOF
out_of_tree "$CG" check-config -c "$TMP/run.conf" >"$TMP/check2.txt" 2>&1 || fail "check-config run.conf: $(cat "$TMP/check2.txt")"
start_daemon_hidden() {
  "${HIDDEN[@]}" "$CG" run -c "$TMP/run.conf" 2>>"$TMP/daemon.log" &
  DPID=$!
  PIDS+=("$DPID")
  for _ in $(seq 1 300); do
    kill -0 "$DPID" 2>/dev/null || fail "installed daemon exited early"
    port=$(sed -n 's/.*event="admin.listen" bind="[^"]*" port="\([0-9]*\)".*/\1/p' "$TMP/daemon.log" | tail -n1)
    [ -n "$port" ] && { ADMIN="http://127.0.0.1:$port"; return 0; }
    sleep 0.1
  done
  fail "installed daemon did not log admin.listen"
}
start_daemon_hidden
[ "$(curl -s -o /dev/null -w '%{http_code}' "$ADMIN/healthz")" = 200 ] || fail "/healthz not 200"
cp "$TMP/bundle.json" "$TMP/state/drop/b.json"
for _ in $(seq 1 300); do
  api /api/v1/patients
  [ "$CODE" = 200 ] && grep -q '"count": *[1-9]' "$TMP/resp" && break
  sleep 0.1
done
grep -q '"count": *[1-9]' "$TMP/resp" || fail "the installed daemon screened no patient: $(head -c 300 "$TMP/resp")"
stop_daemon "$DPID"
[ "$DRC" = 0 ] || fail "installed daemon exit status $DRC"
ok "run: the installed daemon screens a dropped Bundle with its installed data"

if [ $hide -eq 1 ]; then
  ok "source and build trees were hidden (tmpfs in a private mount namespace) for every run above"
else
  echo "note: not root, so the source and build trees stayed visible; the reported paths were checked"
fi
echo "$CHECKS passed, 0 failed"
