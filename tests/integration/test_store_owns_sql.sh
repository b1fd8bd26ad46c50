#!/usr/bin/env bash
# The store room owns every SQL statement: no C file outside gateway/store/ calls SQLite
# (sqlite3_*) or includes <sqlite3.h>. The library's version string is store_sqlite_version().
# ctest-label: node (runs no cartgate code: nothing for the sanitizer pass)
set -u
SRC=${CARTGATE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$SRC" || exit 1
pattern='sqlite3_[a-z_0-9]*[[:space:]]*\(|#[[:space:]]*include[[:space:]]*<sqlite3\.h>'
# positive control: the pattern does find the store's own calls
[ "$(grep -rEc "$pattern" gateway/store/store.c)" -gt 20 ] ||
  { echo "FAIL: the pattern no longer finds gateway/store/store.c's SQLite calls"; exit 1; }
hits=$(grep -rnE "$pattern" --include='*.c' --include='*.h' gateway fhir mappings tools bench |
  grep -v '^gateway/store/')
if [ -n "$hits" ]; then
  echo "FAIL: SQLite used outside gateway/store/ (add a typed function to store.h instead):"
  echo "$hits"
  exit 1
fi
echo "1 passed, 0 failed"
