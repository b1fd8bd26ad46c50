/* poll_source — one configured source (config_source) polled on an event loop, by one of four
 * interchangeable strategies (poll_<kind>.c behind the table of poll_impl.h):
 *
 *   files:  every *.json (resource or Bundle) / *.ndjson / *.jsonl file in the drop folder,
 *           oldest name first, is stored in one transaction, then moved to done/ (or, when
 *           it cannot be read, to failed/ with a FILE.error note). A crash between the commit
 *           and the move re-reads the file next time: ingest is idempotent.
 *   search: one population search per type, `T?_lastUpdated=ge<cursor>&_count=N` (all
 *           pages); consecutive pages of a poll are stored in one ingest group
 *           (store_group_begin: one transaction, committed at POLL_GROUP_RESOURCES,
 *           POLL_GROUP_IDLE_MS after a page when no next page came, at any other use of the
 *           store, at the poll's end); the type's cursor (largest meta.lastUpdated seen) is
 *           written only after the whole search is stored, so a crash refetches the pages of
 *           an uncommitted group. A search short of Bundle.total, a page that fails after
 *           retries or a next link refused (another origin that is not trusted) fails the
 *           poll.
 *   group:  `Group/<id>` members, then per member and type `T?patient=<id>` (Patient: `_id`)
 *           with `_lastUpdated=ge<cursor>`; members never seen before are read in full. The
 *           cursor is written after every member's data is stored.
 *   bulk:   `Group/<id>/$export?_type=...&_since=<cursor>` kick-off (Prefer: respond-async),
 *           status polling honouring Retry-After, manifest, NDJSON downloads streamed into
 *           the store as they arrive (download_concurrency at once, each file retried), the
 *           manifest's error[] (failing the types concerned) and deleted[] (removed from the
 *           cache), job DELETEd after; all asynchronous on the loop with the source's auth
 *           (bearer, Basic, SMART; none for files with requiresAccessToken false); one job at
 *           a time (its status URL is kept across restarts and resumed; a kick-off refused
 *           because a job runs is retried per Retry-After); per-type cursors = the
 *           manifest's transactionTime, written for the types read completely.
 *
 * A source knows only its environment (poll_env): the loop, the store (cursors, and the
 * transactions its ingest runs in), and callbacks for ingest, removal, the end of a poll and
 * metrics. A poll never overlaps itself; the next one is scheduled interval_s after the
 * previous ended (after a failed one: retry_s, doubled per failure in a row, at most
 * interval_s). Only a poll that read everything moves cursors and releases the patients whose
 * data it (or an earlier failed poll of the source) brought for screening. Every full_refresh_s
 * a poll reads everything (no _since / _lastUpdated). A server that sends data older than the
 * poll's _since / _lastUpdated is said once per source (log source.since_ignored, metric);
 * unchanged resources are recognised against the cache, so their patients are not
 * re-screened. */
#ifndef POLL_SOURCE_H
#define POLL_SOURCE_H

/* Byte caps of a drop folder's files and of a bulk kick-off URL. */
#define POLL_DROP_LINE_MAX (256u << 20)   /* one resource of an .ndjson drop */
#define POLL_DROP_BUNDLE_MAX (512u << 20) /* a .json Bundle drop */
#define POLL_EXPORT_URL_MAX 8192u         /* Group/{id}/$export?_type=...&_since=... */
/* Search and group pages: an ingest group commits once it holds this many resources ... */
#define POLL_GROUP_RESOURCES 5000u
/* ... or when it is still open this long (ms) after a page was stored (the write lock is not
 * kept from other processes while the poll waits for the server). */
#define POLL_GROUP_IDLE_MS 100

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "store.h"

struct event_base;
typedef struct poll_source poll_source;

/* How a poll ended (passed to poll_env.done). A poll is ok only when it read everything it
 * asked for: then its cursors moved and the patients it brought were released for screening
 * (a failed poll keeps them held, store_held_mark). */
/* Why a poll failed: one of ADMIN_POLL_FAIL_REASONS (admin.h), the first failure of the poll
 * deciding (metrics cartgate_poll_failures_total{source,reason}): could not connect, the
 * connection broke, a timeout, TLS, credentials refused (401/403, no SMART token), another 4xx,
 * a 5xx, a body that does not parse, data the server left out (a search short of
 * Bundle.total, the page cap, a bulk type failed in the manifest's error[]), storing what
 * arrived failed (ingest), the store (cursors, held patients), a drop folder that cannot be
 * read, anything else. */
typedef struct poll_result {
    bool ok;
    const char *fail_reason; /* !ok: one of ADMIN_POLL_FAIL_REASONS (static) */
    size_t changed;        /* resources stored new or changed */
    size_t unchanged;      /* resources seen again without change */
    size_t unresolved;     /* resources whose patient reference resolved to no patient */
    size_t deleted;        /* cached resources removed (deleted at the source) */
    size_t outcome_issues; /* OperationOutcome issues inside searchset pages */
    size_t bulk_issues;    /* issues in a bulk manifest's error[] files */
    bool since_ignored;    /* the server sent data older than the poll's _since/_lastUpdated */
} poll_result;

/* What a source may use; everything borrowed for the source's life. */
typedef struct poll_env {
    struct event_base *base;
    store *st;
    void *ud; /* first argument of every callback */
    /* Stores one resource (a Bundle is unpacked) inside the transaction the source opened;
     * counts it in *changed or *unchanged, and in *unresolved when its patient reference
     * (subject, patient, ...) names no patient: a urn:uuid that is no Patient entry of its
     * Bundle (stored without a patient, never screened); a changed resource's patient is held
     * for the source (store_held_mark) until a poll of it completes. 0, or -1 with err. */
    int (*ingest)(void *ud, const char *source, const fhir_node *res, size_t *changed,
                  size_t *unchanged, size_t *unresolved, fhir_error *err);
    /* Removes one cached resource deleted at the source (inside the source's transaction);
     * its patient is held for re-screening like a change. *found: it was cached. 0, or -1. */
    int (*remove)(void *ud, const char *source, const char *type, const char *id, bool *found,
                  fhir_error *err);
    /* A poll ended (its data and cursors committed, or not when !r->ok). Called last: the
     * source may be freed only from a later loop turn. */
    void (*done)(void *ud, poll_source *src, const poll_result *r);
    /* Metrics: the final HTTP status of one exchange (0 = no response). May be NULL. */
    void (*count_status)(void *ud, const char *source, long status);
} poll_env;

/* Creates the source from cfg (borrowed until poll_source_free) on env->base; the first poll
 * starts at once. Caller frees with poll_source_free(). NULL with err (bad auth secret,
 * unusable drop folder, ...). */
poll_source *poll_source_new(const poll_env *env, const config_source *cfg, fhir_error *err);
/* Drops any in-flight work (its cursors were not advanced) and frees. */
void poll_source_free(poll_source *p);

/* Borrowed from the config. */
const char *poll_source_name(const poll_source *p);
bool poll_source_busy(const poll_source *p);
/* Has a poll of this source ever completed successfully in this process? */
bool poll_source_done_once(const poll_source *p);
/* No new polls (shutdown). */
void poll_source_pause(poll_source *p);
/* Starts a poll now unless one is running. */
void poll_source_kick(poll_source *p);

#endif
