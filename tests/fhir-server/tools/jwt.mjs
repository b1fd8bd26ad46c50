#!/usr/bin/env node
// Test helper for SMART Backend Services (independent of the server code):
//   node jwt.mjs jwks KID:PUBLIC_OR_PRIVATE_PEM [KID:PEM ...]   -> JWKS (public parts) on stdout
//   node jwt.mjs sign --key PRIVATE_PEM --alg RS384|ES384 --iss ID [--sub ID] --aud URL
//                     [--kid KID] [--exp-in SECONDS] [--jti ID]  -> compact JWS on stdout
//   node jwt.mjs assertion-form JWT [SCOPE]  -> x-www-form-urlencoded token request body
import crypto from 'node:crypto';
import fs from 'node:fs';

const [cmd, ...rest] = process.argv.slice(2);

function args(list) {
  const o = {};
  for (let i = 0; i < list.length; i += 2) {
    if (!list[i].startsWith('--') || list[i + 1] === undefined) throw new Error(`bad argument ${list[i]}`);
    o[list[i].slice(2)] = list[i + 1];
  }
  return o;
}

if (cmd === 'jwks') {
  const keys = rest.map((spec) => {
    const i = spec.indexOf(':');
    const kid = spec.slice(0, i);
    const pem = fs.readFileSync(spec.slice(i + 1));
    const pub = crypto.createPublicKey(pem).export({ format: 'jwk' });
    return { ...pub, kid, use: 'sig', alg: pub.kty === 'EC' ? 'ES384' : 'RS384' };
  });
  process.stdout.write(JSON.stringify({ keys }) + '\n');
} else if (cmd === 'sign') {
  const a = args(rest);
  if (!a.key || !a.alg || !a.iss || !a.aud) throw new Error('sign needs --key --alg --iss --aud');
  const header = { alg: a.alg, typ: 'JWT', ...(a.kid ? { kid: a.kid } : {}) };
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: a.iss,
    sub: a.sub ?? a.iss,
    aud: a.aud,
    exp: now + Number(a['exp-in'] ?? 240),
    jti: a.jti ?? crypto.randomUUID(),
  };
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const data = `${enc(header)}.${enc(claims)}`;
  const key = crypto.createPrivateKey(fs.readFileSync(a.key));
  const sig = a.alg.startsWith('ES')
    ? crypto.sign('sha384', Buffer.from(data), { key, dsaEncoding: 'ieee-p1363' })
    : crypto.sign('sha384', Buffer.from(data), key);
  process.stdout.write(`${data}.${sig.toString('base64url')}\n`);
} else if (cmd === 'assertion-form') {
  const p = new URLSearchParams({
    grant_type: 'client_credentials',
    scope: rest[1] ?? 'system/*.read',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: rest[0],
  });
  process.stdout.write(p.toString());
} else {
  process.stderr.write('usage: jwt.mjs jwks KID:PEM... | sign --key PEM --alg RS384|ES384 --iss ID --aud URL [--kid K] [--exp-in S] | assertion-form JWT [SCOPE]\n');
  process.exit(2);
}
