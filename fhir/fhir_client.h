/* fhir_client — asynchronous FHIR R4 REST client for one endpoint, on a libevent loop
 * driving curl multi (the curl "multi-event" pattern: one timer for curl's timeout,
 * one event per socket, completions drained from curl_multi_info_read).
 *
 * Per endpoint: base URL, format, auth (fhir_auth.h: bearer, Basic, SMART Backend
 * Services), connect and total timeouts, max concurrent requests, request rate, max
 * response bytes (enforced while the body arrives), CA file and optional client
 * certificate. TLS peer and host verification are always on. Connections are kept alive
 * and reused.
 *
 * Every operation retries transient failures (network errors, 408, 429, 5xx) with capped
 * exponential backoff and full jitter, honouring Retry-After (fhir_retry.h); permanent
 * failures (other 4xx, TLS verification, body over the cap) are never retried. A plain
 * create (POST without If-None-Exist) is only retried when it provably never reached the
 * server (connection refused) or was throttled (429). With SMART auth a 401 is retried
 * exactly once with a fresh token. Every delay chosen is recorded in the stats so tests
 * assert on the schedule, not on wall time.
 *
 * Searches follow Bundle.link[next] verbatim until it is absent, up to a page cap (hitting
 * it is an error, never a silent truncation), refuse a next link to another origin unless
 * it is configured as trusted (the token must not leak; the refusal names the origin), and
 * hand each page to a callback while JSON pages are parsed incrementally as bytes arrive.
 * A search whose last page has no next link while fewer matches arrived than the last
 * Bundle.total announced fails ("incomplete"): a truncated result is never a success.
 * OperationOutcome entries inside a searchset (search.mode "outcome") are counted, logged
 * once per distinct text (severity, code, text; never the query) and handed to the caller
 * in the result (warnings).
 *
 * Every result carries selected response headers (Content-Location, Retry-After,
 * X-Progress, Expires, Content-Type; Location and ETag on success), so the async pattern of
 * Bulk Data (202 + Content-Location, status polling) runs on this client too, and a streaming
 * GET hands a large body (bulk NDJSON output files) to a chunk callback as it arrives.
 *
 * Time: token expiry and Retry-After dates use fhir_clock (injectable); timers (retry
 * delays, rate pacing, curl timeouts) run on the event loop's real monotonic time.
 *
 * Threading: single-threaded; everything runs on the client's event_base. Callbacks must
 * not free the client. */
#ifndef FHIR_CLIENT_H
#define FHIR_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_arena.h"
#include "fhir_auth.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "fhir_retry.h"

/* Byte and page caps. */
#define FHIR_CLIENT_DEFAULT_MAX_BYTES (64u * 1024u * 1024u) /* a response body */
#define FHIR_CLIENT_DEFAULT_MAX_PAGES 1000u                 /* pages of one search */
/* libcurl's receive buffer for a search page or a streamed download (bytes, per transfer; its
 * default, 16 KiB, made one recv, one poll and one write callback per 16 KiB: a 2,000-patient
 * search poll read its 30 MB in 2,669 recvs, with this 203) */
#define FHIR_CLIENT_RECV_BUFFER (256u * 1024u)
#define FHIR_CLIENT_ERROR_BODY_MAX (64u * 1024u) /* of an error body, kept for the message */
#define FHIR_CLIENT_AUTH_BODY_MAX (256u * 1024u) /* a token or discovery answer */

struct event_base;

typedef enum fhir_format {
    FHIR_FORMAT_JSON = 0,
    FHIR_FORMAT_XML,
} fhir_format;

/* Jitter source: returns 64 random bits. */
typedef uint64_t (*fhir_client_random_fn)(void *ud);

/* Endpoint configuration. Strings are copied by fhir_client_new(). */
typedef struct fhir_client_config {
    const char *name;             /* for logs; NULL = "fhir" */
    const char *base_url;         /* http(s)://host[:port]/path — required */
    fhir_format format;           /* body format sent and requested */
    fhir_auth_config auth;
    long connect_timeout_ms;      /* 0 = 10 s */
    long total_timeout_ms;        /* per attempt; 0 = 60 s */
    unsigned max_concurrent;      /* requests in flight; 0 = 4 */
    double rate_per_s;            /* request starts per second; 0 = unlimited */
    size_t max_response_bytes;    /* per response body; 0 = FHIR_CLIENT_DEFAULT_MAX_BYTES */
    unsigned max_pages;           /* search page cap; 0 = FHIR_CLIENT_DEFAULT_MAX_PAGES */
    const char *ca_file;          /* PEM CA bundle; NULL = system store */
    const char *cert_file;        /* client certificate (mTLS), PEM */
    const char *key_file;         /* its private key, PEM */
    fhir_retry_policy retry;      /* zero fields = defaults (fhir_retry.h) */
    fhir_client_random_fn random; /* NULL = internal PRNG seeded from OpenSSL */
    void *random_ud;
    /* Other origins ("https://host[:port]") this endpoint's auth may be sent to: search next
     * links and absolute URLs (bulk files) on them are followed like the base's own. */
    const char *const *trusted_origins;
    size_t n_trusted_origins;
} fhir_client_config;

#define FHIR_CLIENT_SCHEDULE_MAX 64

typedef struct fhir_client_stats {
    unsigned operations;     /* logical operations finished (a whole search counts once) */
    unsigned attempts;       /* HTTP requests sent for them (token/discovery excluded) */
    unsigned retries;        /* re-sends after a transient failure */
    unsigned auth_retries;   /* re-sends after a 401 with a fresh token */
    unsigned token_fetches;  /* SMART token requests made */
    unsigned pages;          /* search pages received */
    size_t resources;        /* Bundle entries with a resource, over all pages */
    uint64_t bytes_in;       /* response body bytes received */
    unsigned outcome_issues; /* OperationOutcome issues inside searchset pages */
    unsigned schedule_len;   /* retry delays chosen (may exceed FHIR_CLIENT_SCHEDULE_MAX) */
    int64_t schedule_ms[FHIR_CLIENT_SCHEDULE_MAX];  /* first delays chosen, in order */
    long schedule_status[FHIR_CLIENT_SCHEDULE_MAX]; /* HTTP status behind each; 0 = network */
} fhir_client_stats;

/* Why an operation failed, as a small fixed set (for metrics by reason). */
typedef enum fhir_client_fail {
    FHIR_FAIL_NONE = 0,
    FHIR_FAIL_CONNECT,    /* could not resolve or connect */
    FHIR_FAIL_NETWORK,    /* connection reset, nothing or part of a response received */
    FHIR_FAIL_TIMEOUT,
    FHIR_FAIL_TLS,        /* handshake or certificate verification */
    FHIR_FAIL_AUTH,       /* 401/403, or the SMART token could not be had */
    FHIR_FAIL_HTTP_4XX,
    FHIR_FAIL_HTTP_5XX,
    FHIR_FAIL_PARSE,      /* a body that does not parse, or a search page that is no Bundle */
    FHIR_FAIL_INCOMPLETE, /* a search short of Bundle.total, or stopped at the page cap */
    FHIR_FAIL_STOPPED,    /* the caller's page or chunk callback stopped it */
    FHIR_FAIL_OTHER,      /* anything else (a body over the byte cap, a refused next link ...) */
} fhir_client_fail;

/* "connect", "network", "timeout", "tls", "auth", "http_4xx", "http_5xx", "parse",
 * "incomplete", "stopped", "other" ("none" for FHIR_FAIL_NONE); static strings. */
const char *fhir_client_fail_name(fhir_client_fail f);

typedef struct fhir_client_result {
    long status;          /* final HTTP status; 0 when no response was received */
    fhir_node *body;      /* parsed response body (in arena); NULL when empty */
    fhir_arena *arena;    /* owns body */
    char *location;       /* Location header or NULL */
    char *etag;           /* ETag header or NULL */
    fhir_error err;       /* err.msg empty on success; err.code = status */
    fhir_client_fail fail; /* why it failed (FHIR_FAIL_NONE on success) */
    fhir_client_stats stats; /* this operation only */
    /* Selected response headers of the final response, on every result (also errors; the
     * Location/ETag above stay success-only). NULL when absent; values longer than
     * FHIR_CLIENT_HEADER_MAX bytes are dropped. Owned by the result. */
    char *content_location; /* Content-Location (bulk kick-off: the status URL) */
    char *retry_after;      /* Retry-After, as sent (seconds or HTTP-date) */
    char *x_progress;       /* X-Progress (bulk status) */
    char *expires;          /* Expires */
    char *content_type;     /* Content-Type */
    /* Searches: the distinct OperationOutcome issues found inside searchset pages, one per
     * line ("warning not-supported: text"), at most FHIR_CLIENT_WARNINGS_MAX bytes (the count
     * is stats.outcome_issues). NULL when there were none. Owned by the result. */
    char *warnings;
} fhir_client_result;

#define FHIR_CLIENT_HEADER_MAX 2048
#define FHIR_CLIENT_WARNINGS_MAX 4096

/* Borrowed from r: the value of one captured response header by name (case-insensitive:
 * Location, ETag, Content-Location, Retry-After, X-Progress, Expires, Content-Type), or
 * NULL when absent or not captured (Location/ETag: success results only, as above). */
const char *fhir_client_result_header(const fhir_client_result *r, const char *name);

/* Frees a result handed to a done callback or returned by a _sync call (NULL-safe). */
void fhir_client_result_free(fhir_client_result *r);

/* Done callback: the callback owns res and frees it with fhir_client_result_free(). */
typedef void (*fhir_client_done_cb)(void *ud, fhir_client_result *res);

/* Page callback: bundle is one searchset page, borrowed for the duration of the call.
 * page_no counts from 1. Return 0 to continue, non-zero to stop (the search then ends
 * with an error "stopped by caller"). */
typedef int (*fhir_client_page_cb)(void *ud, const fhir_node *bundle, unsigned page_no);

typedef struct fhir_client fhir_client;

/* Creates a client for one endpoint on base (borrowed; must outlive the client), or on
 * an event_base of its own when base is NULL. Loads auth secrets now. Caller frees with
 * fhir_client_free(); pending operations are dropped without their callbacks. */
fhir_client *fhir_client_new(struct event_base *base, const fhir_client_config *cfg,
                             fhir_error *err);
void fhir_client_free(fhir_client *c);

/* Borrowed: the event_base the client runs on. */
struct event_base *fhir_client_base(const fhir_client *c);
/* Borrowed: cumulative statistics since creation. */
const fhir_client_stats *fhir_client_stats_get(const fhir_client *c);
/* Borrowed: the configured base URL (no trailing slash). */
const char *fhir_client_base_url(const fhir_client *c);

/* One request. path is relative to the base URL ("Patient/1", "Patient?name=x",
 * "metadata", "" for the base itself) or an absolute URL on the base's origin.
 * Body: either text (sent as is, in the endpoint's format) or a resource tree (serialised
 * in the endpoint's format); both borrowed only during the submitting call. */
typedef struct fhir_client_request {
    const char *method;          /* "GET", "POST", "PUT", "DELETE"; NULL = GET */
    const char *path;
    const char *body;
    size_t body_len;
    const fhir_node *resource;
    const char *if_none_exist;   /* conditional create query ("identifier=sys|val") */
    const char *if_match;        /* version-aware update (W/"3") */
    const char *prefer;          /* e.g. "return=representation" */
    bool not_idempotent;         /* retry only when surely not processed (see top) */
    const char *accept;          /* Accept header; NULL = the endpoint's format */
    const char *content_type;    /* Content-Type of body; NULL = the endpoint's format (a
                                    form-encoded OAuth token request sets its own) */
    bool accept_202;             /* async pattern (bulk kick-off/status): a 202 is a normal
                                    answer, never retried; its body is parsed when it is
                                    JSON and otherwise ignored (res->body NULL) */
    long timeout_ms;             /* per attempt; 0 = the endpoint's total_timeout_ms */
} fhir_client_request;

/* Asynchronous operations: 0 when queued (cb is then called exactly once, from the event
 * loop), or -1 with err set and cb never called. */
int fhir_client_send(fhir_client *c, const fhir_client_request *req, fhir_client_done_cb cb,
                     void *ud, fhir_error *err);
/* GET [base]/type/id */
int fhir_client_read(fhir_client *c, const char *type, const char *id, fhir_client_done_cb cb,
                     void *ud, fhir_error *err);
/* POST [base]/type (with If-None-Exist when if_none_exist is non-NULL: conditional create,
 * safe to retry; without it the create is not idempotent). */
int fhir_client_create(fhir_client *c, const char *type, const fhir_node *resource,
                       const char *if_none_exist, fhir_client_done_cb cb, void *ud,
                       fhir_error *err);
/* PUT [base]/type/id (if_match optional). */
int fhir_client_update(fhir_client *c, const char *type, const char *id,
                       const fhir_node *resource, const char *if_match,
                       fhir_client_done_cb cb, void *ud, fhir_error *err);
/* POST [base] with a transaction or batch Bundle. Retried on transient failures: make the
 * entries conditional (ifNoneExist) so a re-send cannot duplicate. */
int fhir_client_transaction(fhir_client *c, const fhir_node *bundle, fhir_client_done_cb cb,
                            void *ud, fhir_error *err);
/* GET [base]/metadata */
int fhir_client_metadata(fhir_client *c, fhir_client_done_cb cb, void *ud, fhir_error *err);
/* Search: query is "Type?params" (or any relative/absolute first-page URL). Pages go to
 * page_cb, in order; done is called once at the end with the totals (res->body is NULL).
 * The next page is requested before page_cb has the current one (one page ahead, so the
 * server makes it meanwhile); a page_cb that stops the search drops that request. */
int fhir_client_search(fhir_client *c, const char *query, fhir_client_page_cb page_cb,
                       fhir_client_done_cb done, void *ud, fhir_error *err);

/* Streaming GET: the body of a 2xx response goes to chunk as it arrives (nothing is kept),
 * e.g. into fhir_ndjson_feed(). Return 0 to continue, non-zero to abort (the operation then
 * ends with the error "stopped by the chunk callback"). data is borrowed for the call. */
typedef int (*fhir_client_chunk_cb)(void *ud, const char *data, size_t len);

typedef struct fhir_client_stream_request {
    const char *url;      /* absolute on the base's or a trusted origin (bulk output files),
                             or relative */
    const char *accept;   /* NULL = "application/fhir+ndjson" */
    size_t max_bytes;     /* body cap, enforced while it arrives; 0 = max_response_bytes */
    long timeout_ms;      /* per attempt; 0 = the endpoint's total_timeout_ms */
    bool no_auth;         /* send no Authorization and, off the base's origin, no client
                             certificate (a Bulk Data manifest's requiresAccessToken:
                             false, e.g. pre-signed storage URLs); the URL may then be on
                             any http(s) origin, but not http when the base is https */
} fhir_client_stream_request;

/* Streaming GET with the endpoint's auth unless no_auth (SMART tokens fetched, refreshed,
 * one retry after a 401). Transient failures are retried only while no body byte has reached
 * chunk; after that a failure ends the operation (the caller restarts from scratch if it
 * wants). Error statuses are not streamed: their body makes the message. done is called once;
 * on success res->body is NULL and res->stats.bytes_in counts the bytes streamed. 0 when
 * queued, or -1 with err set (bad URL, another origin named in the message) and no callback. */
int fhir_client_get_stream(fhir_client *c, const fhir_client_stream_request *req,
                           fhir_client_chunk_cb chunk, fhir_client_done_cb done, void *ud,
                           fhir_error *err);

/* Synchronous wrappers: run the event loop until the operation ends. Never NULL; check
 * res->err.msg[0]. Caller frees with fhir_client_result_free(). Must not be called from
 * inside a callback of the same client. */
fhir_client_result *fhir_client_send_sync(fhir_client *c, const fhir_client_request *req);
fhir_client_result *fhir_client_search_sync(fhir_client *c, const char *query,
                                            fhir_client_page_cb page_cb, void *ud);

/* The origin of an absolute http(s) URL, normalised ("scheme://host:port", lower case,
 * default port filled in), written into out; NULL when url is not an absolute http(s) URL or
 * out is too small. For messages and origin comparisons. */
const char *fhir_client_url_origin(const char *url, char *out, size_t outlen);

/* Text of an OperationOutcome's issues ("error: details; ..."), written into out.
 * Returns out; empty string when oo is not an OperationOutcome. */
const char *fhir_client_outcome_text(const fhir_node *oo, char *out, size_t outlen);

#endif
