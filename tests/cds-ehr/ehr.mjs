// Test EHR for the CDS Hooks integration test (tests/integration/test_daemon_cds.sh): a CDS
// Client that signs its JWT with jose (RS384 and ES384), serves its key set, and calls the
// cartgate CDS service the way an EHR does.
//
//   node ehr.mjs jwks DIR          keys generated into DIR/keys.json (private, for `run`); serves
//                                  GET /jwks.json with the kids listed in DIR/published (read on
//                                  every request: the test rotates keys by rewriting it) and
//                                  GET /stats ({"fetches": n}); prints its port on the first line
//   node ehr.mjs run OPTIONS       the checks; one "ok N - what" line each; exit 1 on a failure
//   node ehr.mjs bench OPTIONS     latencies for bench/cds.sh (one JSON line)
//   node ehr.mjs call OPTIONS      one patient-view call with a patient's prefetch ({status, body})
//   node ehr.mjs sign DIR KID ISS AUD [EXP_OFFSET_S]   prints one JWT
import * as jose from 'jose';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import crypto from 'node:crypto';

const ISS = 'https://ehr.test.example/cds-client';

async function makeKeys(dir) {
  const out = {};
  for (const [kid, alg] of [['rsa-1', 'RS384'], ['ec-1', 'ES384'], ['rsa-2', 'RS384'], ['rogue', 'RS384']]) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
    out[kid] = { alg, pub: { ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' }, priv: await jose.exportJWK(privateKey) };
  }
  fs.writeFileSync(path.join(dir, 'keys.json'), JSON.stringify(out));
  return out;
}

async function serveJwks(dir) {
  const keys = await makeKeys(dir);
  // the rogue key is published under rsa-1's kid? no: never published; rsa-2 only after rotation
  fs.writeFileSync(path.join(dir, 'published'), 'rsa-1\nec-1\n');
  let fetches = 0;
  const srv = http.createServer((req, res) => {
    if (req.url === '/jwks.json') {
      fetches++;
      const kids = fs.readFileSync(path.join(dir, 'published'), 'utf8').split('\n').filter(Boolean);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: kids.map((k) => keys[k].pub) }));
    } else if (req.url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ fetches }));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
}

function loadKeys(dir) {
  return JSON.parse(fs.readFileSync(path.join(dir, 'keys.json'), 'utf8'));
}

async function sign(keys, kid, claims, header = {}) {
  const k = keys[kid];
  const key = await jose.importJWK(k.priv, k.alg);
  const now = Math.floor(Date.now() / 1000);
  return new jose.SignJWT({ iss: ISS, iat: now, exp: now + 300, jti: crypto.randomUUID(), ...claims })
    .setProtectedHeader({ alg: k.alg, kid: kid === 'rogue' ? 'rsa-1' : kid, typ: 'JWT', ...header })
    .sign(key);
}

// ---- the checks -----------------------------------------------------------------------------

let n = 0;
let failed = 0;
function ok(cond, what, detail) {
  n++;
  if (cond) console.log(`ok ${n} - ${what}`);
  else {
    failed++;
    console.log(`not ok ${n} - ${what}${detail ? ': ' + detail : ''}`);
  }
}

async function call(url, token, body) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(url, { method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

// the prefetch an EHR would send for the discovery's templates, from one patient's Bundle
function prefetchOf(bundle) {
  const byType = {};
  for (const e of bundle.entry) (byType[e.resource.resourceType] ||= []).push(e.resource);
  // a search with _include=<type>:medication: the matches, then the Medications they reference
  const ss = (t) => {
    const match = byType[t] || [];
    const refs = new Set(match.map((r) => r.medicationReference?.reference).filter(Boolean));
    const inc = (byType.Medication || []).filter((m) => refs.has(`Medication/${m.id}`));
    return { resourceType: 'Bundle', type: 'searchset', total: match.length,
      entry: [...match.map((r) => ({ fullUrl: `${t}/${r.id}`, resource: r, search: { mode: 'match' } })),
        ...inc.map((r) => ({ fullUrl: `Medication/${r.id}`, resource: r, search: { mode: 'include' } }))] };
  };
  return {
    patient: byType.Patient[0],
    conditions: ss('Condition'),
    medicationRequests: ss('MedicationRequest'),
    medicationAdministrations: ss('MedicationAdministration'),
    medicationStatements: ss('MedicationStatement'),
    procedures: ss('Procedure'),
    observations: ss('Observation'),
    coverage: ss('Coverage'),
  };
}

function hookBody(hook, pid, prefetch, extra = {}) {
  const b = { hook, hookInstance: crypto.randomUUID(), context: { userId: 'Practitioner/onc-1', patientId: pid }, ...extra };
  if (prefetch) b.prefetch = prefetch;
  if (hook === 'order-select') {
    // the selected draft order is the next line's drug (glofitamab, matched by name);
    // extra.draftDrug replaces it. The second draft (a therapy too) is not selected, so a
    // non-therapy selection shows that only the selected orders count.
    const drug = extra.draftDrug || 'glofitamab (Columvi) 2.5 mg IV';
    const mr = (id, text) => ({ resource: { resourceType: 'MedicationRequest', id, status: 'draft', intent: 'order', subject: { reference: `Patient/${pid}` }, medicationCodeableConcept: { text } } });
    b.context.draftOrders = { resourceType: 'Bundle', type: 'collection', entry: [mr('draft-1', drug), mr('draft-2', 'glofitamab 10 mg IV')] };
    b.context.selections = ['MedicationRequest/draft-1'];
    delete b.draftDrug;
  }
  return b;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// CDS Hooks 2.0 response shape; returns a list of problems
function shapeProblems(resp) {
  const p = [];
  const noNull = (v, where) => {
    if (v === null) p.push(`${where} is null`);
    else if (Array.isArray(v)) { if (v.length === 0) p.push(`${where} is an empty array`); v.forEach((x, i) => noNull(x, `${where}[${i}]`)); }
    else if (typeof v === 'object') for (const [k, x] of Object.entries(v)) noNull(x, `${where}.${k}`);
  };
  if (!resp || !Array.isArray(resp.cards)) return ['no cards array'];
  for (const [i, c] of resp.cards.entries()) {
    const w = `cards[${i}]`;
    noNull(c, w);
    if (typeof c.summary !== 'string' || !c.summary) p.push(`${w}.summary missing`);
    else if ([...c.summary].length >= 140) p.push(`${w}.summary ${[...c.summary].length} characters`);
    if (!['info', 'warning', 'critical'].includes(c.indicator)) p.push(`${w}.indicator ${c.indicator}`);
    if (!c.source || typeof c.source.label !== 'string') p.push(`${w}.source.label missing`);
    if (c.uuid !== undefined && !UUID.test(c.uuid)) p.push(`${w}.uuid ${c.uuid}`);
    if (c.detail !== undefined && typeof c.detail !== 'string') p.push(`${w}.detail not a string`);
    for (const s of c.suggestions || []) {
      if (typeof s.label !== 'string') p.push(`${w} suggestion without label`);
      if (s.uuid !== undefined && !UUID.test(s.uuid)) p.push(`${w} suggestion uuid ${s.uuid}`);
      for (const a of s.actions || []) {
        if (!['create', 'update', 'delete'].includes(a.type)) p.push(`${w} action type ${a.type}`);
        if (typeof a.description !== 'string') p.push(`${w} action without description`);
      }
    }
    if (c.suggestions && !['at-most-one', 'any'].includes(c.selectionBehavior)) p.push(`${w}.selectionBehavior ${c.selectionBehavior}`);
    for (const l of c.links || []) {
      if (typeof l.label !== 'string' || typeof l.url !== 'string') p.push(`${w} link without label/url`);
      if (!['absolute', 'smart'].includes(l.type)) p.push(`${w} link type ${l.type}`);
      if (l.appContext !== undefined && l.type !== 'smart') p.push(`${w} appContext on a non-smart link`);
      try { new URL(l.url); } catch { p.push(`${w} link url not absolute: ${l.url}`); }
    }
  }
  return p;
}

function opts(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i += 2) o[argv[i].replace(/^--/, '')] = argv[i + 1];
  return o;
}

async function run(o) {
  const keys = loadKeys(o.keys);
  const base = o.cartgate; // the daemon's listener
  const svcUrl = (id) => `${o.public}/cds-services/${id}`;
  const PV = 'cartgate-car-t';
  const tok = (claims = {}, kid = 'rsa-1', header = {}) => sign(keys, kid, { aud: svcUrl(PV), ...claims }, header);

  // discovery (with a JWT, as EHRs send one)
  const d = await call(`${base}/cds-services`, await tok({ aud: `${o.public}/cds-services` }));
  const hooks = (d.json?.services || []).map((s) => s.hook).sort();
  ok(d.status === 200 && hooks.join() === 'order-select,patient-view', 'discovery lists patient-view and order-select', d.text.slice(0, 300));
  const pv = (d.json?.services || []).find((s) => s.hook === 'patient-view');
  ok(pv && pv.id === PV && pv.description && pv.prefetch && pv.prefetch.patient === 'Patient/{{context.patientId}}' && pv.prefetch.conditions,
    'discovery: id, description and prefetch templates');
  const d2 = await call(`${base}/cds-services`);
  ok(d2.status === 200, 'discovery without a JWT answers too');

  const screen = new Map(fs.readFileSync(o.screen, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).map((v) => [v.patient, v]));
  const truth = fs.readFileSync(o.truth, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const bundles = new Map(fs.readdirSync(o.bundles).filter((f) => f.endsWith('.json') && f.startsWith('p'))
    .map((f) => JSON.parse(fs.readFileSync(path.join(o.bundles, f), 'utf8')))
    .map((b) => [b.entry.find((e) => e.resource.resourceType === 'Patient').resource.id, b]));

  const cards = {};
  let shapeBad = [], mismatch = [], candidatesWithout = [], othersWith = [], calls = 0;
  for (const t of truth) {
    const pid = t.patient;
    const v = screen.get(pid);
    const kid = calls++ % 2 ? 'ec-1' : 'rsa-1';
    const r = await call(svcUrl(PV).replace(o.public, base), await tok({}, kid), hookBody('patient-view', pid, prefetchOf(bundles.get(pid))));
    if (r.status !== 200) { mismatch.push(`${pid}: HTTP ${r.status} ${r.text.slice(0, 200)}`); continue; }
    shapeBad.push(...shapeProblems(r.json).map((x) => `${pid}: ${x}`));
    const card = r.json.cards[0];
    const candidate = ['eligible', 'possibly_eligible'].includes(t.expected_category);
    const wants = ['eligible', 'possibly_eligible'].includes(v.category) || v.consult.recommendation !== 'none';
    if (candidate && !card) candidatesWithout.push(pid);
    if (!candidate && card && v.consult.recommendation === 'none') othersWith.push(pid);
    if (!!card !== wants) { mismatch.push(`${pid}: card ${!!card}, screen ${v.category}/${v.consult.recommendation}`); continue; }
    if (!card) continue;
    cards[pid] = card;
    const smart = card.links.find((l) => l.type === 'smart');
    const abs = card.links.find((l) => l.type === 'absolute');
    const ctx = JSON.parse(smart.appContext);
    const want = v.category === 'eligible' ? v.products : v.category === 'possibly_eligible' ? v.possible_products : [];
    const head = v.category === 'eligible' ? 'Eligible for CAR T' : v.category === 'possibly_eligible' ? 'Possibly eligible for CAR T' : null;
    const problems = [];
    if (ctx.category !== v.category) problems.push(`category ${ctx.category} vs ${v.category}`);
    if (ctx.consult !== v.consult.recommendation) problems.push(`consult ${ctx.consult} vs ${v.consult.recommendation}`);
    if (JSON.stringify(ctx.indications) !== JSON.stringify(want)) problems.push(`indications ${ctx.indications} vs ${want}`);
    if (head && !card.summary.startsWith(head)) problems.push(`summary "${card.summary}"`);
    for (const key of want) if (!card.summary.includes(key.split(':')[0]) && !/label indications/.test(card.summary)) problems.push(`summary lacks ${key}`);
    const urgentNow = v.urgency === 'now' || v.consult.recommendation === 'refer_now';
    if (card.indicator !== (urgentNow ? 'warning' : 'info')) problems.push(`indicator ${card.indicator} urgency ${v.urgency}`);
    if (abs.url !== `${o.public}/ui/patients/${pid}` || smart.url !== abs.url) problems.push(`links ${abs.url}`);
    const sr = card.suggestions?.[0]?.actions?.[0]?.resource;
    if (!sr || sr.resourceType !== 'ServiceRequest' || sr.intent !== 'proposal' || sr.status !== 'draft' || sr.subject.reference !== `Patient/${pid}`)
      problems.push('suggestion is not a draft ServiceRequest proposal for the patient');
    if (want.length && !(card.source.url || '').startsWith('https://dailymed.nlm.nih.gov/')) problems.push(`source ${JSON.stringify(card.source)}`);
    for (const m of v.missing) if (!card.detail.includes('**Missing**')) problems.push(`detail lacks missing (${m})`);
    if (problems.length) mismatch.push(`${pid}: ${problems.join('; ')}`);
  }
  const nCand = truth.filter((t) => ['eligible', 'possibly_eligible'].includes(t.expected_category)).length;
  ok(nCand > 0 && candidatesWithout.length === 0, `a card for each of the ${nCand} ground-truth candidates`, candidatesWithout.join(' '));
  ok(othersWith.length === 0, `no card for the others (${truth.length - nCand}) unless a refer-early consult is recommended`, othersWith.join(' '));
  ok(mismatch.length === 0, `cards agree with cartgate screen --json (${Object.keys(cards).length} cards over ${truth.length} patients)`, mismatch.slice(0, 5).join(' | '));
  ok(shapeBad.length === 0, 'every card has the CDS Hooks response shape (required fields, summary < 140, indicator, link types, nothing null)', shapeBad.slice(0, 5).join(' | '));

  // stable: the same verdict gives the same card uuid
  const pid0 = Object.keys(cards)[0];
  const again = await call(svcUrl(PV).replace(o.public, base), await tok(), hookBody('patient-view', pid0, prefetchOf(bundles.get(pid0))));
  ok(again.json?.cards?.[0]?.uuid === cards[pid0].uuid, 'the same patient and verdict give the same card uuid');
  // order-select answers with the same verdict
  const os = await call(`${base}/cds-services/cartgate-car-t-order-select`, await tok({ aud: svcUrl('cartgate-car-t-order-select') }),
    hookBody('order-select', pid0, prefetchOf(bundles.get(pid0))));
  ok(os.status === 200 && os.json?.cards?.[0]?.summary === cards[pid0].summary, 'order-select shows the same card', os.text.slice(0, 200));
  // an order that is not a therapy (an antiemetic selected; the unselected draft is a therapy): no card
  const osNo = await call(`${base}/cds-services/cartgate-car-t-order-select`, await tok({ aud: svcUrl('cartgate-car-t-order-select') }),
    hookBody('order-select', pid0, prefetchOf(bundles.get(pid0)), { draftDrug: 'ondansetron 8 mg PO' }));
  ok(osNo.status === 200 && Array.isArray(osNo.json?.cards) && osNo.json.cards.length === 0,
     'order-select for a non-therapy order (ondansetron selected) shows no card', osNo.text.slice(0, 200));

  // authentication failures: 401 each
  const body0 = () => hookBody('patient-view', pid0, prefetchOf(bundles.get(pid0)));
  const now = Math.floor(Date.now() / 1000);
  const bad = {
    'wrong iss': await tok({ iss: 'https://other-ehr.example' }),
    'wrong aud': await tok({ aud: `${o.public}/cds-services/other` }),
    'expired': await tok({ iat: now - 900, exp: now - 600 }),
    'bad signature (a key the EHR never published)': await tok({}, 'rogue'),
    'foreign jku': await tok({}, 'rsa-1', { jku: 'https://evil.example/jwks.json' }),
    'no token': null,
  };
  for (const [what, t] of Object.entries(bad)) {
    const r = await call(svcUrl(PV).replace(o.public, base), t, body0());
    ok(r.status === 401, `${what} -> 401`, `${r.status} ${r.text.slice(0, 200)}`);
  }
  const once = await tok();
  const first = await call(svcUrl(PV).replace(o.public, base), once, body0());
  const replay = await call(svcUrl(PV).replace(o.public, base), once, body0());
  ok(first.status === 200 && replay.status === 401, 'a replayed jti -> 401', `${first.status} ${replay.status}`);
  // HS256 with the public key as secret must never be accepted
  const hs = await new jose.SignJWT({ iss: ISS, aud: svcUrl(PV), iat: now, exp: now + 300, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'HS256', kid: 'rsa-1', typ: 'JWT' }).sign(new TextEncoder().encode(JSON.stringify(keys['rsa-1'].pub)));
  ok((await call(svcUrl(PV).replace(o.public, base), hs, body0())).status === 401, 'HS256 -> 401');

  // key rotation: a new kid is fetched once it is published
  const before = (await (await fetch(`${o.jwks}/stats`)).json()).fetches;
  const r0 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-1'), body0());
  const mid = (await (await fetch(`${o.jwks}/stats`)).json()).fetches;
  ok(r0.status === 200 && mid === before, 'the key set is cached (no fetch per call)', `${before} -> ${mid}`);
  fs.writeFileSync(path.join(o.keys, 'published'), 'rsa-2\nec-1\n');
  await new Promise((res) => setTimeout(res, 10500)); // the refetch limit (10 s) since the first fetch
  const r2 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'), body0());
  const after = (await (await fetch(`${o.jwks}/stats`)).json()).fetches;
  ok(r2.status === 200 && after === mid + 1, 'a rotated key (new kid) is fetched and accepted', `${r2.status} fetches ${mid} -> ${after}`);

  // prefetch missing: fetched from the FHIR server with the call's token
  const fetchPid = Object.keys(cards)[1] || pid0;
  const stats0 = await (await fetch(`${o.fhiradmin}/stats`)).json();
  const f1 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'),
    hookBody('patient-view', fetchPid, null, { fhirServer: o.fhir, fhirAuthorization: { access_token: o.token, token_type: 'Bearer', expires_in: 300, scope: 'patient/*.read', subject: 'cartgate' } }));
  const stats1 = await (await fetch(`${o.fhiradmin}/stats`)).json();
  const got200 = (stats1.fhir.by_status?.['200'] || 0) - (stats0.fhir.by_status?.['200'] || 0);
  ok(f1.status === 200 && f1.json?.cards?.[0]?.uuid === cards[fetchPid].uuid && got200 >= 8,
    'prefetch missing + fhirAuthorization: read from the FHIR server with that token, the same card', `${f1.status} ${got200} ${f1.text.slice(0, 200)}`);
  // half the prefetch: only the rest is read
  const half = prefetchOf(bundles.get(fetchPid));
  delete half.observations;
  half.procedures = null;
  const f2 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'),
    hookBody('patient-view', fetchPid, half, { fhirServer: o.fhir, fhirAuthorization: { access_token: o.token, token_type: 'Bearer' } }));
  const stats2 = await (await fetch(`${o.fhiradmin}/stats`)).json();
  const got2 = (stats2.fhir.total || 0) - (stats1.fhir.total || 0);
  ok(f2.status === 200 && f2.json?.cards?.[0]?.uuid === cards[fetchPid].uuid && got2 === 2, 'a partial prefetch: only the 2 missing keys are read', `${f2.status} reads ${got2}`);
  const f3 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'),
    hookBody('patient-view', fetchPid, null, { fhirServer: o.fhir, fhirAuthorization: { access_token: 'wrong-token', token_type: 'Bearer' } }));
  ok(f3.status === 412, 'a token the FHIR server refuses -> 412', `${f3.status}`);
  const f4 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'), hookBody('patient-view', fetchPid, null));
  ok(f4.status === 412, 'prefetch missing and no fhirAuthorization -> 412', `${f4.status}`);
  const f5 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'),
    hookBody('patient-view', fetchPid, null, { fhirServer: 'http://127.0.0.1:9/fhir', fhirAuthorization: { access_token: o.token, token_type: 'Bearer' } }));
  ok(f5.status === 412, 'a fhirServer not in cds.fhir_servers is never contacted -> 412', `${f5.status}`);
  const bad400 = await call(svcUrl(PV).replace(o.public, base), await tok({}, 'rsa-2'), { hook: 'patient-view' });
  ok(bad400.status === 400, 'a body without hookInstance/context -> 400', `${bad400.status}`);

  // feedback: accepted for one card, overridden for another
  const fbUrl = `${svcUrl(PV)}/feedback`;
  const [acc, ovr] = Object.keys(cards);
  const fb = await call(fbUrl.replace(o.public, base), await tok({ aud: fbUrl }, 'rsa-2'), {
    feedback: [
      { card: cards[acc].uuid, outcome: 'accepted', acceptedSuggestions: [{ id: cards[acc].suggestions[0].uuid }], outcomeTimestamp: new Date().toISOString() },
      { card: cards[ovr].uuid, outcome: 'overridden', overrideReason: { reason: { code: 'patient-declines', system: 'http://example.org/cds-override', display: 'Patient declines' }, userComment: 'discussed' }, outcomeTimestamp: new Date().toISOString() },
    ],
  });
  ok(fb.status === 200, 'feedback accepted and overridden -> 200', `${fb.status} ${fb.text.slice(0, 200)}`);
  const fbBad = await call(fbUrl.replace(o.public, base), await tok({ aud: svcUrl(PV) }, 'rsa-2'), { feedback: [] });
  ok(fbBad.status === 401, 'feedback with the service URL as aud (not the feedback URL) -> 401', `${fbBad.status}`);
  fs.writeFileSync(o.out, JSON.stringify({ accepted: acc, overridden: ovr, acceptedCard: cards[acc].uuid, cards: Object.keys(cards).length }));
  if (failed) process.exit(1);
}

// ---- benchmark (bench/cds.sh) -----------------------------------------------------------------

const pct = (v, q) => { const a = [...v].sort((x, y) => x - y); return a[Math.min(a.length - 1, Math.ceil(q * a.length) - 1)]; };
const med = (v) => { const a = [...v].sort((x, y) => x - y); const m = a.length >> 1; return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2; };

// ROUNDS rounds of CALLS service calls with prefetch interleaved with CALLS discovery calls on the
// same listener (JWTs signed before the clock starts), then FETCH calls without prefetch that read
// the patient from the reference FHIR server. Latency: from sending the request to the whole
// answer read, in ms. Prints one JSON object.
async function bench(o) {
  const keys = loadKeys(o.keys);
  const svc = `${o.public}/cds-services/cartgate-car-t`;
  const truth = fs.readFileSync(o.truth, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const bundles = new Map(fs.readdirSync(o.bundles).filter((f) => f.endsWith('.json') && f.startsWith('p'))
    .map((f) => JSON.parse(fs.readFileSync(path.join(o.bundles, f), 'utf8')))
    .map((b) => [b.entry.find((e) => e.resource.resourceType === 'Patient').resource.id, b]));
  const pids = truth.map((t) => t.patient);
  const rounds = Number(o.rounds || 5), calls = Number(o.calls || 100), nfetch = Number(o.fetch || 100);
  const timed = async (url, token, body) => {
    const t0 = process.hrtime.bigint();
    const r = await fetch(url, { method: body ? 'POST' : 'GET', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    const text = await r.text();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${text.slice(0, 200)}`);
    return { ms, cards: JSON.parse(text).cards?.length || 0 };
  };
  const out = { rounds: [], service_ms: [], discovery_ms: [], fetch_ms: [], cards: 0 };
  // warm-up: key set fetched, connections open
  await timed(`${o.cartgate}/cds-services`, await sign(keys, 'rsa-1', { aud: `${o.public}/cds-services` }));
  await timed(svc.replace(o.public, o.cartgate), await sign(keys, 'rsa-1', { aud: svc }), hookBody('patient-view', pids[0], prefetchOf(bundles.get(pids[0]))));
  for (let r = 0; r < rounds; r++) {
    const work = [];
    for (let i = 0; i < calls; i++) {
      const pid = pids[(r * calls + i) % pids.length];
      work.push({ pid, body: hookBody('patient-view', pid, prefetchOf(bundles.get(pid))),
        st: await sign(keys, i % 2 ? 'ec-1' : 'rsa-1', { aud: svc }),
        dt: await sign(keys, 'rsa-1', { aud: `${o.public}/cds-services` }) });
    }
    const s = [], d = [];
    for (const w of work) {
      const a = await timed(svc.replace(o.public, o.cartgate), w.st, w.body);
      s.push(a.ms);
      out.cards += a.cards;
      d.push((await timed(`${o.cartgate}/cds-services`, w.dt)).ms);
    }
    out.service_ms.push(...s);
    out.discovery_ms.push(...d);
    out.rounds.push({ service_median: med(s), discovery_median: med(d), ratio: med(s) / med(d) });
  }
  const fw = [];
  for (let i = 0; i < nfetch; i++) fw.push({ pid: pids[i % pids.length], t: await sign(keys, 'rsa-1', { aud: svc }) });
  for (const w of fw)
    out.fetch_ms.push((await timed(svc.replace(o.public, o.cartgate), w.t, hookBody('patient-view', w.pid, null,
      { fhirServer: o.fhir, fhirAuthorization: { access_token: o.token, token_type: 'Bearer' } }))).ms);
  const summary = {
    calls: out.service_ms.length, discovery_calls: out.discovery_ms.length, fetch_calls: out.fetch_ms.length, cards: out.cards,
    service: { median: med(out.service_ms), p99: pct(out.service_ms, 0.99) },
    discovery: { median: med(out.discovery_ms), p99: pct(out.discovery_ms, 0.99) },
    ratio_median_of_rounds: med(out.rounds.map((x) => x.ratio)),
    rounds: out.rounds,
    fetch: { median: med(out.fetch_ms), p99: pct(out.fetch_ms, 0.99) },
  };
  console.log(JSON.stringify(summary));
}

// One patient-view call with that patient's full prefetch; prints the answer's status and body.
async function callOne(o) {
  const keys = loadKeys(o.keys);
  const svc = `${o.public}/cds-services/cartgate-car-t`;
  const b = JSON.parse(fs.readFileSync(path.join(o.bundles, fs.readdirSync(o.bundles).find((f) => f.startsWith(o.pid))), 'utf8'));
  const r = await call(svc.replace(o.public, o.cartgate), await sign(keys, o.kid || 'ec-1', { aud: svc }), hookBody('patient-view', o.pid, prefetchOf(b)));
  console.log(JSON.stringify({ status: r.status, body: r.json }));
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'jwks') await serveJwks(rest[0]);
else if (mode === 'run') await run(opts(rest));
else if (mode === 'bench') await bench(opts(rest));
else if (mode === 'call') await callOne(opts(rest));
else if (mode === 'sign') {
  const [dir, kid, iss, aud, off] = rest;
  const now = Math.floor(Date.now() / 1000);
  console.log(await sign(loadKeys(dir), kid, { iss, aud, exp: now + Number(off || 300) }));
} else {
  console.error('usage: ehr.mjs jwks DIR | run OPTIONS | sign DIR KID ISS AUD');
  process.exit(2);
}
