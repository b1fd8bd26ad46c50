// A webhook receiver on 127.0.0.1 for the notification tests: every POST's body is written to
// OUTDIR/hook-N.json (with its Authorization header in hook-N.auth); the first FAIL requests
// are answered 503 (so the sender's retry is seen), the others 204.
// usage: node webhook.mjs OUTDIR FAIL  -> prints "listening PORT"
import fs from "node:fs";
import http from "node:http";
import path from "node:path";

const [out, failArg] = process.argv.slice(2);
let fail = Number(failArg || 0), n = 0, seen = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    seen += 1;
    fs.appendFileSync(path.join(out, "requests.log"), `${seen} ${req.method} ${req.url}\n`);
    if (fail > 0) {
      fail -= 1;
      res.writeHead(503, { "Content-Type": "text/plain" });
      res.end("try later");
      return;
    }
    n += 1;
    fs.writeFileSync(path.join(out, `hook-${n}.json`), Buffer.concat(chunks));
    fs.writeFileSync(path.join(out, `hook-${n}.auth`), req.headers.authorization || "");
    res.writeHead(204);
    res.end();
  });
});
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
