/* poll_source — the discovery strategies of one source (config_source), each on the daemon's loop:
 *
 *   files:  every *.json (resource or Bundle) / *.ndjson / *.jsonl file in the drop folder,
 *           oldest name first, is stored in one transaction, then moved to done/ (or, when
 *           it cannot be read, to failed/ with a FILE.error note). A crash between the commit
 *           and the move re-reads the file next time: ingest is idempotent.
 *   search: one population search per type, `T?_lastUpdated=ge<cursor>&_count=N` (all
 *           pages), each page stored in one transaction; the type's cursor (largest
 *           meta.lastUpdated seen) is written only after the whole search is stored.
 *   group:  `Group/<id>` members, then per member and type `T?patient=<id>` (Patient: `_id`)
 *           with `_lastUpdated=ge<cursor>`; members never seen before are read in full. The
 *           cursor is written after every member's data is stored.
 *   bulk:   `Group/<id>/$export?_type=...&_since=<cursor>` kick-off (Prefer: respond-async),
 *           status polling honouring Retry-After, manifest, NDJSON downloads streamed into
 *           the store as they arrive, job DELETEd after; all asynchronous on the loop with the
 *           source's auth (bearer, Basic, SMART); cursor = the manifest's transactionTime,
 *           written after every file is stored.
 *
 * A poll never overlaps itself; the next one is scheduled interval_s after the previous
 * ended. Counters go to the daemon's metrics. */
#ifndef POLL_SOURCE_H
#define POLL_SOURCE_H

/* Byte caps of a drop folder's files and of a bulk kick-off URL. */
#define POLL_DROP_LINE_MAX (256u << 20)   /* one resource of an .ndjson drop */
#define POLL_DROP_BUNDLE_MAX (512u << 20) /* a .json Bundle drop */
#define POLL_EXPORT_URL_MAX 8192u         /* Group/{id}/$export?_type=...&_since=... */

#include <stdbool.h>

#include "config.h"
#include "daemon.h"
#include "fhir_client.h"
#include "fhir_error.h"

/* Creates the source from cfg (copied) on the daemon's loop; the first poll starts at once.
 * Caller frees with poll_source_free(). NULL with err (bad auth secret, ...). */
poll_source *poll_source_new(daemon *d, const config_source *cfg, fhir_error *err);
/* Drops any in-flight work (its cursors were not advanced) and frees. */
void poll_source_free(poll_source *p);

const char *poll_source_name(const poll_source *p);
bool poll_source_busy(const poll_source *p);
/* Has a poll of this source ever completed successfully in this process? */
bool poll_source_done_once(const poll_source *p);
/* No new polls (shutdown). */
void poll_source_pause(poll_source *p);
/* Starts a poll now unless one is running. */
void poll_source_kick(poll_source *p);

/* The fhir_client configuration of a source (strings borrowed from cfg; also used by the
 * EHR write-back, writeback.h). */
void poll_source_client_config(const config_source *cfg, fhir_client_config *cc);

#endif
