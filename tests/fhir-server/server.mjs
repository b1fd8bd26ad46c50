#!/usr/bin/env node
// Reference FHIR R4 server for cartgate's tests. See README.md for the CLI and admin API.
import './lib/engines-guard.mjs';
import './lib/ws-stub.mjs';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { FhirStore, FHIR_JSON, errorOutcome, loadDefinitions } from './lib/fhir.mjs';
import { SmartAuth } from './lib/smart.mjs';
import { Faults } from './lib/faults.mjs';
import { installBulkExport } from './lib/bulk.mjs';
import { Quirks } from './lib/quirks.mjs';

const USAGE = `usage: node server.mjs [options]
  --port N                 listen port on 127.0.0.1 (0 = any; the port is printed alone on stdout's first line)
  --alt-port N             also listen on a second port (another origin, for the paging_origin and
                           bulk_files quirks; 0 = any; printed alone on stdout's second line)
  --seed PATH              load *.json (resources, Bundles) and *.ndjson under PATH, recursively (repeatable)
  --no-validate            accept writes without validating them against base R4
  --default-count N        page size when _count is absent (default 50)
  --max-count N            largest page size honoured (default 1000)
  --max-body-bytes N       largest request body accepted (default 67108864)
  --token TOKEN            require "Authorization: Bearer TOKEN" (or a SMART-issued token) on /fhir
  --smart-client ID        enable SMART Backend Services for client ID
  --smart-jwks FILE        client's public keys as a JWKS (kid required; RS384 / ES384)
  --smart-public-key PEM   client's public key as PEM (repeatable; kid not checked)
  --token-ttl SECONDS      lifetime of issued access tokens (default 300)
  --tls-cert PEM --tls-key PEM   serve HTTPS instead of HTTP
  --tls-client-ca PEM      with TLS: require client certificates signed by this CA (mTLS)
  --fault-mode MODE        status | after | reset | after-reset | 429 | latency
  --fault-rate R           fire on a random fraction R (0..1) of matching requests
  --fault-every N          fire on every Nth matching request
  --fault-status S         status for status/after modes (default 500)
  --fault-methods LIST     only requests with these methods (e.g. GET,POST)
  --fault-path SUBSTR      only requests whose path after /fhir contains SUBSTR
  --fault-query SUBSTR     only requests whose query string contains SUBSTR
  --fault-latency MS       added latency (mode latency, or before another fault)
  --fault-retry-after S    Retry-After seconds for 429 (default 1)
  --fault-limit N          fire at most N times
  --fault-seed N           seed of the random fault stream (default 1)
  --bulk-delay-ms MS       time a $export job stays "in progress" (default 0)
  --bulk-file-max N        most resources per $export output file (default 5000)
  --log                    log every request to stderr
  --help`;

function parseArgs(argv) {
  const o = {
    port: 0, altPort: null, seeds: [], validate: true, defaultCount: 50, maxCount: 1000, maxBodyBytes: 64 * 1024 * 1024,
    token: null, smartClient: null, smartJwks: null, smartPublicKeys: [], tokenTtl: 300,
    tlsCert: null, tlsKey: null, tlsClientCa: null, fault: {}, faultSeed: 1, bulkDelayMs: 0, bulkFileMax: 5000, log: false,
  };
  const num = (name, v, min = 0) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`${name} needs a number >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--port': o.port = num(a, next()); break;
      case '--alt-port': o.altPort = num(a, next()); break;
      case '--seed': o.seeds.push(next()); break;
      case '--no-validate': o.validate = false; break;
      case '--default-count': o.defaultCount = num(a, next(), 1); break;
      case '--max-count': o.maxCount = num(a, next(), 1); break;
      case '--max-body-bytes': o.maxBodyBytes = num(a, next(), 1); break;
      case '--token': o.token = next(); break;
      case '--smart-client': o.smartClient = next(); break;
      case '--smart-jwks': o.smartJwks = next(); break;
      case '--smart-public-key': o.smartPublicKeys.push(next()); break;
      case '--token-ttl': o.tokenTtl = num(a, next(), 1); break;
      case '--tls-cert': o.tlsCert = next(); break;
      case '--tls-key': o.tlsKey = next(); break;
      case '--tls-client-ca': o.tlsClientCa = next(); break;
      case '--fault-mode': o.fault.mode = next(); break;
      case '--fault-rate': o.fault.rate = num(a, next()); break;
      case '--fault-every': o.fault.every = num(a, next(), 1); break;
      case '--fault-status': o.fault.status = num(a, next()); break;
      case '--fault-methods': o.fault.methods = next(); break;
      case '--fault-path': o.fault.path = next(); break;
      case '--fault-query': o.fault.query = next(); break;
      case '--fault-latency': o.fault.latency_ms = num(a, next()); break;
      case '--fault-retry-after': o.fault.retry_after = num(a, next()); break;
      case '--fault-limit': o.fault.limit = num(a, next()); break;
      case '--fault-seed': o.faultSeed = num(a, next()); break;
      case '--bulk-delay-ms': o.bulkDelayMs = num(a, next()); break;
      case '--bulk-file-max': o.bulkFileMax = num(a, next(), 1); break;
      case '--log': o.log = true; break;
      case '--help': case '-h': process.stdout.write(USAGE + '\n'); process.exit(0); break;
      default: throw new Error(`unknown option '${a}'`);
    }
  }
  if (!!o.tlsCert !== !!o.tlsKey) throw new Error('--tls-cert and --tls-key go together');
  if (o.tlsClientCa && !o.tlsCert) throw new Error('--tls-client-ca needs --tls-cert/--tls-key');
  return o;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`fhir-server: ${err.message}\n${USAGE}\n`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`fhir-server: ${msg}\n`);

// ---------------------------------------------------------------------------------------------
// State

let auth;
const faults = new Faults(opts.faultSeed);
const quirks = new Quirks();
let bulk = null; // installBulkExport's handle (pre-signed file URLs)
try {
  auth = new SmartAuth({
    clientId: opts.smartClient,
    jwksFile: opts.smartJwks,
    publicKeyFiles: opts.smartPublicKeys,
    tokenTtl: opts.tokenTtl,
    staticToken: opts.token,
  });
  if (Object.keys(opts.fault).length) faults.set([opts.fault]);
} catch (err) {
  process.stderr.write(`fhir-server: ${err.message}\n`);
  process.exit(2);
}
const store = new FhirStore({ validate: opts.validate, defaultCount: opts.defaultCount, maxCount: opts.maxCount, log });
store.quirks = quirks;
let ready = false;

function newStats() {
  return {
    since: new Date().toISOString(),
    fhir: { total: 0, by_method: {}, by_status: {}, by_method_status: {}, by_method_type: {} },
    faults: { injected: 0, by_mode: {} },
    token: { total: 0, by_status: {} },
    files: { total: 0, by_status: {} },
  };
}
let stats = newStats();
let recent = [];
let seq = 0;
const RECENT_MAX = 5000;
const inc = (obj, key) => { obj[key] = (obj[key] ?? 0) + 1; };

function recordFhir(method, relPath, status, fault, started) {
  const s = stats.fhir;
  s.total++;
  const st = String(status);
  inc(s.by_method, method);
  inc(s.by_status, st);
  inc(s.by_method_status, `${method} ${st}`);
  const type = relPath.split('?')[0].split('/').filter(Boolean)[0] ?? '';
  inc(s.by_method_type, `${method} ${type}`);
  if (fault) {
    stats.faults.injected++;
    inc(stats.faults.by_mode, fault.mode);
  }
  recent.push({ seq: ++seq, method, url: relPath, status: st, fault: fault?.mode ?? null, ms: Date.now() - started });
  if (recent.length > RECENT_MAX) recent = recent.slice(-RECENT_MAX);
  if (opts.log) log(`${method} /fhir${relPath} -> ${st}${fault ? ` (fault ${fault.mode})` : ''}`);
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

// truncateAt (bytes): send the headers (with the full Content-Length) and only that much of
// the body, then drop the connection (a download failing midway).
function send(res, status, body, headers = {}, contentType = FHIR_JSON, truncateAt = undefined) {
  if (res.writableEnded || res.destroyed) return;
  const text = body === null || body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const h = { ...headers };
  if (text.length) {
    h['Content-Type'] = contentType;
  }
  h['Content-Length'] = Buffer.byteLength(text);
  res.writeHead(status, h);
  if (truncateAt !== undefined) {
    res.write(Buffer.from(text).subarray(0, truncateAt), () => res.socket?.destroy());
    return;
  }
  res.end(text);
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let over = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) over = true;
      else chunks.push(c);
    });
    req.on('end', () => (over ? reject(Object.assign(new Error('request body too large'), { status: 413 })) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function faultResponse(res, fault, started, method, relPath) {
  recordFhir(method, relPath, fault.mode === 'reset' || fault.mode === 'after-reset' ? 'reset' : fault.status, fault, started);
  if (fault.mode === 'reset' || fault.mode === 'after-reset') {
    res.socket?.destroy();
    return;
  }
  const headers = {};
  if (fault.retry_after !== undefined) {
    headers['Retry-After'] = fault.retry_after_date
      ? new Date(Date.now() + fault.retry_after * 1000).toUTCString()
      : String(Math.round(fault.retry_after));
  }
  send(res, fault.status, errorOutcome(fault.status, `injected fault (${fault.mode} ${fault.status})`), headers);
}

function wantsXml(url, req) {
  const f = url.searchParams.get('_format');
  if (f) return /xml/i.test(f);
  const accept = req.headers.accept ?? '';
  return /xml/i.test(accept) && !/json|\*\/\*/i.test(accept);
}

// ---------------------------------------------------------------------------------------------
// /fhir

async function handleFhir(req, res, url, raw) {
  const started = Date.now();
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const relPath = url.pathname.slice('/fhir'.length) + url.search;
  const pathOnly = url.pathname.slice('/fhir'.length);

  if (!ready) {
    recordFhir(method, relPath, 503, null, started);
    return send(res, 503, errorOutcome(503, 'server is starting'), { 'Retry-After': '1' });
  }

  // Faults first: they stand for the infrastructure in front of the FHIR server.
  const { latency_ms, fault } = faults.decide(method, pathOnly, url.search);
  if (latency_ms > 0) await sleep(latency_ms);
  if (fault && (fault.mode === 'status' || fault.mode === '429' || fault.mode === 'reset')) {
    return faultResponse(res, fault, started, method, relPath);
  }

  const isPublic = method === 'GET' && (pathOnly === '/metadata' || pathOnly === '/.well-known/smart-configuration');
  if (pathOnly === '/.well-known/smart-configuration') {
    if (!auth.smartEnabled) {
      recordFhir(method, relPath, 404, null, started);
      return send(res, 404, errorOutcome(404, 'SMART is not configured on this server'));
    }
    recordFhir(method, relPath, 200, null, started);
    return send(res, 200, auth.configuration(), { 'Cache-Control': 'no-store' }, 'application/json');
  }
  if (!isPublic) {
    const denied = auth.check(req.headers.authorization);
    if (denied) {
      recordFhir(method, relPath, denied.status, null, started);
      return send(res, denied.status, errorOutcome(denied.status, denied.text), {
        'WWW-Authenticate': `Bearer realm="fhir", error="${denied.error}", error_description="${denied.text}"`,
      });
    }
  }
  if (wantsXml(url, req)) {
    recordFhir(method, relPath, 406, null, started);
    return send(res, 406, errorOutcome(406, 'this server speaks JSON only'));
  }

  let body;
  if (raw.length && (method === 'POST' || method === 'PUT' || method === 'PATCH')) {
    const ct = (req.headers['content-type'] ?? '').toLowerCase();
    if (ct.startsWith('application/x-www-form-urlencoded')) {
      body = raw.toString('utf8');
    } else {
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch (err) {
        recordFhir(method, relPath, 400, null, started);
        return send(res, 400, errorOutcome(400, `request body is not valid JSON: ${err.message}`));
      }
    }
  }

  const result = await store.handle({ method, url: relPath, headers: req.headers, body });

  if (fault && (fault.mode === 'after' || fault.mode === 'after-reset')) {
    return faultResponse(res, fault, started, method, relPath);
  }
  recordFhir(method, relPath, result.status, null, started);

  if (result.raw !== undefined) {
    return send(res, result.status, result.raw, result.headers, result.contentType, result.truncateAt);
  }
  const prefer = String(req.headers.prefer ?? '');
  let out = result.body;
  if (result.status < 300 && (method === 'POST' || method === 'PUT' || method === 'PATCH') && out?.resourceType !== 'Bundle') {
    if (/return=minimal/.test(prefer)) out = null;
    else if (/return=OperationOutcome/i.test(prefer)) out = { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', details: { text: 'OK' } }] };
  }
  return send(res, result.status, out, result.headers, result.contentType ?? FHIR_JSON);
}

// ---------------------------------------------------------------------------------------------
// /admin

async function handleAdmin(req, res, url, raw) {
  const p = url.pathname;
  const m = req.method;
  const json = (status, body) => send(res, status, body, {}, 'application/json');
  const parse = () => {
    try {
      return raw.length ? JSON.parse(raw.toString('utf8')) : {};
    } catch (err) {
      throw Object.assign(new Error(`body is not JSON: ${err.message}`), { status: 400 });
    }
  };
  try {
    if (p === '/admin/faults') {
      if (m === 'GET') return json(200, faults.describe());
      if (m === 'DELETE') {
        faults.clear();
        return json(200, faults.describe());
      }
      if (m === 'POST') {
        const b = parse();
        let rules;
        let seed;
        if (Array.isArray(b)) rules = b;
        else if (Array.isArray(b.rules)) ({ rules, seed } = b);
        else rules = [b];
        try {
          faults.set(rules, seed);
        } catch (err) {
          return json(400, { error: err.message });
        }
        return json(200, faults.describe());
      }
    } else if (p === '/admin/quirks') {
      if (m === 'GET') return json(200, quirks.describe());
      if (m === 'DELETE') {
        quirks.set({});
        return json(200, quirks.describe());
      }
      if (m === 'POST') {
        try {
          quirks.set(parse());
        } catch (err) {
          return json(err.status ?? 400, { error: err.message });
        }
        return json(200, quirks.describe());
      }
    } else if (p === '/admin/stats') {
      if (m === 'GET') return json(200, { ...stats, tokens: { ...auth.stats } });
      if (m === 'DELETE') {
        stats = newStats();
        recent = [];
        return json(200, stats);
      }
    } else if (p === '/admin/requests' && m === 'GET') {
      const since = Number(url.searchParams.get('since') ?? 0);
      return json(200, { requests: recent.filter((r) => r.seq > since) });
    } else if (p === '/admin/tokens/expire' && m === 'POST') {
      return json(200, { expired: auth.expireAll() });
    } else if (p === '/admin/data') {
      if (m === 'GET') return json(200, { total: store.repo.count(), by_type: store.repo.countsByType() });
      if (m === 'DELETE') {
        await store.exclusive(() => {
          store.repo.clear();
          store.repo.generation++;
        });
        return json(200, { total: store.repo.count() });
      }
    } else {
      return json(404, { error: `unknown admin endpoint ${p}` });
    }
    return json(405, { error: `${m} not allowed on ${p}` });
  } catch (err) {
    return json(err.status ?? 500, { error: err.message });
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

async function onRequest(req, res) {
  let url;
  try {
    url = new URL(req.url, 'http://127.0.0.1');
  } catch {
    return send(res, 400, errorOutcome(400, 'bad request URL'));
  }
  let raw;
  try {
    raw = await readBody(req, opts.maxBodyBytes);
  } catch (err) {
    return send(res, err.status ?? 400, errorOutcome(err.status ?? 400, err.message), { Connection: 'close' });
  }
  const p = url.pathname;
  try {
    if (p === '/healthz') {
      return send(res, ready ? 200 : 503, { status: ready ? 'ok' : 'starting', resources: store.repo.count() }, {}, 'application/json');
    }
    if (p === '/fhir' || p.startsWith('/fhir/')) return await handleFhir(req, res, url, raw);
    if (p.startsWith('/admin/')) return await handleAdmin(req, res, url, raw);
    if (p.startsWith('/files/') && (req.method === 'GET' || req.method === 'HEAD') && ready) {
      const segs = p.split('/').slice(2).map((x) => decodeURIComponent(x));
      const r = bulk.presigned(segs, url.searchParams, req.headers);
      stats.files.total++;
      inc(stats.files.by_status, r.truncateAt !== undefined ? 'truncated' : String(r.status));
      if (opts.log) log(`${req.method} ${p} -> ${r.status}${r.truncateAt !== undefined ? ' (truncated)' : ''}`);
      return send(res, r.status, r.raw ?? r.body, r.headers, r.contentType ?? FHIR_JSON, r.truncateAt);
    }
    if (p === '/auth/token') {
      stats.token.total++;
      if (req.method !== 'POST') {
        inc(stats.token.by_status, '405');
        return send(res, 405, { error: 'invalid_request', error_description: 'POST only' }, {}, 'application/json');
      }
      // faults with endpoint "token" (lib/faults.mjs): before the request is read, or after
      // the assertion was checked and its jti recorded
      const { latency_ms, fault } = faults.decide('POST', '/auth/token', '', 'token');
      if (latency_ms > 0) await sleep(latency_ms);
      const tokenFault = () => {
        stats.faults.injected++;
        inc(stats.faults.by_mode, fault.mode);
        inc(stats.token.by_status, fault.mode.endsWith('reset') ? 'reset' : String(fault.status));
        if (fault.mode.endsWith('reset')) return void res.socket?.destroy();
        send(res, fault.status, { error: 'temporarily_unavailable', error_description: `injected fault (${fault.mode} ${fault.status})` },
          fault.retry_after !== undefined ? { 'Retry-After': String(Math.round(fault.retry_after)) } : {}, 'application/json');
      };
      if (fault && (fault.mode === 'status' || fault.mode === '429' || fault.mode === 'reset')) return tokenFault();
      const r = auth.tokenRequest(raw.toString('utf8'), req.headers['content-type']);
      if (fault) return tokenFault();
      inc(stats.token.by_status, String(r.status));
      if (opts.log) log(`POST /auth/token -> ${r.status}${r.body.error ? ` ${r.body.error}: ${r.body.error_description}` : ''}`);
      return send(res, r.status, r.body, { 'Cache-Control': 'no-store', Pragma: 'no-cache' }, 'application/json');
    }
    if (p === '/.well-known/smart-configuration' && req.method === 'GET' && auth.smartEnabled) {
      return send(res, 200, auth.configuration(), {}, 'application/json');
    }
    return send(res, 404, errorOutcome(404, `no such endpoint ${p}`));
  } catch (err) {
    log(`internal error: ${err?.stack ?? err}`);
    return send(res, 500, errorOutcome(500, `internal error: ${err?.message ?? err}`));
  }
}

// ---------------------------------------------------------------------------------------------
// Seeding

function listSeedFiles(p) {
  const st = fs.statSync(p);
  if (st.isFile()) return [p];
  const out = [];
  for (const name of fs.readdirSync(p).sort()) {
    const full = path.join(p, name);
    const s = fs.statSync(full);
    if (s.isDirectory()) out.push(...listSeedFiles(full));
    else if (/\.(json|ndjson)$/i.test(name)) out.push(full);
  }
  return out;
}

// Objects without a resourceType (e.g. a bulk export's log.ndjson) are skipped with a warning;
// invalid JSON or an unknown resourceType fails the start.
async function seedFile(file, unresolved) {
  const text = fs.readFileSync(file, 'utf8');
  let n = 0;
  let skipped = 0;
  if (/\.ndjson$/i.test(file)) {
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (!line) continue;
      let r;
      try {
        r = JSON.parse(line);
        if (r?.resourceType === undefined) {
          skipped++;
          continue;
        }
        await store.seedResource(r);
      } catch (err) {
        throw new Error(`${file}:${i + 1}: ${err.message}`);
      }
      n++;
    }
    if (skipped) log(`seed: ${file}: skipped ${skipped} line(s) without resourceType`);
    return n;
  }
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: ${err.message}`);
  }
  if (doc?.resourceType === undefined) {
    log(`seed: ${file}: skipped (no resourceType)`);
    return 0;
  }
  try {
    if (doc.resourceType === 'Bundle' && (doc.type === 'transaction' || doc.type === 'batch')) {
      const r = await store.processTransaction(doc, { seeding: true, unresolved });
      return r.body.entry.length;
    }
    if (doc.resourceType === 'Bundle' && doc.type !== 'document' && doc.type !== 'message') {
      for (const e of doc.entry ?? []) {
        if (!e.resource) continue;
        await store.seedResource(e.resource);
        n++;
      }
      return n;
    }
    await store.seedResource(doc);
    return 1;
  } catch (err) {
    throw new Error(`${file}: ${err.message}`);
  }
}

async function seedAll() {
  const unresolved = [];
  let total = 0;
  for (const dir of opts.seeds) {
    for (const f of listSeedFiles(dir)) total += await seedFile(f, unresolved);
  }
  const fixed = unresolved.length ? await store.resolveSeedReferences(unresolved) : 0;
  return { total, fixed };
}

// ---------------------------------------------------------------------------------------------
// Start

const t0 = process.hrtime.bigint();
const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
let server;
if (opts.tlsCert) {
  server = https.createServer({
    cert: fs.readFileSync(opts.tlsCert),
    key: fs.readFileSync(opts.tlsKey),
    ...(opts.tlsClientCa ? { ca: fs.readFileSync(opts.tlsClientCa), requestCert: true, rejectUnauthorized: true } : {}),
  }, onRequest);
} else {
  server = http.createServer(onRequest);
}
// The second origin (--alt-port): the same handler on another port.
let altServer = null;
if (opts.altPort !== null) {
  altServer = opts.tlsCert
    ? https.createServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) }, onRequest)
    : http.createServer(onRequest);
}
const sockets = new Set();
for (const srv of [server, altServer]) {
  if (!srv) continue;
  srv.keepAliveTimeout = 30_000;
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
}

let stopping = false;
function stop(sig) {
  if (stopping) return;
  stopping = true;
  log(`${sig}: stopping`);
  altServer?.close();
  server.close(() => process.exit(0));
  for (const s of sockets) s.destroy();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

for (const srv of [server, altServer]) {
  srv?.on('error', (err) => {
    log(`listen failed: ${err.message}`);
    process.exit(1);
  });
}
const listen = (srv, port) => new Promise((resolve) => srv.listen(port, '127.0.0.1', resolve));
(async () => {
  await listen(server, opts.port);
  if (altServer) await listen(altServer, opts.altPort);
  const port = server.address().port;
  const scheme = opts.tlsCert ? 'https' : 'http';
  process.stdout.write(`${port}\n`);
  if (altServer) {
    process.stdout.write(`${altServer.address().port}\n`);
    quirks.altBase = `${scheme}://127.0.0.1:${altServer.address().port}`;
  }
  store.baseUrl = `${scheme}://127.0.0.1:${port}/fhir`;
  auth.tokenEndpoint = `${scheme}://127.0.0.1:${port}/auth/token`;
  if (auth.smartEnabled) store.smart = { tokenEndpoint: auth.tokenEndpoint };
  bulk = installBulkExport(store, { delayMs: opts.bulkDelayMs, fileMax: opts.bulkFileMax, requiresAccessToken: () => auth.authRequired });
  try {
    loadDefinitions();
    const tDefs = ms();
    const { total, fixed } = await store.exclusive(() => seedAll());
    ready = true;
    log(`ready on ${store.baseUrl} (definitions ${tDefs.toFixed(0)} ms, seeded ${total} resources` +
      `${fixed ? `, ${fixed} conditional references resolved after seeding` : ''} in ${(ms() - tDefs).toFixed(0)} ms, ` +
      `validation ${opts.validate ? 'on' : 'off'}, auth ${auth.smartEnabled ? 'SMART' : opts.token ? 'token' : 'none'})`);
  } catch (err) {
    log(`startup failed: ${err.message}`);
    process.exit(1);
  }
})();
