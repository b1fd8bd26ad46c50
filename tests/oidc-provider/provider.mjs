// A real OpenID provider (the certified `oidc-provider` package) on 127.0.0.1 for cartgate's
// sign-in tests. Accounts and their groups are fixed below; the signing key is made at start
// (or read from --keys FILE so a restart keeps it). Test hooks under /test/ (never part of an
// OpenID flow): POST /test/tamper?on=1 makes the token endpoint hand out ID tokens whose
// payload was changed after signing (a forged token for the relying party to refuse).
//
//   node provider.mjs --port 0 --client-secret S --redirect-uri URL [--alg RS256|ES256]
//                     [--kid K] [--keys FILE]
// Prints the port on the first line of stdout once listening.
import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
  return acc;
}, []));
const alg = args.alg || 'RS256';
const kid = args.kid || `key-${alg.toLowerCase()}`;

function makeJwk() {
  const pair = alg.startsWith('ES')
    ? crypto.generateKeyPairSync('ec', { namedCurve: alg === 'ES384' ? 'P-384' : 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}
let jwks;
if (args.keys && fs.existsSync(args.keys)) jwks = JSON.parse(fs.readFileSync(args.keys, 'utf8'));
else {
  jwks = { keys: [makeJwk()] };
  if (args.keys) fs.writeFileSync(args.keys, JSON.stringify(jwks));
}

const ACCOUNTS = {
  'dr.grace': { name: 'Dr Grace Hopper', groups: ['staff', 'oncology'] },
  'dr.alan': { name: 'Dr Alan Turing', groups: ['oncology'] },
  'nurse.kim': { name: 'Kim Lee', groups: ['nurses'] },
  'al.admin': { name: 'Al Admin', groups: ['cg-admins'] },
  'bill.billing': { name: 'Bill Payer', groups: ['billing'] },
};

let tamper = false;
const server = http.createServer();
server.listen(Number(args.port || 0), '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'cartgate',
      client_secret: args['client-secret'] || 'cartgate-test-secret',
      redirect_uris: [args['redirect-uri']],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: alg,
    }],
    jwks,
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
    // the claims of the granted scopes go into the ID token itself, as a hospital IdP is set up
    // to do for group-based roles (Entra ID optional claims, Okta groups claim)
    conformIdTokenClaims: false,
    scopes: ['openid', 'profile', 'groups'],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, id) {
      const a = ACCOUNTS[id];
      if (!a) return undefined;
      return { accountId: id, async claims() { return { sub: id, name: a.name, preferred_username: id, groups: a.groups }; } };
    },
    ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 120, IdToken: 300, AccessToken: 300 },
  });
  provider.proxy = false;
  // the forged-token hook: flips one character of the signed payload of every ID token
  provider.use(async (ctx, next) => {
    await next();
    if (tamper && ctx.path === '/token' && ctx.body && ctx.body.id_token) {
      const [h, p, s] = ctx.body.id_token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      claims.groups = ['cg-admins']; // an escalation a forger would try
      ctx.body = { ...ctx.body, id_token: [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.') };
    }
  });
  const handler = provider.callback();
  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (url.pathname === '/test/tamper' && req.method === 'POST') {
        tamper = url.searchParams.get('on') === '1';
        res.end(JSON.stringify({ tamper }));
        return;
      }
      const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
      if (m) {
        const details = await provider.interactionDetails(req, res);
        if (details.prompt.name === 'login' && !m[2]) {
          res.setHeader('Content-Type', 'text/html');
          res.end(`<form method="post" action="/interaction/${details.uid}/login"><input name="login"><button>Sign in</button></form>`);
          return;
        }
        if (details.prompt.name === 'login') {
          const body = await new Promise((ok) => { let d = ''; req.on('data', (c) => { d += c; }); req.on('end', () => ok(d)); });
          const login = new URLSearchParams(body).get('login');
          if (!ACCOUNTS[login]) { res.statusCode = 400; res.end('unknown account'); return; }
          await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
          return;
        }
        // consent: granted for what was asked (a hospital IdP does this for a registered app)
        const grant = details.grantId ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
        const missing = details.prompt.details;
        if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
        if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
        const grantId = await grant.save();
        await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
        return;
      }
      handler(req, res);
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e && e.message));
    }
  });
  process.stdout.write(`${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
