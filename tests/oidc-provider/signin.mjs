// Drives a browser's OpenID Connect sign-in against cartgate and the test provider, with
// redirects followed by hand and one cookie jar per origin (as a browser keeps them):
//   cartgate /auth/oidc/start -> provider /auth -> /interaction (login form, POST the
//   account) -> consent -> cartgate /auth/oidc/callback -> session cookie -> /auth/session
//
//   node signin.mjs --cartgate https://127.0.0.1:PORT --user dr.grace [--nonce VALUE]
// --nonce replaces the nonce the relying party put into the authorization request (an
// attacker's injected request). Prints one JSON line: {"status": <callback status>,
// "session": <the /auth/session answer or null>, "cookie": <the session Set-Cookie line>}.
// Trust for https comes from NODE_EXTRA_CA_CERTS.
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));

const jars = new Map(); // origin -> Map(name -> {value, path})
function store(url, res) {
  const origin = new URL(url).origin;
  if (!jars.has(origin)) jars.set(origin, new Map());
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';').map((x) => x.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq), value = pair.slice(eq + 1);
    const path = (attrs.find((a) => a.toLowerCase().startsWith('path=')) || 'path=/').slice(5);
    const gone = attrs.some((a) => /^max-age=0$/i.test(a)) || /expires=Thu, 01 Jan 1970/i.test(line);
    if (gone || value === '') jars.get(origin).delete(name);
    else jars.get(origin).set(name, { value, path });
  }
}
function cookieHeader(url) {
  const u = new URL(url);
  const jar = jars.get(u.origin);
  if (!jar) return undefined;
  const c = [...jar].filter(([, v]) => u.pathname.startsWith(v.path)).map(([k, v]) => `${k}=${v.value}`);
  return c.length ? c.join('; ') : undefined;
}
async function go(url, init = {}) {
  const headers = { ...(init.headers || {}) };
  const ck = cookieHeader(url);
  if (ck) headers.cookie = ck;
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  store(url, res);
  return res;
}

const cg = args.cartgate;
let res = await go(`${cg}/auth/oidc/start?next=${encodeURIComponent('/auth/session')}`);
if (res.status !== 302) {
  console.log(JSON.stringify({ status: res.status, stage: 'start', body: await res.text(), session: null }));
  process.exit(1);
}
let url = res.headers.get('location');
if (args.nonce) {
  const u = new URL(url);
  u.searchParams.set('nonce', args.nonce);
  url = u.toString();
}
let callback = null;
for (let hops = 0; hops < 20 && !callback; hops++) {
  res = await go(url);
  if (res.status === 200 && url.includes('/interaction/')) {
    const uid = new URL(url).pathname.split('/')[2];
    const origin = new URL(url).origin;
    url = `${origin}/interaction/${uid}/login`;
    res = await go(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `login=${encodeURIComponent(args.user)}` });
  }
  if (res.status < 300 || res.status >= 400) {
    console.log(JSON.stringify({ status: res.status, stage: 'provider', body: (await res.text()).slice(0, 300), session: null }));
    process.exit(1);
  }
  url = new URL(res.headers.get('location'), url).toString();
  if (url.startsWith(`${cg}/auth/oidc/callback`)) callback = url;
}
res = await go(callback);
const status = res.status;
const cookie = res.headers.getSetCookie().find((l) => l.startsWith('cartgate_session=')) || null;
await res.text();
let session = null;
if (status === 200) {
  const s = await go(`${cg}/auth/session`);
  session = await s.json();
}
console.log(JSON.stringify({ status, cookie, session, refresh: res.headers.get('refresh') }));
process.exit(status === 200 && session && session.signed_in ? 0 : 1);
