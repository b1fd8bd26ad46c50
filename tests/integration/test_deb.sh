#!/usr/bin/env bash
# ctest-label: package
# The Debian package: scripts/build-deb builds it in a temporary folder (lintian runs there
# when installed and fails on any tag that packaging/lintian-overrides does not explain); then
# its file list, owners and modes (dpkg-deb -c), control data (dpkg-deb -I: Depends,
# conffiles, maintainer scripts), the systemd unit and the packaged binary are checked.
. "$(dirname "$0")/lib.sh"
for tool in dpkg-deb dpkg-buildflags dpkg-shlibdeps cmake; do
  command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool not installed (scripts/bootstrap installs dpkg-dev)"; exit 77; }
done

"$SRC/scripts/build-deb" --out "$TMP/deb" --build "$TMP/build" >"$TMP/build-deb.log" 2>&1 ||
  fail "build-deb: $(tail -n 30 "$TMP/build-deb.log")"
deb=$(tail -n1 "$TMP/build-deb.log")
[ -f "$SRC/$deb" ] && deb=$SRC/$deb
[ -f "$deb" ] || fail "no .deb: $deb"
version=$(sed -n 's/^project(cartgate VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
case "$(basename "$deb")" in "cartgate_${version}-1_$(dpkg --print-architecture).deb") ;;
  *) fail "unexpected package name $(basename "$deb")" ;; esac
ok "build-deb: $(basename "$deb")"
if command -v lintian >/dev/null 2>&1; then
  grep -q "^build-deb: lintian clean" "$TMP/build-deb.log" || fail "lintian did not run clean: $(tail "$TMP/build-deb.log")"
  ok "lintian: no error, warning or info tag that is not explained in packaging/lintian-overrides"
else
  echo "note: lintian not installed; not linted"
fi

# the unit's folder follows the building release (packaging/deb.cmake)
unitdir=/lib/systemd/system
. /etc/os-release 2>/dev/null && [ "${VERSION_ID%%.*}" -ge 13 ] 2>/dev/null && unitdir=/usr/lib/systemd/system

# file list with owners and modes: "MODE OWNER PATH"
dpkg-deb -c "$deb" | awk '{ p = $6; sub(/^\.\//, "/", p); sub(/\/$/, "", p); if (p != "/") print $1, $2, p }' |
  sort -k3 >"$TMP/contents"
{
  for d in /etc /usr /usr/bin /usr/share /usr/share/cartgate \
           /usr/share/cartgate/criteria /usr/share/cartgate/mappings /usr/share/doc /usr/share/doc/cartgate \
           /usr/share/lintian /usr/share/lintian/overrides /usr/share/man /usr/share/man/man5 \
           /usr/share/man/man8 /var /var/lib; do
    echo "drwxr-xr-x root/root $d"
  done
  case $unitdir in
    /lib/*) for d in /lib /lib/systemd /lib/systemd/system; do echo "drwxr-xr-x root/root $d"; done ;;
    *) for d in /usr/lib /usr/lib/systemd /usr/lib/systemd/system; do echo "drwxr-xr-x root/root $d"; done ;;
  esac
  echo "drwxr-x--- root/root /etc/cartgate"
  echo "-rw-r----- root/root /etc/cartgate/cartgate.conf"
  echo "drwx------ root/root /var/lib/cartgate"
  echo "-rwxr-xr-x root/root /usr/bin/cartgate"
  for f in $unitdir/cartgate.service /usr/share/cartgate/README-centers.md \
           /usr/share/cartgate/cartgate.conf /usr/share/cartgate/centers.json \
           /usr/share/doc/cartgate/README.Debian /usr/share/doc/cartgate/changelog.Debian.gz \
           /usr/share/doc/cartgate/copyright /usr/share/lintian/overrides/cartgate \
           /usr/share/man/man5/cartgate.conf.5.gz /usr/share/man/man8/cartgate.8.gz; do
    echo "-rw-r--r-- root/root $f"
  done
  for f in "$SRC"/conf/criteria/*.json "$SRC"/conf/criteria/README.md; do
    echo "-rw-r--r-- root/root /usr/share/cartgate/criteria/$(basename "$f")"
  done
  for f in "$SRC"/mappings/*.tsv "$SRC"/mappings/README.md "$SRC"/mappings/FACTS.md; do
    echo "-rw-r--r-- root/root /usr/share/cartgate/mappings/$(basename "$f")"
  done
} | sort -k3 >"$TMP/expected"
diff "$TMP/expected" "$TMP/contents" >"$TMP/contents.diff" || fail "file list differs (< expected, > package):
$(cat "$TMP/contents.diff")"
ok "dpkg-deb -c: $(wc -l <"$TMP/contents") entries, owners and modes as expected (etc/cartgate 0750, cartgate.conf 0640, var/lib/cartgate 0700)"

# control: dependencies from dpkg-shlibdeps plus adduser; conffiles; maintainer scripts
dpkg-deb -f "$deb" Depends >"$TMP/depends"
# the PDF renderer and libxml2 are loaded with dlopen (dpkg-shlibdeps cannot see them):
# packaging/deb.cmake names their packages (libglib2.0-0: gobject)
for dep in adduser libc6 libcurl4 libevent-2.1-7 libsqlite3-0 libssl3 libxml2 libyajl2 fonts-dejavu-core \
           libcairo2 libglib2.0-0 libpango-1.0-0 libpangocairo-1.0-0; do
  # Debian 13 renamed some for the 64-bit time_t transition (libcurl4t64, libssl3t64, ...)
  grep -qE "(^|, )${dep}(t64)?( |,|$)" "$TMP/depends" || fail "Depends lacks $dep: $(cat "$TMP/depends")"
done
ok "Depends: $(cat "$TMP/depends")"
mkdir -p "$TMP/control"
dpkg-deb -e "$deb" "$TMP/control"
[ "$(cat "$TMP/control/conffiles")" = /etc/cartgate/cartgate.conf ] || fail "conffiles: $(cat "$TMP/control/conffiles")"
for s in postinst prerm postrm; do
  [ -x "$TMP/control/$s" ] || fail "$s missing or not executable"
  sh -n "$TMP/control/$s" || fail "$s: syntax error"
done
grep -q 'adduser --system --group' "$TMP/control/postinst" || fail "postinst creates no system user"
grep -q 'chmod 0700 /var/lib/cartgate' "$TMP/control/postinst" || fail "postinst does not set the store's mode"
ok "control: conffiles /etc/cartgate/cartgate.conf; postinst (user cartgate, ownership, modes), prerm, postrm"

# the packaged unit and binary
mkdir -p "$TMP/root"
dpkg-deb -x "$deb" "$TMP/root"
unit=$TMP/root$unitdir/cartgate.service
for line in Type=exec User=cartgate UMask=0077 ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
            NoNewPrivileges=yes ReadWritePaths=/var/lib/cartgate Restart=on-failure \
            "ExecStart=/usr/bin/cartgate run -c /etc/cartgate/cartgate.conf"; do
  grep -qxF "$line" "$unit" || fail "unit lacks $line"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s#/usr/bin/cartgate#$TMP/root/usr/bin/cartgate#g" "$unit" >"$TMP/cartgate.service"
  systemd-analyze verify --man=no "$TMP/cartgate.service" >"$TMP/verify.txt" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$TMP/verify.txt")"
  ok "unit: sandbox directives present, systemd-analyze verify clean"
else
  ok "unit: sandbox directives present (systemd-analyze not installed)"
fi
if grep -qaF "$SRC" "$TMP/root/usr/bin/cartgate"; then
  fail "the packaged binary contains the source tree's path $SRC"
fi
"$TMP/root/usr/bin/cartgate" version >"$TMP/version.txt" 2>&1 || fail "packaged cartgate version failed"
grep -qxF "data $TMP/root/usr/share/cartgate (installed prefix $TMP/root/usr)" "$TMP/version.txt" ||
  fail "packaged binary looks elsewhere: $(sed -n 2p "$TMP/version.txt")"
ok "binary: no build path inside; finds its data under the unpacked /usr/share/cartgate"
# the packaged binary links no part of the PDF renderer, yet draws a PDF (loaded when drawn)
needed=$(objdump -p "$TMP/root/usr/bin/cartgate" | awk '$1 == "NEEDED" { print $2 }')
grep -Eq 'pango|cairo|gobject|glib|fontconfig|harfbuzz|libxml2' <<<"$needed" &&
  fail "the packaged binary links the PDF renderer or libxml2: $(tr '\n' ' ' <<<"$needed")"
grep -q '^libxml2 2\.' "$TMP/version.txt" || fail "packaged version did not load libxml2: $(grep libxml2 "$TMP/version.txt")"
"$TMP/root/usr/bin/cartgate" version --pdf "$TMP/test.pdf" >"$TMP/pdf.txt" 2>&1 || fail "packaged version --pdf: $(cat "$TMP/pdf.txt")"
head -c 5 "$TMP/test.pdf" | grep -q '^%PDF-' || fail "packaged version --pdf wrote no PDF"
ok "binary: $(grep -c . <<<"$needed") libraries NEEDED, none of pango/cairo's nor libxml2; loads libxml2; draws a PDF ($(grep '^PDF renderer' "$TMP/pdf.txt"))"
echo "$CHECKS passed, 0 failed"
