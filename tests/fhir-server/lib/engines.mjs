// Which Node.js the reference server needs: the `engines.node` ranges that the packages in
// package-lock.json declare (today the @medplum 5.x packages: ^22.18.0 || >=24.2.0), checked
// against a version. npm only warns about them; scripts/bootstrap and the server enforce them.
//
//   node lib/engines.mjs [--version X.Y.Z]   exit 0 when satisfied, 1 (and why) when not
//
// Runs on any Node >= 14 (it is what bootstrap asks the distribution's Node first).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const LOCK = path.join(HERE, '..', 'package-lock.json');

function parseVersion(s) {
  const m = /^v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?$/.exec(s.trim());
  if (!m) throw new Error(`cannot read version "${s}"`);
  const part = (p) => (p === undefined || /[xX*]/.test(p) ? null : Number(p));
  return [Number(m[1]), part(m[2]), part(m[3])];
}

function cmp(a, b) {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

const fill = (v) => v.map((x) => x ?? 0);

// One comparator ("^22.18.0", ">=24.2", "22.x", "<26") -> predicate over [maj, min, patch].
function comparator(c) {
  const m = /^(\^|~|>=|<=|>|<|=)?\s*(.+)$/.exec(c);
  const op = m[1] || '=';
  const p = parseVersion(m[2]);
  const lo = fill(p);
  if (op === '^' || op === '~' || (op === '=' && (p[1] === null || p[2] === null))) {
    let hi;
    if (op === '=' ) hi = p[1] === null ? [p[0] + 1, 0, 0] : [p[0], p[1] + 1, 0];
    else if (op === '~') hi = p[1] === null ? [p[0] + 1, 0, 0] : [p[0], p[1] + 1, 0];
    else if (p[0] > 0 || p[1] === null) hi = [p[0] + 1, 0, 0];
    else if (p[1] > 0 || p[2] === null) hi = [0, p[1] + 1, 0];
    else hi = [0, 0, p[2] + 1];
    return (v) => cmp(v, lo) >= 0 && cmp(v, hi) < 0;
  }
  switch (op) {
    case '>=': return (v) => cmp(v, lo) >= 0;
    case '>': return (v) => cmp(v, lo) > 0;
    case '<=': return (v) => cmp(v, lo) <= 0;
    case '<': return (v) => cmp(v, lo) < 0;
    default: return (v) => cmp(v, lo) === 0;
  }
}

// True when VERSION ("22.23.3" or "v22.23.3") is in RANGE ("^22.18.0 || >=24.2.0").
// Throws on range syntax it does not know (hyphen ranges, pre-releases).
export function satisfies(version, range) {
  const v = fill(parseVersion(version));
  return range.split('||').some((alt) => {
    const parts = alt.trim().split(/\s+/).filter(Boolean);
    if (parts.some((x) => x.includes('-'))) throw new Error(`unsupported range "${range}"`);
    return parts.length === 0 || parts.every((x) => comparator(x)(v));
  });
}

// The engines.node requirements of package-lock.json that VERSION does not meet:
// [{pkg: "@medplum/core@5.2.13", range}] (empty when all are met).
export function unmet(version, lockPath = LOCK) {
  const lock = JSON.parse(fs.readFileSync(lockPath, 'utf8'));
  const out = [];
  for (const [key, p] of Object.entries(lock.packages || {})) {
    const range = p.engines && p.engines.node;
    if (!range || satisfies(version, range)) continue;
    out.push({ pkg: `${key.replace(/^.*node_modules\//, '') || lock.name}@${p.version}`, range });
  }
  return out;
}

// "Node.js v20.19.2 does not satisfy ^22.18.0 || >=24.2.0 (@medplum/core@5.2.13, ...)" or null.
export function explain(version) {
  const u = unmet(version);
  if (u.length === 0) return null;
  const ranges = [...new Set(u.map((x) => x.range))].join('; ');
  return `Node.js ${version} does not satisfy ${ranges} (${u.map((x) => x.pkg).join(', ')})`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const i = process.argv.indexOf('--version');
  const version = i > 0 ? process.argv[i + 1] : process.version;
  const why = explain(version);
  if (why) {
    console.error(why);
    process.exit(1);
  }
  console.log(`Node.js ${version} satisfies the engines of package-lock.json`);
}
