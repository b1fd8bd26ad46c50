// The clinician's pages in real headless Chromium (puppeteer-core driving the system browser)
// against the running daemon; run by tests/integration/test_web_browser.sh, which starts the
// reference EHR (a synth cohort), a reference center and the daemon and passes everything in
// the environment. Every page visited: axe-core (no serious or critical violation) and a
// screenshot under ARTIFACTS. Exits 1 with the reasons on any failure.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const E = process.env;
const BASE = E.ADMIN, ART = E.ARTIFACTS, CENTER = E.CENTER, DB = E.DB, CG = E.CG;
fs.mkdirSync(ART, { recursive: true });
const problems = [];
const ok = (m) => console.log('ok - ' + m);
const check = (cond, m) => { if (!cond) { problems.push(m); console.log('not ok - ' + m); } return cond; };
const sql = (q) => execFileSync('sqlite3', [DB, q], { encoding: 'utf8' }).trim();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await puppeteer.launch({
  executablePath: E.CHROMIUM, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 800 });
let shots = 0;

async function audit(name) {
  await page.addScriptTag({ content: AXE }).catch(() => {}); // CSP blocks inline script tags: evaluate instead
  const res = await page.evaluate(async (src) => {
    if (!window.axe) { (0, eval)(src); }
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, n: v.nodes.length, help: v.help,
                                      target: v.nodes[0] && v.nodes[0].target.join(' ') }));
  }, AXE);
  const bad = res.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe on ${name}: ${JSON.stringify(bad)}`);
  const file = path.join(ART, `${String(++shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return res;
}

async function signIn(user, pw) {
  await page.goto(BASE + '/ui/', { waitUntil: 'load' });
  check(page.url().includes('/auth/login'), 'an anonymous browser is sent to sign in');
  await page.type('#username', user);
  await page.type('#password', pw);
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')]);
  check(new URL(page.url()).pathname === '/ui/', `${user} lands on the worklist (${page.url()})`);
}

async function worklistIds() {
  const ids = [];
  let url = BASE + '/ui/';
  for (let i = 0; i < 100 && url; i++) {
    await page.goto(url, { waitUntil: 'load' });
    ids.push(...await page.$$eval('#worklist tbody a[href^="/ui/patients/"]',
                                  (as) => as.map((a) => a.getAttribute('href').split('/').pop())));
    url = await page.$$eval('nav.pages a', (as) => { const n = as.find((a) => a.textContent === 'Next page'); return n ? n.href : null; });
  }
  return ids;
}

// ---- products and indications as people read them (never a criteria key) --------------------
// Expected from the criteria files themselves: brand (product), indication.short (else the
// description). KEY_RE finds keys such as "axi-cel LBCL-3L", "cilta-cel:MM-2L" or "LBCL-2L-TI".
const CRIT = new Map(fs.readdirSync(E.CRITERIA).filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(fs.readFileSync(path.join(E.CRITERIA, f), 'utf8'))).filter((c) => c.product && c.indication)
  .map((c) => [c.id, { brand: c.product.brand, product: c.product.key, text: c.indication.short || c.indication.description }]));
const KEY_RE = /[A-Za-z]+-cel[: ][A-Z]+-?\d?L?|\b(?:LBCL|FL|MM|MCL|MZL|CLL|ALL)-\d+L\b/;
const prodWords = (k) => { const c = CRIT.get(k); return c.brand.startsWith(c.product) ? c.brand : `${c.brand} (${c.product})`; };
const namesAll = (text, keys) => keys.every((k) => text.includes(prodWords(k)) && text.includes(CRIT.get(k).text));
async function noKeys(name) {
  const t = await page.evaluate(() => document.body.innerText);
  const m = t.match(KEY_RE);
  return check(!m, `${name}: no criteria key in the visible text (found "${m && m[0]}")`);
}

const screen = fs.readFileSync(E.SCREEN, 'utf8').trim().split('\n').map(JSON.parse);
const gt = fs.readFileSync(E.GT, 'utf8').trim().split('\n').map(JSON.parse);
const byId = new Map(screen.map((s) => [s.patient, s]));

// ---- the drug of each medication row of a referral's package, named as a clinician reads it ----
// Expected from the cohort itself (not from the Bundle): medicationCodeableConcept (text, else a
// coding's display), else the Medication it references (contained "#id" or the cohort's
// Medication file) by code, else the reference's display, else the plain-words fallback.
const UNNAMED = 'medication not named in the record';
const cohortOf = (prefix) => fs.readdirSync(E.COHORT_DIR).filter((f) => f.startsWith(prefix + '.') && f.endsWith('.ndjson'))
  .flatMap((f) => fs.readFileSync(path.join(E.COHORT_DIR, f), 'utf8').trim().split('\n').filter(Boolean).map(JSON.parse));
const cohortDrugs = new Map(cohortOf('Medication').map((m) => [m.id, m]));
const medRows = ['MedicationRequest', 'MedicationAdministration', 'MedicationStatement'].flatMap(cohortOf);
const words = (cc) => cc && ((cc.text) || ((cc.coding || []).find((c) => c.display) || {}).display);
function drugName(row) {
  const w = words(row.medicationCodeableConcept);
  if (w) return w;
  const ref = row.medicationReference && row.medicationReference.reference;
  const med = !ref ? null : ref.startsWith('#') ? (row.contained || []).find((c) => c.resourceType === 'Medication' && c.id === ref.slice(1))
    : ref.startsWith('Medication/') ? cohortDrugs.get(ref.slice(11)) : null;
  return (med && words(med.code)) || (row.medicationReference && row.medicationReference.display) || UNNAMED;
}
const rowsOf = (p) => medRows.filter((r) => r.subject && r.subject.reference === `Patient/${p}`);
async function checkDrugs(refId, p) {
  const want = rowsOf(p).map(drugName).sort();
  const shown = await page.$$eval('dl.payload dt', (dts) => dts.filter((dt) => /^Medication(Request|Administration|Statement)$/.test(dt.textContent))
    .map((dt) => { const s = dt.nextElementSibling.querySelector('span.drug'); return s ? s.textContent : '(no drug)'; }));
  shown.sort();
  check(JSON.stringify(shown) === JSON.stringify(want),
        `referral ${refId}: each medication row names its drug as the record does (shown ${JSON.stringify(shown)}, want ${JSON.stringify(want)})`);
  const referenced = new Set(rowsOf(p).map((r) => r.medicationReference && r.medicationReference.reference)
    .filter((x) => x && x.startsWith('Medication/') && cohortDrugs.has(x.slice(11))));
  const drugsShown = await page.$$eval('dl.payload dt', (dts) => dts.filter((dt) => dt.textContent === 'Medication').length);
  check(drugsShown === referenced.size, `referral ${refId}: the package carries each referenced Medication once (${drugsShown} of ${referenced.size})`);
  return { rows: want.length, referenced: referenced.size, contained: rowsOf(p).filter((r) => r.medicationReference && r.medicationReference.reference.startsWith('#')).length };
}

// ---- the clinician -----------------------------------------------------------------------
await page.goto(BASE + '/ui/', { waitUntil: 'load' });
await audit('sign-in');
await signIn('dr.ada', E.PW_ADA);
check((await page.$eval('.who .person', (e) => e.textContent)) === 'Dr Ada Lovelace', 'the signed-in person is named');
await audit('worklist');
await noKeys('the worklist');
const listed = await worklistIds();
const cands = gt.filter((g) => g.expected_category === 'eligible' || g.expected_category === 'possibly_eligible').map((g) => g.patient);
const consultOnly = screen.filter((s) => s.consult && s.consult.recommendation !== 'none' &&
                                         s.category !== 'eligible' && s.category !== 'possibly_eligible').map((s) => s.patient);
const want = new Set([...cands, ...consultOnly]);
check(listed.length === new Set(listed).size, 'no patient listed twice');
check(cands.every((p) => listed.includes(p)), `every ground-truth candidate is listed (missing: ${cands.filter((p) => !listed.includes(p))})`);
check(listed.length === want.size && listed.every((p) => want.has(p)),
      `the worklist is exactly the ground-truth candidates (${cands.length}) plus the consult-only patients (${consultOnly.length}); listed ${listed.length}: extra ${listed.filter((p) => !want.has(p))}`);
ok(`worklist: ${listed.length} patients = ${cands.length} ground-truth candidates + ${consultOnly.length} with a consult recommendation only`);

// open an eligible patient with a proposal awaiting approval
const pid = sql("SELECT patient_id FROM referrals WHERE state='pending_approval' AND supersedes IS NULL ORDER BY id LIMIT 1");
const decl = sql(`SELECT patient_id FROM referrals WHERE state='pending_approval' AND supersedes IS NULL AND patient_id <> '${pid}' ORDER BY id LIMIT 1`);
check(pid && decl, 'two proposals await approval');
await page.goto(`${BASE}/ui/patients/${pid}`, { waitUntil: 'load' });
await audit('patient');
await (await page.$('.tl')).screenshot({ path: path.join(ART, `${String(++shots).padStart(2, '0')}-timeline.png`) });
const s = byId.get(pid);
const shown = await page.$$eval('section.ind', (secs) => secs.map((x) => ({
  title: x.querySelector('h3').textContent, cat: x.querySelector('.cat').className,
  gates: [...x.querySelectorAll('table.gates tbody tr')].map((tr) => tr.className) })));
const eligShown = shown.filter((x) => x.cat.includes('cat-eligible')).map((x) => x.title);
for (const key of s.products) {
  check(eligShown.some((t) => t.includes(prodWords(key)) && t.includes(CRIT.get(key).text)),
        `the page shows ${key} eligible as cartgate screen --json says, in words (${JSON.stringify(eligShown)})`);
}
{
  const banner = await page.$eval('.verdict .big', (e) => e.innerText);
  check(banner.startsWith('ELIGIBLE — ') && namesAll(banner, s.products),
        `the banner names brand, product and indication in plain words: "${banner}"`);
  await noKeys('the patient page');
  {
    // the labs and the gates name no record ("Observation/<id>"): a clinician reads values and dates
    const t = await page.evaluate(() => document.body.innerText);
    const m = t.match(/\b(Observation|Condition|Procedure|Medication(Administration|Request|Statement)?|DiagnosticReport|Coverage)\/[A-Za-z0-9.-]+/);
    check(!m, `the patient page: no record reference in the visible text (found "${m && m[0]}")`);
  }
  // review flags and notes in words, as the packet says them: not "ecog (ECOG 2 ...): ..."
  const flags = await page.$$eval('ul.flags li', (l) => l.map((x) => x.innerText));
  check(flags.length > 0 && flags.every((f) => f === 'None raised.' || !/^[a-z0-9_]+ \(/.test(f)),
        `review flags start with what was found, not the flag's id: ${JSON.stringify(flags.map((f) => f.slice(0, 40)))}`);
}
check(eligShown.length === s.products.length, `as many eligible indications on the page (${eligShown.length}) as in screen --json (${s.products.length})`);
check(shown.filter((x) => x.cat.includes('cat-eligible')).every((x) => x.gates.length > 0 && x.gates.every((g) => g === 'gate-met')),
      'every gate of an eligible indication is met');
// the timeline: one bar per line of therapy with its drugs, as `cartgate profile --json` builds them
const prof = execFileSync(CG, ['profile', '--json', '--as-of', '2026-11-01', E.COHORT_DIR], { encoding: 'utf8', maxBuffer: 1 << 28 })
  .trim().split('\n').map(JSON.parse).find((x) => x.patient === pid);
const bars = await page.$$eval('svg.timeline rect.bar', (rs) => rs.length);
const texts = await page.$$eval('svg.timeline text.drugs', (ts) => ts.map((t) => t.textContent));
check(bars === prof.lines.length, `timeline bars ${bars} = lines of therapy ${prof.lines.length}`);
prof.lines.forEach((l, i) => check(texts[i] && texts[i].startsWith(`Line ${l.number}: ${l.drugs.join(' + ')}`),
                                   `timeline line ${l.number}: "${texts[i]}"`));
const marks = await page.$$eval('svg.timeline .mark', (m) => m.length);
check(marks === prof.events.length, `timeline marks ${marks} = response/progression records ${prof.events.length}`);
ok(`patient page of ${pid}: gates and timeline agree with cartgate screen / profile`);
{
  // the ranked centers: the first three in view, the rest folded (a details element, closed), in
  // the route's order, every one of them ranked; the stored route says how many
  const route = JSON.parse(sql(`SELECT route_json FROM referrals WHERE patient_id='${pid}' AND state='pending_approval'`) || '{}');
  const n = (route.candidates || []).length;
  const lists = await page.$$eval('ol.centers', (ls) => ls.map((l) => ({ items: l.querySelectorAll('li').length,
    folded: !!l.closest('details.more-centers'), start: l.getAttribute('start') })));
  const inView = lists.filter((l) => !l.folded).reduce((a, l) => a + l.items, 0);
  const folded = lists.filter((l) => l.folded).reduce((a, l) => a + l.items, 0);
  check(n > 4, `the route ranks more than four centers (${n})`);
  check(inView === 3 && folded === n - 3 && lists.some((l) => l.folded && l.start === '4'),
        `three centers in view, the other ${n - 3} folded from number 4 (${JSON.stringify(lists)})`);
  const more = await page.$eval('details.more-centers', (d) => ({ open: d.open, s: d.querySelector('summary').innerText }));
  check(!more.open && more.s.startsWith(`${n - 3} more centers`), `the fold is closed and says how many: "${more.s}"`);
  ok(`patient page of ${pid}: 3 of ${n} ranked centers in view, ${n - 3} one click away`);
}

// approve with the default (top-ranked) center
const rid = sql(`SELECT id FROM referrals WHERE patient_id='${pid}' AND state='pending_approval'`);
const center = await page.$eval('#approve-center', (e) => e.value);
check(center === sql(`SELECT center_id FROM referrals WHERE id=${rid}`), 'the center chooser defaults to the top-ranked center');
await page.type('#approve-note', 'Please call the clinic about timing.');
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/approve"] button[type=submit]')]);
check(page.url().includes('done=approved'), 'approve answers with a redirect back to the page');
check((await page.$eval('.flash', (e) => e.textContent)).startsWith('Approved'), 'the page says it is approved');
const aud = sql(`SELECT actor || '|' || role || '|' || reason FROM audit WHERE referral_id=${rid} AND action='approve'`);
check(aud === 'dr.ada|clinician|Please call the clinic about timing.', `approval audited with the person and note: ${aud}`);
let st = '';
for (let i = 0; i < 120 && st !== 'sent'; i++) { await sleep(500); st = sql(`SELECT state FROM referrals WHERE id=${rid}`); }
check(st === 'sent', `the referral reached the center (state ${st})`);
const placer = sql(`SELECT placer_id FROM referrals WHERE id=${rid}`);
const srs = await (await fetch(`${CENTER}/ServiceRequest?identifier=${encodeURIComponent(placer)}`)).json();
check(srs.total === 1 || (srs.entry || []).length === 1, 'the center holds the ServiceRequest');
const sr = srs.entry && srs.entry[0].resource;
check(sr && (sr.note || []).some((n) => n.text === 'Please call the clinic about timing.'), 'the note to the center is in the ServiceRequest');
{
  const reason = sr && sr.reasonCode && sr.reasonCode[0].text || '';
  const inds = sql(`SELECT indications FROM referrals WHERE id=${rid}`).split(',');
  check(reason.startsWith('CAR T-cell therapy evaluation (') && namesAll(reason, inds) && !KEY_RE.test(reason),
        `the ServiceRequest's reason names the products and indications in words: "${reason}"`);
}
await page.goto(`${BASE}/ui/referrals`, { waitUntil: 'load' });
await audit('referrals');
await noKeys('the referrals list');
check(await page.$eval(`#referrals a[href="/ui/referrals/${rid}"]`, (a) => a.closest('tr').dataset.state) === 'sent', 'the referrals page shows it sent');
// the center accepts: its Task changes, the daemon follows
const taskRef = sql(`SELECT center_task_ref FROM referrals WHERE id=${rid}`);
const task = await (await fetch(`${CENTER}/${taskRef}`)).json();
task.status = 'accepted';
task.businessStatus = { coding: [{ system: 'http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS', code: '3.0' }] };
const put = await fetch(`${CENTER}/${taskRef}`, { method: 'PUT', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(task) });
check(put.status === 200, `PUT ${taskRef} at the center: ${put.status}`);
let shownState = '';
for (let i = 0; i < 120 && shownState !== 'accepted'; i++) {
  await sleep(500);
  await page.goto(`${BASE}/ui/referrals/${rid}`, { waitUntil: 'load' });
  shownState = await page.$eval('#ref-state', (e) => e.dataset.state);
}
check(shownState === 'accepted', `the referral page shows accepted once the center's Task changes (${shownState})`);
check((await page.$$eval('#history tbody tr', (t) => t.map((r) => r.textContent))).some((t) => t.includes('accepted by the center')),
      'the history shows the center accepting');
{
  const h1 = await page.$$eval('#history tbody tr', (t) => t.map((r) => ({ what: r.cells[2].textContent, detail: r.cells[4].textContent })));
  check(h1.some((h) => h.what === 'The center answered' && h.detail === "The center's task is accepted (BSeR 3.0)"),
        `the center's answer is in words with its BSeR code (${JSON.stringify(h1.map((h) => h.detail))})`);
  check(h1.some((h) => h.what === 'Package prepared' && /^\d+ KB /.test(h.detail)), `the package size in KB (${JSON.stringify(h1)})`);
}
await checkDrugs(rid, pid);
{
  const inds = sql(`SELECT indications FROM referrals WHERE id=${rid}`).split(',');
  const prods = await page.$eval('#ref-products', (e) => e.innerText);
  check(namesAll(prods, inds), `the referral page's Products row in words: "${prods}"`);
  await noKeys(`referral ${rid}`);
  // what was sent, readable: a text once per line, dates as "2024-03-10" or "2024-03-10 09:30"
  const lines = await page.$$eval('dl.payload dd', (dds) => dds.map((d) => d.innerText));
  const twice = lines.filter((l) => { const p = l.split(' · '); return p.some((x, i) => p.indexOf(x) !== i); });
  check(twice.length === 0, `no line of the package repeats a text (${JSON.stringify(twice.slice(0, 3))})`);
  const raw = lines.filter((l) => /\d{4}-\d{2}-\d{2}T\d{2}:/.test(l));
  check(raw.length === 0, `the package shows dates in one readable form (${JSON.stringify(raw.slice(0, 3))})`);
}
await audit('referral');
ok(`referral ${rid}: approved → sent → accepted, followed in the pages`);

// re-route the accepted referral to another center: cancelled at the first, the new one sent there
await page.goto(`${BASE}/ui/patients/${pid}`, { waitUntil: 'load' });
const rerouteTo = await page.$$eval('#reroute-center option', (os) => os.map((o) => o.value));
check(rerouteTo.length >= 1 && !rerouteTo.includes(center), `the re-route chooser offers the other ranked centers (${rerouteTo})`);
await page.select('#reroute-center', rerouteTo[0]);
await page.type('#reroute-reason', 'closer to family');
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/reroute"] button[type=submit]')]);
check(page.url().includes('done=rerouted'), `re-route answers with a redirect back to the page (${page.url()})`);
const rid2 = sql(`SELECT id FROM referrals WHERE patient_id='${pid}' AND supersedes=${rid}`);
check(rid2 !== '' && sql(`SELECT center_id FROM referrals WHERE id=${rid2}`) === rerouteTo[0], `the re-route (${rid2}) goes to the chosen center`);
check(sql(`SELECT actor || '|' || reason FROM audit WHERE referral_id=${rid2} AND action='approve'`) === 'dr.ada|closer to family',
      're-route approval audited with the person and reason');
let rr = '';
for (let i = 0; i < 120 && rr !== 'cancelled|sent'; i++) {
  await sleep(500);
  rr = sql(`SELECT (SELECT state FROM referrals WHERE id=${rid}) || '|' || (SELECT state FROM referrals WHERE id=${rid2})`);
}
check(rr === 'cancelled|sent', `the first referral cancelled at its center, the re-route sent (${rr})`);
const firstTask = await (await fetch(`${CENTER}/${taskRef}`)).json();
check(firstTask.status === 'cancelled', `the first center's Task is cancelled (${firstTask.status})`);
// its history reads in words: what was proposed, for which products at which center, replacing which
await page.goto(`${BASE}/ui/referrals/${rid2}`, { waitUntil: 'load' });
const hist = await page.$$eval('#history tbody tr', (t) => t.map((r) => ({ act: r.cells[2].dataset.action, what: r.cells[2].textContent, detail: r.cells[4].textContent })));
const made = hist.find((h) => h.act === 'create');
const centerName2 = await page.$eval('#ref-center', (e) => e.textContent);
check(made && made.what === 'Proposed' && made.detail.startsWith('For ') && made.detail.includes(` at ${centerName2}`) &&
      made.detail.endsWith(`replaces referral ${rid}`) &&
      namesAll(made.detail, sql(`SELECT indications FROM referrals WHERE id=${rid2}`).split(',')) && !KEY_RE.test(made.detail),
      `the history's first line says what was proposed, in words (${JSON.stringify(made)})`);
check(hist.every((h) => !/placer=|center=|indications=/.test(h.detail)), `no internal keys in the history (${JSON.stringify(hist.map((h) => h.detail))})`);
check(hist.some((h) => h.what === 'Approved'), 'the approval is in the history in words');
ok(`re-route of ${rid} to ${rerouteTo[0]} as referral ${rid2}: cancelled at the first center, sent to the second`);

// approve a third proposal with a center other than the top-ranked one
const alt = sql(`SELECT patient_id FROM referrals WHERE state='pending_approval' AND supersedes IS NULL AND patient_id NOT IN ('${pid}','${decl}') ORDER BY id LIMIT 1`);
check(alt !== '', 'a third proposal awaits approval');
await page.goto(`${BASE}/ui/patients/${alt}`, { waitUntil: 'load' });
const altOpts = await page.$$eval('#approve-center option', (os) => os.map((o) => o.value));
const altTop = await page.$eval('#approve-center', (e) => e.value);
const altPick = altOpts.find((c) => c !== altTop);
check(altPick, `the approve chooser offers more than the top-ranked center (${altOpts})`);
await page.select('#approve-center', altPick);
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/approve"] button[type=submit]')]);
check(page.url().includes('done=approved'), `approve with another center answers approved (${page.url()})`);
const altRid = sql(`SELECT id FROM referrals WHERE patient_id='${alt}' AND state NOT IN ('cancelled','pending_approval') ORDER BY id DESC LIMIT 1`);
check(altRid !== '' && sql(`SELECT center_id FROM referrals WHERE id=${altRid}`) === altPick, `the approved referral goes to the chosen center ${altPick}`);
let as = '';
for (let i = 0; i < 120 && as !== 'sent'; i++) { await sleep(500); as = sql(`SELECT state FROM referrals WHERE id=${altRid}`); }
check(as === 'sent', `it reached the chosen center (${as})`);
ok(`approve of ${alt} with ${altPick} instead of ${altTop}: sent there`);

// a patient on the worklist without any referral: the centers are ranked on the page anyway
const noRef = listed.find((p) => sql(`SELECT count(*) FROM referrals WHERE patient_id='${p}'`) === '0');
if (noRef) {
  await page.goto(`${BASE}/ui/patients/${noRef}`, { waitUntil: 'load' });
  const ranked = await page.$$eval('ol.centers li', (l) => l.length);
  check(ranked >= 1, `a listed patient without a referral (${noRef}) sees the centers ranked (${ranked})`);
  await audit('patient-no-referral');
  ok(`patient ${noRef} without a referral: ${ranked} centers ranked`);
} else {
  ok('every listed patient has a referral (no page without one to check)');
}

// decline another with a coded reason
await page.goto(`${BASE}/ui/patients/${decl}`, { waitUntil: 'load' });
await page.click('input[name=code][value=patient_declined]');
await page.type('#decline-text', 'prefers to stay local');
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/decline"] button[type=submit]')]);
const after = await worklistIds();
check(!after.includes(decl), 'a declined patient is gone from the worklist');
check(after.length === listed.length - 1, `one patient fewer on the worklist (${after.length})`);
const da = sql(`SELECT actor || '|' || reason FROM audit WHERE action='worklist-decline' AND detail='patient=${decl} code=patient_declined'`);
check(da === 'dr.ada|Patient declined: prefers to stay local', `decline audited with the person and reason: ${da}`);
check(sql(`SELECT state FROM referrals WHERE patient_id='${decl}' ORDER BY id DESC LIMIT 1`) === 'cancelled', 'its proposal is declined');
ok(`decline of ${decl}: off the list, audited`);
await page.goto(`${BASE}/ui/program`, { waitUntil: 'load' });
await audit('program');
const csv = await page.evaluate(async () => (await fetch('/ui/program.csv')).text());
check(csv.includes('decline_reason,,patient_declined,1'), 'the CSV counts the decline reason');
const nSent = sql("SELECT count(DISTINCT referral_id) FROM audit WHERE to_state='sent'");
check(nSent === '3' && new RegExp(`funnel,\\d{4}-\\d{2},sent,${nSent}\n`).test(csv), `the CSV funnel counts the ${nSent} referrals sent`);

// ---- the viewer ---------------------------------------------------------------------------
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('.who button')]);
await signIn('nurse.cy', E.PW_CY);
const other = sql(`SELECT patient_id FROM referrals WHERE state='pending_approval' AND supersedes IS NULL ORDER BY id LIMIT 1`);
await page.goto(`${BASE}/ui/patients/${other}`, { waitUntil: 'load' });
check((await page.$$('form.act')).length === 0 && (await page.$$('section.actions')).length === 0, 'a viewer sees no action buttons');
await audit('patient-viewer');
const forged = await page.evaluate(async (p, r) => {
  const csrf = document.querySelector('input[name=csrf]').value;
  const res = await fetch(`/ui/patients/${p}/approve`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                                                         body: `csrf=${encodeURIComponent(csrf)}&referral=${r}` });
  return res.status;
}, other, sql(`SELECT id FROM referrals WHERE patient_id='${other}' AND state='pending_approval'`));
check(forged === 403, `a viewer's forged approve gets 403 (${forged})`);
check(sql(`SELECT state FROM referrals WHERE patient_id='${other}' ORDER BY id DESC LIMIT 1`) === 'pending_approval', 'and nothing changed');
// tablet width
await page.setViewport({ width: 820, height: 1180 });
await page.goto(BASE + '/ui/', { waitUntil: 'load' });
await audit('worklist-tablet');
ok('viewer: no buttons, forged POST refused; tablet width checked');

// ---- a delivery the center refused, tried again by an administrator ------------------------
await page.setViewport({ width: 1280, height: 800 });
const signOut = async () => Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('.who button')]);
const setFaults = async (rules) => (await fetch(`${E.CENTER_ADMIN}/faults`, { method: 'POST',
  headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ rules }) })).status;
await signOut();
await signIn('dr.ada', E.PW_ADA);
const fpid = sql(`SELECT patient_id FROM referrals WHERE state='pending_approval' AND supersedes IS NULL ORDER BY id LIMIT 1`);
check(fpid !== '', 'a fourth proposal awaits approval');
check(await setFaults([{ mode: 'status', status: 422, methods: ['POST'] }]) === 200, 'the center refuses deliveries (422)');
await page.goto(`${BASE}/ui/patients/${fpid}`, { waitUntil: 'load' });
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/approve"] button[type=submit]')]);
const frid = sql(`SELECT id FROM referrals WHERE patient_id='${fpid}' ORDER BY id DESC LIMIT 1`);
let fst = '';
for (let i = 0; i < 120 && fst !== 'failed'; i++) { await sleep(500); fst = sql(`SELECT state FROM referrals WHERE id=${frid}`); }
check(fst === 'failed', `the refused delivery is failed (${fst})`);
await page.goto(`${BASE}/ui/referrals/${frid}`, { waitUntil: 'load' });
check((await page.$$('form[action$="/retry"]')).length === 0, 'a clinician sees no retry button (administrators retry)');
check(await setFaults([]) === 200, 'the center takes deliveries again');
await signOut();
await signIn('it.ops', E.PW_OPS);
await page.goto(`${BASE}/ui/referrals/${frid}`, { waitUntil: 'load' });
await audit('referral-failed');
await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/retry"] button[type=submit]')]);
let rst = '';
for (let i = 0; i < 120 && rst !== 'sent'; i++) { await sleep(500); rst = sql(`SELECT state FROM referrals WHERE id=${frid}`); }
check(rst === 'sent', `retried by the administrator, the referral reached the center (${rst})`);
check(sql(`SELECT actor || '|' || role FROM audit WHERE referral_id=${frid} AND action='retry'`) === 'it.ops|admin', 'the retry is audited with the administrator');
ok(`referral ${frid}: refused by the center (422), failed, retried in the web app by an administrator, sent`);

// a referral whose medication rows name their drugs by reference to a Medication (and, when the
// cohort has one, by a contained Medication): each row's drug is named on the page
{
  const refs = sql('SELECT id || \'|\' || patient_id FROM referrals ORDER BY id').split('\n').filter(Boolean).map((l) => l.split('|'));
  const usesRef = (p) => rowsOf(p).some((r) => r.medicationReference && r.medicationReference.reference.startsWith('Medication/'));
  const usesContained = (p) => rowsOf(p).some((r) => r.medicationReference && r.medicationReference.reference.startsWith('#'));
  const pick = refs.find(([, p]) => usesRef(p) && usesContained(p)) || refs.find(([, p]) => usesRef(p));
  if (check(pick, 'a referral of the cohort has medication rows that reference a Medication')) {
    await page.goto(`${BASE}/ui/referrals/${pick[0]}`, { waitUntil: 'load' });
    const n = await checkDrugs(pick[0], pick[1]);
    check(n.referenced >= 1, `referral ${pick[0]}: rows referencing a Medication checked (${n.referenced})`);
    await audit('referral-medications');
    ok(`referral ${pick[0]}: ${n.rows} medication rows named (${n.referenced} referenced Medications, ${n.contained} rows with a contained one)`);
  }
}

// a proposal nobody has read yet whose center is dropped from the directory (the centers file
// changed, SIGHUP): the patient page says it could not be prepared and why (the cause in words,
// the re-route), the approve form offers only the centers ranked today, the referral page says
// it too; approving with the first ranked center sends it there
{
  const row = sql("SELECT id || '|' || patient_id || '|' || center_id FROM referrals WHERE state='pending_approval' " +
                  "AND supersedes IS NULL AND package IS NULL AND payload IS NULL ORDER BY id LIMIT 1");
  if (check(row, 'a proposal nobody has read yet (its texts not composed)')) {
    const [uid, upid, ux] = row.split('|');
    const d = JSON.parse(fs.readFileSync(E.CENTERS, 'utf8'));
    d.centers = d.centers.filter((c) => c.id !== ux);
    fs.writeFileSync(E.CENTERS + '.tmp', JSON.stringify(d, null, 1));
    fs.renameSync(E.CENTERS + '.tmp', E.CENTERS);
    const reloads = () => fs.readFileSync(E.DLOG, 'utf8').split('event="reload.done"').length;
    const before = reloads();
    process.kill(Number(E.DPID), 'SIGHUP');
    for (let i = 0; i < 120 && reloads() === before; i++) await sleep(250);
    check(reloads() > before, 'the daemon reloaded the centers file');
    await signOut();
    await signIn('dr.ada', E.PW_ADA);
    await page.goto(`${BASE}/ui/patients/${upid}`, { waitUntil: 'load' });
    const box = await page.$('#unprepared');
    if (check(box, `patient ${upid}: the page says referral ${uid} could not be prepared`)) {
      const cause = await page.$eval('#unprepared', (e) => e.dataset.cause);
      const txt = await page.$eval('#unprepared', (e) => e.innerText);
      check(cause === 'center_not_candidate', `the cause is its center (${cause})`);
      check(txt.includes(`Referral ${uid}`) && txt.includes('could not be prepared') && txt.includes(ux) &&
            txt.includes('re-route') && !txt.includes('/work') && !txt.includes('.c:'),
            `in plain words, naming the center and the re-route: "${txt}"`);
    }
    const opts = await page.$$eval('#approve-center option', (os) => os.map((o) => o.value));
    check(opts.length >= 1 && !opts.includes(ux), `the approve form offers the centers ranked today, not ${ux}: ${JSON.stringify(opts)}`);
    check(sql(`SELECT compose_cause FROM referrals WHERE id=${uid}`) === 'center_not_candidate', 'the cause is on the row');
    await audit('patient-unprepared');
    await page.goto(`${BASE}/ui/referrals/${uid}`, { waitUntil: 'load' });
    const rtxt = await page.$eval('#ref-unprepared', (e) => e.innerText).catch(() => '');
    check(rtxt.includes('no longer among the centers ranked') && rtxt.includes('Choose another center'),
          `the referral page says why and where to act: "${rtxt}"`);
    await audit('referral-unprepared');
    await page.goto(`${BASE}/ui/referrals`, { waitUntil: 'load' });
    const ltxt = await page.$eval(`#referrals tr:has(a[href="/ui/referrals/${uid}"])`, (e) => e.innerText).catch(() => '');
    check(ltxt.includes('Could not be prepared'), `the referrals list marks it: "${ltxt}"`);
    if (opts.length) {
      await page.goto(`${BASE}/ui/patients/${upid}`, { waitUntil: 'load' });
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form[action$="/approve"] button[type=submit]')]);
      let st = '';
      for (let i = 0; i < 120 && st !== 'sent'; i++) { await sleep(500); st = sql(`SELECT state FROM referrals WHERE id=${uid}`); }
      const now = sql(`SELECT center_id || '|' || coalesce(compose_cause, '-') FROM referrals WHERE id=${uid}`);
      check(st === 'sent' && now === `${opts[0]}|-`, `approved with ${opts[0]}: sent there, the cause cleared (${st}, ${now})`);
      ok(`referral ${uid}: its center ${ux} dropped from the directory; shown why, approved with ${opts[0]}, sent`);
    }
  }
}

await browser.close();
if (problems.length) { console.log(`${problems.length} problem(s):\n` + problems.join('\n')); process.exit(1); }
console.log(`all browser checks passed; ${shots} screenshots in ${ART}`);
