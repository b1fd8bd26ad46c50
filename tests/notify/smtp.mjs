// A real SMTP server on 127.0.0.1 for the notification tests (smtp-server): STARTTLS with the
// certificate and key given (a throwaway one made by openssl in the test), TLS required before
// MAIL FROM (a client that will not upgrade gets nothing through), no AUTH. Every message
// received is written to OUTDIR/mail-N.eml with its envelope in OUTDIR/mail-N.json.
// usage: node smtp.mjs CERT KEY OUTDIR  -> prints "listening PORT"
import fs from "node:fs";
import path from "node:path";
import { SMTPServer } from "smtp-server";

const [cert, key, out] = process.argv.slice(2);
let n = 0;
const server = new SMTPServer({
  key: fs.readFileSync(key),
  cert: fs.readFileSync(cert),
  authOptional: true,
  disabledCommands: ["AUTH"],
  logger: false,
  onMailFrom(address, session, cb) {
    if (!session.secure) return cb(Object.assign(new Error("STARTTLS first"), { responseCode: 530 }));
    cb();
  },
  onData(stream, session, cb) {
    const chunks = [];
    stream.on("data", (c) => chunks.push(c));
    stream.on("end", () => {
      n += 1;
      const base = path.join(out, `mail-${n}`);
      fs.writeFileSync(base + ".eml", Buffer.concat(chunks));
      fs.writeFileSync(base + ".json", JSON.stringify({
        from: session.envelope.mailFrom && session.envelope.mailFrom.address,
        to: session.envelope.rcptTo.map((r) => r.address),
        secure: session.secure,
      }));
      cb();
    });
  },
});
server.on("error", (e) => { console.error("smtp error", e.message); });
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.server.address().port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
