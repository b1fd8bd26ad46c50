// Switchable "real EHR" behaviours of the reference server, set at run time through
// POST /admin/quirks (see README.md "Quirks"). Unlike faults (lib/faults.mjs), which stand
// for the infrastructure in front of a server, quirks change what the FHIR server itself
// answers: truncated paging, OperationOutcome warnings in a searchset, paging links and bulk
// files on another origin, a bulk manifest with error[] entries, ignored _since /
// _lastUpdated, one bulk job at a time, a bulk file that fails.
//
// Every quirk is optional; POST replaces the whole set (and restarts the counters). A quirk
// with `limit` fires at most that many times; `fired` counts how often each one fired.

const KNOWN = {
  // A searchset page without `next` while Bundle.total says more: page `page` (1-based,
  // default 1) of searches of `types` (default all) has no next link.
  search_truncate: (q) => ({ page: posInt(q.page ?? 1, 'page'), types: typeList(q.types), limit: optLimit(q) }),
  // An OperationOutcome entry (search.mode "outcome") on every page of searches of `types`.
  search_warning: (q) => ({
    text: String(q.text ?? 'Some search parameters were not fully supported; results may be incomplete'),
    severity: oneOf(q.severity ?? 'warning', ['information', 'warning', 'error'], 'severity'),
    code: String(q.code ?? 'informational'),
    types: typeList(q.types),
    limit: optLimit(q),
  }),
  // Searches of `types` (default all) ignore _lastUpdated (links still carry it).
  search_ignore_last_updated: (q) => ({ types: typeList(q.types) }),
  // Paging links (self, next, previous) point to the second loopback origin (--alt-port).
  paging_origin: (q) => ({ origin: oneOf(q.origin ?? 'alt', ['alt', 'same'], 'origin') }),
  // $export ignores _since (everything comes back; transactionTime still set).
  bulk_ignore_since: () => ({}),
  // The manifest lists error[] entries (NDJSON of OperationOutcome) for `types` instead of
  // their output files (kept when keep_output is true; default: kept unless severity is
  // error). `limit` counts export jobs.
  bulk_errors: (q) => {
    const types = typeList(q.types);
    if (!types) throw new Error('bulk_errors needs types: [...]');
    const severity = oneOf(q.severity ?? 'error', ['fatal', 'error', 'warning', 'information'], 'severity');
    return {
      types,
      severity,
      keep_output: q.keep_output === undefined ? !(severity === 'error' || severity === 'fatal') : Boolean(q.keep_output),
      text: String(q.text ?? 'export of this resource type failed (timeout reading the database)'),
      limit: optLimit(q),
    };
  },
  // Where the output (and error) files of the manifest live: origin "same" or "alt"; with
  // requires_access_token false they are pre-signed URLs under /files/ that must be fetched
  // WITHOUT an Authorization header (400 otherwise), and the manifest says
  // requiresAccessToken: false.
  bulk_files: (q) => ({
    origin: oneOf(q.origin ?? 'alt', ['alt', 'same'], 'origin'),
    requires_access_token: q.requires_access_token === undefined ? false : Boolean(q.requires_access_token),
  }),
  // Output files fail: how "status" (answer `status`, default 500, before any byte) or
  // "truncate" (send the headers and half the body, then drop the connection). Only files of
  // `types` (default all) / with output index `file`; at most `limit` times (default 1).
  bulk_file_fail: (q) => ({
    how: oneOf(q.how ?? 'truncate', ['status', 'truncate'], 'how'),
    status: q.status === undefined ? 500 : httpStatus(q.status),
    types: typeList(q.types),
    file: q.file === undefined ? undefined : nonNegInt(q.file, 'file'),
    limit: q.limit === undefined ? 1 : nonNegInt(q.limit, 'limit'),
  }),
  // One export job at a time: a kick-off while another job is running is answered `status`
  // (default 429) with an OperationOutcome "job already running" and, when retry_after is not
  // null, Retry-After (default 1 s). A job runs until it completes (until "complete", the
  // --bulk-delay-ms) or until it is DELETEd (until "deleted", the default).
  bulk_one_job: (q) => ({
    status: q.status === undefined ? 429 : httpStatus(q.status),
    retry_after: q.retry_after === null ? null : q.retry_after === undefined ? 1 : nonNegInt(q.retry_after, 'retry_after'),
    text: String(q.text ?? 'A bulk export job is already running for this client; try again later'),
    until: oneOf(q.until ?? 'deleted', ['complete', 'deleted'], 'until'),
  }),
};

function posInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be an integer >= 1`);
  return n;
}
function nonNegInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be an integer >= 0`);
  return n;
}
function httpStatus(v) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 400 || n > 599) throw new Error('status must be 400..599');
  return n;
}
function oneOf(v, list, name) {
  if (!list.includes(v)) throw new Error(`${name} must be one of ${list.join(', ')}`);
  return v;
}
function typeList(v) {
  if (v === undefined || v === null) return undefined;
  const list = Array.isArray(v) ? v : String(v).split(',');
  const out = list.map((t) => String(t).trim()).filter(Boolean);
  return out.length ? out : undefined;
}
function optLimit(q) {
  return q.limit === undefined ? undefined : nonNegInt(q.limit, 'limit');
}

export class Quirks {
  constructor() {
    this.set({});
    this.altBase = null; // http://127.0.0.1:ALT (no path) when --alt-port is given
  }

  // Replaces the quirk set: body is {name: options|true, ...}. Throws on a bad quirk.
  set(body) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('quirks must be a JSON object');
    const next = {};
    for (const [name, value] of Object.entries(body)) {
      const make = KNOWN[name];
      if (!make) throw new Error(`unknown quirk '${name}' (one of ${Object.keys(KNOWN).join(', ')})`);
      if (value === false || value === null) continue;
      const opts = value === true ? {} : value;
      if (typeof opts !== 'object' || Array.isArray(opts)) throw new Error(`quirk ${name}: options must be an object or true`);
      try {
        next[name] = { ...make(opts), fired: 0 };
      } catch (err) {
        throw new Error(`quirk ${name}: ${err.message}`);
      }
    }
    if ((next.paging_origin?.origin === 'alt' || next.bulk_files?.origin === 'alt') && !this.altBase) {
      throw new Error('the alt origin needs --alt-port');
    }
    this.q = next;
  }

  describe() {
    return { alt_origin: this.altBase, quirks: this.q };
  }

  // The quirk `name` if it is on and applies to resource type `type` (when given) and its
  // limit is not used up; null otherwise. Does not count a firing (see fire()).
  active(name, type) {
    const q = this.q[name];
    if (!q) return null;
    if (type !== undefined && q.types && !q.types.includes(type)) return null;
    if (q.limit !== undefined && q.fired >= q.limit) return null;
    return q;
  }

  fire(q) {
    q.fired++;
  }
}
