// SMART Backend Services token endpoint (client_credentials + private_key_jwt), verifying
// the client assertion JWT for real with node:crypto (RS384, ES384), and the access tokens it
// issues. Tokens are opaque random strings kept in memory with their expiry.
import crypto from 'node:crypto';
import fs from 'node:fs';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const MAX_ASSERTION_LIFETIME_S = 300;
const CLOCK_SKEW_S = 10;
const ALGS = {
  RS384: { hash: 'sha384', kty: 'RSA' },
  ES384: { hash: 'sha384', kty: 'EC', crv: 'P-384' },
};

class OAuthError extends Error {
  constructor(status, error, description) {
    super(description);
    this.status = status;
    this.error = error;
  }
}

function b64urlJson(part, what) {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new OAuthError(401, 'invalid_client', `client assertion ${what} is not base64url JSON`);
  }
}

export class SmartAuth {
  // opts: { clientId, jwksFile, publicKeyFiles: [], tokenTtl (s), staticToken, now() ms }
  constructor(opts) {
    this.clientId = opts.clientId ?? null;
    this.tokenTtl = opts.tokenTtl ?? 300;
    this.staticToken = opts.staticToken ?? null;
    this.now = opts.now ?? (() => Date.now());
    this.keys = []; // { kid|null, key: KeyObject, kty, crv }
    this.tokens = new Map(); // access_token -> { exp (ms), scope, clientId }
    this.jtis = new Map(); // jti -> exp (ms)
    this.tokenEndpoint = null;
    this.stats = { issued: 0, refused: 0 };
    if (opts.jwksFile) this.loadJwks(opts.jwksFile);
    for (const f of opts.publicKeyFiles ?? []) this.loadPem(f);
    if (this.clientId && this.keys.length === 0) {
      throw new Error('--smart-client needs --smart-jwks or --smart-public-key');
    }
    if (!this.clientId && this.keys.length > 0) {
      throw new Error('--smart-jwks/--smart-public-key need --smart-client');
    }
  }

  get smartEnabled() {
    return Boolean(this.clientId);
  }

  get authRequired() {
    return Boolean(this.staticToken || this.clientId);
  }

  loadJwks(file) {
    const jwks = JSON.parse(fs.readFileSync(file, 'utf8'));
    for (const jwk of jwks.keys ?? []) {
      if (!jwk.kid) throw new Error(`${file}: every JWK needs a kid`);
      const { d, p, q, dp, dq, qi, ...pub } = jwk; // never keep private parts
      void d; void p; void q; void dp; void dq; void qi;
      const key = crypto.createPublicKey({ key: pub, format: 'jwk' });
      this.keys.push({ kid: jwk.kid, key, kty: jwk.kty, crv: jwk.crv, alg: jwk.alg });
    }
    if (!jwks.keys?.length) throw new Error(`${file}: JWKS has no keys`);
  }

  loadPem(file) {
    const key = crypto.createPublicKey(fs.readFileSync(file));
    const jwk = key.export({ format: 'jwk' });
    this.keys.push({ kid: null, key, kty: jwk.kty, crv: jwk.crv });
  }

  // Handles a POST to the token endpoint; body is the raw x-www-form-urlencoded string.
  // Returns { status, body }.
  tokenRequest(rawBody, contentType) {
    try {
      if (!this.smartEnabled) throw new OAuthError(400, 'unauthorized_client', 'SMART backend services are not configured on this server');
      if (!/^application\/x-www-form-urlencoded/i.test(contentType ?? '')) {
        throw new OAuthError(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
      }
      const form = new URLSearchParams(rawBody);
      if (form.get('grant_type') !== 'client_credentials') {
        throw new OAuthError(400, 'unsupported_grant_type', `grant_type must be client_credentials, got '${form.get('grant_type') ?? ''}'`);
      }
      if (form.get('client_assertion_type') !== ASSERTION_TYPE) {
        throw new OAuthError(400, 'invalid_request', `client_assertion_type must be ${ASSERTION_TYPE}`);
      }
      const assertion = form.get('client_assertion');
      if (!assertion) throw new OAuthError(400, 'invalid_request', 'client_assertion is missing');
      const claims = this.verifyAssertion(assertion);
      const scope = form.get('scope') || 'system/*.read';
      const token = crypto.randomBytes(32).toString('base64url');
      this.tokens.set(token, { exp: this.now() + this.tokenTtl * 1000, scope, clientId: claims.iss });
      this.stats.issued++;
      this.gc();
      return {
        status: 200,
        body: { access_token: token, token_type: 'bearer', expires_in: this.tokenTtl, scope },
      };
    } catch (err) {
      if (!(err instanceof OAuthError)) throw err;
      this.stats.refused++;
      return { status: err.status, body: { error: err.error, error_description: err.message } };
    }
  }

  verifyAssertion(jwt) {
    const parts = jwt.split('.');
    if (parts.length !== 3) throw new OAuthError(401, 'invalid_client', 'client assertion is not a compact JWS');
    const header = b64urlJson(parts[0], 'header');
    const claims = b64urlJson(parts[1], 'payload');
    const alg = ALGS[header.alg];
    if (!alg) throw new OAuthError(401, 'invalid_client', `unsupported JWT alg '${header.alg}' (RS384 or ES384)`);
    if (header.typ !== undefined && String(header.typ).toUpperCase() !== 'JWT') {
      throw new OAuthError(401, 'invalid_client', `JWT typ must be JWT, got '${header.typ}'`);
    }
    let candidates = this.keys.filter((k) => k.kty === alg.kty && (!alg.crv || k.crv === alg.crv));
    if (this.keys.some((k) => k.kid)) {
      if (!header.kid) throw new OAuthError(401, 'invalid_client', 'JWT header has no kid');
      candidates = candidates.filter((k) => k.kid === header.kid || k.kid === null);
      if (!candidates.length) throw new OAuthError(401, 'invalid_client', `no registered ${header.alg} key with kid '${header.kid}'`);
    }
    const data = Buffer.from(parts[0] + '.' + parts[1], 'ascii');
    const sig = Buffer.from(parts[2], 'base64url');
    const ok = candidates.some((k) => {
      try {
        return crypto.verify(alg.hash, data, alg.kty === 'EC' ? { key: k.key, dsaEncoding: 'ieee-p1363' } : k.key, sig);
      } catch {
        return false;
      }
    });
    if (!ok) throw new OAuthError(401, 'invalid_client', 'client assertion signature does not verify against the registered key(s)');

    if (claims.iss !== this.clientId) throw new OAuthError(401, 'invalid_client', `iss '${claims.iss}' is not the registered client id`);
    if (claims.sub !== this.clientId) throw new OAuthError(401, 'invalid_client', `sub '${claims.sub}' is not the registered client id`);
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(this.tokenEndpoint)) {
      throw new OAuthError(401, 'invalid_client', `aud must be the token endpoint ${this.tokenEndpoint}`);
    }
    const nowS = this.now() / 1000;
    if (typeof claims.exp !== 'number') throw new OAuthError(401, 'invalid_client', 'exp claim is missing');
    if (claims.exp <= nowS) throw new OAuthError(401, 'invalid_client', 'client assertion has expired');
    if (claims.exp > nowS + MAX_ASSERTION_LIFETIME_S + CLOCK_SKEW_S) {
      throw new OAuthError(401, 'invalid_client', 'exp is more than 5 minutes in the future');
    }
    if (typeof claims.nbf === 'number' && claims.nbf > nowS + CLOCK_SKEW_S) {
      throw new OAuthError(401, 'invalid_client', 'client assertion is not yet valid (nbf)');
    }
    if (typeof claims.jti !== 'string' || !claims.jti) throw new OAuthError(401, 'invalid_client', 'jti claim is missing');
    const jtiKey = claims.iss + '\u0000' + claims.jti;
    if (this.jtis.has(jtiKey)) throw new OAuthError(401, 'invalid_client', 'jti has already been used');
    this.jtis.set(jtiKey, claims.exp * 1000 + CLOCK_SKEW_S * 1000);
    return claims;
  }

  gc() {
    const now = this.now();
    for (const [k, exp] of this.jtis) if (exp < now) this.jtis.delete(k);
    for (const [k, t] of this.tokens) if (t.exp < now - 3600_000) this.tokens.delete(k);
  }

  // Checks an Authorization header. Returns null when allowed, else { status, text, error }.
  check(authHeader) {
    if (!this.authRequired) return null;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authHeader ?? '');
    if (!m) return { status: 401, error: 'invalid_request', text: 'missing bearer token' };
    const tok = m[1];
    if (this.staticToken && tok === this.staticToken) return null;
    const t = this.tokens.get(tok);
    if (!t) return { status: 401, error: 'invalid_token', text: 'unknown access token' };
    if (t.exp <= this.now()) return { status: 401, error: 'invalid_token', text: 'access token has expired' };
    return null;
  }

  // Admin: expire every issued token now (tests of refresh without waiting).
  expireAll() {
    const now = this.now();
    let n = 0;
    for (const t of this.tokens.values()) {
      if (t.exp > now) {
        t.exp = now;
        n++;
      }
    }
    return n;
  }

  configuration() {
    return {
      issuer: this.tokenEndpoint.replace(/\/auth\/token$/, ''),
      token_endpoint: this.tokenEndpoint,
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      grant_types_supported: ['client_credentials'],
      scopes_supported: ['system/*.read', 'system/*.write', 'system/*.*', 'system/*.rs', 'system/*.cruds'],
      capabilities: ['client-confidential-asymmetric', 'permission-v1', 'permission-v2'],
    };
  }
}
