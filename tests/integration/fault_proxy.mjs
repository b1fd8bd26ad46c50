// A faulting HTTP proxy for tests, on loopback only (node's http module, nothing else): sits
// between a referring site's cartgate and a center's cartgate and, by a seeded schedule (one
// draw per request, in arrival order), answers some requests itself or breaks their connection:
//
//   502           answered 502 Bad Gateway, nothing forwarded
//   503           answered 503 Service Unavailable (Retry-After: 1), nothing forwarded
//   reset_before  the connection reset as soon as the request's headers are in (mid-request:
//                 its body may still be on the way), nothing forwarded
//   reset_after   the whole request forwarded and the center's whole answer read, then the
//                 connection reset instead of the answer: the center did the work (for a POST
//                 of a Bundle: stored it) and the site never learns it
//   pass          forwarded, the answer passed back
//   down          (not drawn) the center gave no answer (not listening, or killed while the
//                 request was in it): answered 502
//
//   node fault_proxy.mjs --upstream http://127.0.0.1:PORT --seed N --log FILE
//        [--port P] [--post-rate 0.4] [--rate 0.15] [--path-prefix /fhir]
//
// --post-rate is the share of faulted POSTs (the Bundles), --rate that of every other request
// (token requests, the site's lookups by identifier, Task reads); a fault's kind is drawn
// evenly among the four. Only requests under --path-prefix are faulted. The port listened on
// (random when 0) is the first line of stdout. Every request is one JSON line in the log:
// {"n":1,"method":"POST","path":"/fhir","fault":"reset_after","upstream":200}
// (upstream: the center's status, 0 when it was not asked or did not answer).
import http from 'node:http';
import fs from 'node:fs';

const args = {port: '0', seed: '1', 'post-rate': '0.4', rate: '0.15', 'path-prefix': '/fhir'};
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in args) && k !== 'upstream' && k !== 'log') {
    console.error(`fault_proxy: unknown option ${process.argv[i]}`);
    process.exit(2);
  }
  args[k] = process.argv[i + 1];
}
if (!args.upstream || !args.log) {
  console.error('fault_proxy: --upstream URL and --log FILE are required');
  process.exit(2);
}
const up = new URL(args.upstream);
if (up.hostname !== '127.0.0.1' && up.hostname !== 'localhost') {
  console.error('fault_proxy: loopback upstreams only');
  process.exit(2);
}
const postRate = Number(args['post-rate']);
const rate = Number(args.rate);
const prefix = args['path-prefix'];

// mulberry32: a small seeded generator, so a failing run can be replayed with its seed
let state = Number(args.seed) >>> 0;
function rand() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const KINDS = ['502', '503', 'reset_before', 'reset_after'];
function draw(method, path) {
  const p = rand();
  const k = rand();
  if (!path.startsWith(prefix)) return 'pass';
  const r = method === 'POST' && (path === prefix || path === prefix + '/') ? postRate : rate;
  return p < r ? KINDS[Math.min(KINDS.length - 1, Math.floor(k * KINDS.length))] : 'pass';
}

const log = fs.openSync(args.log, 'a');
let n = 0;
function record(o) {
  fs.writeSync(log, JSON.stringify(o) + '\n');
}

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'expect', 'upgrade',
  'proxy-connection', 'te', 'trailer', 'content-length', 'host']);

function reply(res, status, text, extra) {
  const body = Buffer.from(text);
  res.writeHead(status, {'Content-Type': 'text/plain', 'Content-Length': body.length, ...extra});
  res.end(body);
}

const server = http.createServer((req, res) => {
  const id = ++n;
  const fault = draw(req.method, req.url);
  const rec = {n: id, method: req.method, path: req.url.split('?')[0], fault, upstream: 0};
  if (fault === 'reset_before') {
    record(rec);
    req.socket.resetAndDestroy();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('error', () => {});
  req.on('end', () => {
    if (fault === '502' || fault === '503') {
      record(rec);
      reply(res, Number(fault), `fault_proxy: ${fault}\n`, fault === '503' ? {'Retry-After': '1'} : {});
      return;
    }
    const body = Buffer.concat(chunks);
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k)) headers[k] = v;
    headers['content-length'] = body.length;
    headers.host = up.host;
    const ureq = http.request({host: up.hostname, port: up.port, method: req.method, path: req.url,
      headers, agent: false});
    ureq.on('error', () => {
      rec.fault = fault === 'pass' ? 'down' : fault;
      record(rec);
      if (fault === 'reset_after') req.socket.resetAndDestroy();
      else reply(res, 502, 'fault_proxy: the center is not answering\n');
    });
    ureq.on('response', (ures) => {
      const uchunks = [];
      ures.on('data', (c) => uchunks.push(c));
      ures.on('error', () => {
        rec.upstream = 0;
        record(rec);
        req.socket.resetAndDestroy();
      });
      ures.on('end', () => {
        rec.upstream = ures.statusCode;
        record(rec);
        if (fault === 'reset_after') {
          req.socket.resetAndDestroy();
          return;
        }
        const ubody = Buffer.concat(uchunks);
        const h = {};
        for (const [k, v] of Object.entries(ures.headers)) if (!HOP.has(k)) h[k] = v;
        h['content-length'] = ubody.length;
        res.writeHead(ures.statusCode, h);
        res.end(ubody);
      });
    });
    ureq.end(body);
  });
});
server.on('clientError', (err, socket) => socket.destroy());
server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
