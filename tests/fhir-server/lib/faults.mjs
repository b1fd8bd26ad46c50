// Fault injection for /fhir requests: a list of rules, each deciding per matching request
// (random with a seeded PRNG, or every Nth) whether to fire.
//   mode "status"      answer `status` (default 500) without performing the request
//   mode "after"       perform the request, then answer `status` (default 500) instead
//   mode "reset"       destroy the connection without any response
//   mode "after-reset" perform the request, then destroy the connection
//   mode "429"         answer 429 with Retry-After (`retry_after` seconds, or an HTTP-date
//                      when `retry_after_date` is true)
//   mode "latency"     only delay (`latency_ms`), then serve normally
// Any rule may also carry latency_ms (delay before the fault), methods (["GET", ...]),
// path (a substring of the path after /fhir), query (a substring of the query string, e.g.
// "_offset=" for every page but the first), and limit (fire at most that many times).
// endpoint "token" makes a rule apply to the SMART token endpoint (/auth/token) instead of
// /fhir (the default, "fhir"): "after-reset" there consumes the client's assertion (its jti)
// and then drops the connection, as a proxy that fails after forwarding would.

const MODES = ['status', 'after', 'reset', 'after-reset', '429', 'latency'];

// mulberry32: small, seedable, reproducible.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function normalizeRule(r) {
  if (!r || typeof r !== 'object') throw new Error('a fault rule must be a JSON object');
  const mode = String(r.mode ?? (r.latency_ms && !r.status ? 'latency' : 'status'));
  if (!MODES.includes(mode)) throw new Error(`unknown fault mode '${mode}' (one of ${MODES.join(', ')})`);
  const rule = { mode };
  if (r.rate !== undefined) {
    const rate = Number(r.rate);
    if (!(rate >= 0 && rate <= 1)) throw new Error('rate must be between 0 and 1');
    rule.rate = rate;
  }
  if (r.every !== undefined) {
    const every = Number(r.every);
    if (!Number.isInteger(every) || every < 1) throw new Error('every must be an integer >= 1');
    rule.every = every;
  }
  if (rule.rate !== undefined && rule.every !== undefined) throw new Error('give rate or every, not both');
  const defStatus = mode === '429' ? 429 : 500;
  rule.status = r.status === undefined ? defStatus : Number(r.status);
  if (!Number.isInteger(rule.status) || rule.status < 400 || rule.status > 599) throw new Error('status must be 400..599');
  if (r.methods !== undefined) {
    const m = Array.isArray(r.methods) ? r.methods : String(r.methods).split(',');
    rule.methods = m.map((x) => String(x).trim().toUpperCase()).filter(Boolean);
  }
  if (r.path !== undefined) rule.path = String(r.path);
  rule.endpoint = r.endpoint === undefined ? 'fhir' : String(r.endpoint);
  if (!['fhir', 'token'].includes(rule.endpoint)) throw new Error("endpoint must be 'fhir' or 'token'");
  if (r.query !== undefined) rule.query = String(r.query);
  rule.latency_ms = r.latency_ms === undefined ? 0 : Number(r.latency_ms);
  if (!(rule.latency_ms >= 0)) throw new Error('latency_ms must be >= 0');
  rule.retry_after = r.retry_after === undefined ? (mode === '429' ? 1 : undefined) : Number(r.retry_after);
  if (rule.retry_after !== undefined && !(rule.retry_after >= 0)) throw new Error('retry_after must be >= 0');
  rule.retry_after_date = Boolean(r.retry_after_date);
  if (r.limit !== undefined) {
    rule.limit = Number(r.limit);
    if (!Number.isInteger(rule.limit) || rule.limit < 0) throw new Error('limit must be an integer >= 0');
  }
  return rule;
}

export class Faults {
  constructor(seed = 1) {
    this.seed = seed >>> 0;
    this.rules = [];
  }

  // Replaces the rule set; counters and random streams restart.
  set(rules, seed) {
    if (seed !== undefined) {
      const s = Number(seed);
      if (!Number.isInteger(s) || s < 0) throw new Error('seed must be a non-negative integer');
      this.seed = s >>> 0;
    }
    const normalized = rules.map(normalizeRule);
    this.rules = normalized.map((r, i) => ({
      ...r,
      seen: 0,
      fired: 0,
      rand: prng((this.seed + Math.imul(i + 1, 0x9e3779b9)) >>> 0),
    }));
  }

  clear() {
    this.rules = [];
  }

  describe() {
    return {
      seed: this.seed,
      rules: this.rules.map(({ rand, ...r }) => { void rand; return r; }),
    };
  }

  // Decides for one request. Returns { latency_ms, fault: rule|null }.
  decide(method, path, query = '', endpoint = 'fhir') {
    let latency = 0;
    let fault = null;
    for (const r of this.rules) {
      if (r.endpoint !== endpoint) continue;
      if (r.methods && !r.methods.includes(method)) continue;
      if (r.path && !path.includes(r.path)) continue;
      if (r.query && !query.includes(r.query)) continue;
      r.seen++;
      let fire;
      if (r.rate !== undefined) fire = r.rand() < r.rate;
      else if (r.every !== undefined) fire = r.seen % r.every === 0;
      else fire = true;
      if (!fire) continue;
      if (r.limit !== undefined && r.fired >= r.limit) continue;
      if (r.mode === 'latency') {
        r.fired++;
        latency += r.latency_ms;
        continue;
      }
      if (fault) continue;
      r.fired++;
      latency += r.latency_ms;
      fault = r;
    }
    return { latency_ms: latency, fault };
  }
}
