// Imported first by server.mjs: refuses to start on a Node.js that the pinned packages do
// not support (exit 1 with the reason), before they are loaded.
import { explain } from './engines.mjs';

const why = explain(process.version);
if (why) {
  console.error(`fhir-server: ${why}; run scripts/bootstrap (it installs a Node.js that does)`);
  process.exit(1);
}
