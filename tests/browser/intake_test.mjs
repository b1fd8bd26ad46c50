// A center's intake inbox in real headless Chromium (puppeteer-core driving the system
// browser) against the center's cartgate; run by tests/integration/test_center.sh, which
// passes everything in the environment. The intake nurse signs in, sees every referral in the
// inbox, opens the first one (its packet), accepts it and schedules its consult; declines the
// second with a coded reason; asks for more information on the third. axe-core on every page
// (no serious or critical violation) and a screenshot under ARTIFACTS. Exits 1 on any failure.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const E = process.env;
const BASE = E.CENTER_UI, ART = E.ARTIFACTS, DB = E.DB;
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
  const res = await page.evaluate(async (src) => {
    if (!window.axe) { (0, eval)(src); }
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, n: v.nodes.length, help: v.help,
                                      target: v.nodes[0] && v.nodes[0].target.join(' ') }));
  }, AXE);
  const bad = res.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe on ${name}: ${JSON.stringify(bad)}`);
  await page.screenshot({ path: path.join(ART, `${String(++shots).padStart(2, '0')}-${name}.png`), fullPage: true });
}

async function submit(selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
}

try {
  // sign in: the center's root leads to the inbox
  await page.goto(BASE + '/', { waitUntil: 'load' });
  check(page.url().includes('/auth/login'), 'an anonymous browser is sent to sign in');
  await page.type('#username', 'nurse.kim');
  await page.type('#password', E.PW_KIM);
  await submit('button[type=submit]');
  check(new URL(page.url()).pathname === '/ui/intake', `the intake nurse lands on the inbox (${page.url()})`);
  await audit('inbox');
  const nums = await page.$$eval('#inbox tbody a[href^="/ui/intake/"]', (as) => as.map((a) => a.textContent.trim()));
  const want = sql("SELECT id FROM intake_referrals ORDER BY urank, received_ms, id").split('\n');
  check(JSON.stringify(nums) === JSON.stringify(want), `the inbox lists every referral once, most urgent then oldest (${nums} vs ${want})`);
  // what the nurse reads names products and indications in words, never a criteria key
  // ("axi-cel LBCL-3L", "cilta-cel:MM-2L", "LBCL-2L-TI")
  const KEY_RE = /[A-Za-z]+-cel[: ][A-Z]+-?\d?L?|\b(?:LBCL|FL|MM|MCL|MZL|CLL|ALL)-\d+L\b/;
  const inboxText = await page.evaluate(() => document.body.innerText);
  check(!KEY_RE.test(inboxText), `the inbox shows no criteria key (${(inboxText.match(KEY_RE) || [])[0]})`);
  const reasons = await page.$$eval('#inbox tbody tr', (trs) => trs.map((tr) => tr.innerText));
  check(reasons.every((r) => /CAR T-cell therapy (evaluation|consultation) .* for [A-Z][a-z]+ \([a-z]+-cel\)/.test(r)),
        `every request names a product by brand (${JSON.stringify(reasons.slice(0, 2))})`);
  ok(`inbox: ${nums.length} referrals`);
  const [a, b, c] = want;

  // the first: the packet, accept, then schedule the consult
  await page.goto(`${BASE}/ui/intake/${a}`, { waitUntil: 'load' });
  const packet = await page.$eval('pre.packet', (p) => p.textContent).catch(() => '');
  check(packet.length > 200, 'the referral page shows the packet');
  check(/Dr\. A\. Rivera/.test(packet), 'the packet names the referring clinician');
  check(!KEY_RE.test(packet), `the packet shows no criteria key (${(packet.match(KEY_RE) || [])[0]})`);
  await audit('referral');
  const pdf = await page.evaluate(async (u) => { const r = await fetch(u); return [r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength]; },
    `${BASE}/ui/intake/${a}/packet.pdf`);
  check(pdf[0] === 200 && pdf[1] === 'application/pdf' && pdf[2] > 1000, `the packet as PDF (${pdf})`);
  await page.type('#acc-note', 'Welcome; our coordinator will call.');
  await submit('#do-accept');
  check((await page.$eval('#answer', (x) => x.textContent)) === 'Accepted', 'accepted');
  await audit('accepted');
  await page.$eval('#sch-when', (x) => { x.value = '2026-12-14T09:30'; });
  await submit('#do-schedule');
  check((await page.$eval('#answer', (x) => x.textContent)) === 'Consult scheduled', 'consult scheduled');
  await audit('scheduled');

  // the second: declined with a coded reason
  await page.goto(`${BASE}/ui/intake/${b}`, { waitUntil: 'load' });
  await page.select('#dec-code', 'no-capacity');
  await page.type('#dec-text', 'no apheresis slots this month');
  await submit('#do-decline');
  check((await page.$eval('#answer', (x) => x.textContent)) === 'Declined', 'declined');
  check(!(await page.$('#do-accept')), 'a declined referral takes no more answers');
  await audit('declined');

  // the third: more information
  await page.goto(`${BASE}/ui/intake/${c}`, { waitUntil: 'load' });
  await page.type('#inf-text', 'Please send the latest PET/CT report');
  await submit('#do-info');
  check((await page.$eval('#answer', (x) => x.textContent)) === 'More information requested', 'more information requested');
  check((await page.$eval('#done', (x) => x.textContent)).startsWith('Recorded: More information requested.'), 'the note after acting says what in words');
  const hist = await page.$$eval('#history tbody tr', (t) => t.map((r) => r.cells[0].textContent + '|' + r.cells[2].textContent));
  check(hist.length === 2 && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\|Received$/.test(hist[0]) && hist[1].endsWith('|More information requested'),
    `the history in words, times as on the site's pages (${hist})`);
  await audit('info');

  // back in the inbox: the declined one is gone from the open list
  await page.goto(`${BASE}/ui/intake`, { waitUntil: 'load' });
  const open = await page.$$eval('#inbox tbody a[href^="/ui/intake/"]', (as) => as.map((x) => x.textContent.trim()));
  check(!open.includes(b) && open.includes(a) && open.includes(c), `the open inbox (${open}) leaves out the declined ${b}`);
  await audit('inbox-after');
  const acts = sql(`SELECT action || ':' || actor || ':' || coalesce(role,'') FROM audit WHERE intake_id IN (${a},${b},${c}) AND action <> 'intake-received' ORDER BY id`);
  check(acts === 'accept:nurse.kim:intake\nschedule:nurse.kim:intake\ndecline:nurse.kim:intake\nrequest-info:nurse.kim:intake',
    `every act audited with the nurse: ${acts.replace(/\n/g, ', ')}`);
} catch (e) {
  problems.push('exception: ' + (e && e.stack || e));
}
await browser.close();
fs.writeFileSync(path.join(ART, 'acted.txt'), '');
if (problems.length) { console.log(problems.join('\n')); process.exit(1); }
ok('intake inbox in Chromium: accept, schedule, decline, more information; axe clean');
