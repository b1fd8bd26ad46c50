/* admin — the JSON admin API of the daemon, served on the daemon's one listener (serve.h),
 * with the role each route needs:
 *   GET  /healthz                          public   liveness: {"status":"ok"}, nothing else
 *   GET  /readyz                           public   200 {"ready":true} once every source has
 *                                                   completed a poll, else 503 {"ready":false}
 *   GET  /metrics                          viewer   Prometheus text format 0.0.4
 *   GET  /api/v1/patients[?category=C&limit=N&offset=N]   viewer   the worklist (latest verdicts)
 *   GET  /api/v1/patients/{id}             viewer   profile + verdict + explanation + referrals
 *   GET  /api/v1/referrals[?state=S]       viewer
 *   GET  /api/v1/referrals/{id}            viewer   the referral with its audit trail
 *   POST /api/v1/patients/{id}/rescreen    clinician  screened again on the next pass (409 when
 *                                                   nothing of the patient is cached any more)
 *   POST /api/v1/patients/rescreen         admin    everyone with cached data, again (202
 *                                                   {"patients": N, "rescreen": "queued"})
 *   POST /api/v1/referrals/{id}/approve    clinician
 *   POST /api/v1/referrals/{id}/decline    clinician  (a reason is required)
 *   POST /api/v1/referrals/{id}/cancel     clinician
 *   POST /api/v1/referrals/{id}/retry      admin
 *   GET  /api/v1/audit[?after=ID&limit=N]  admin    audit rows about no referral (sign-ins,
 *                                                   user and token changes)
 *   GET  /api/v1/users                     admin    users, roles, kinds, state (no secrets)
 *   POST /api/v1/users/{name}/disable | enable        admin
 *   POST /api/v1/users/{name}/role         admin    {"role": "clinician"}
 *   GET  /api/v1/users/{name}/tokens       admin    ids, roles, expiry, last use (no secrets)
 *   POST /api/v1/users/{name}/tokens       admin    {"days": N, "role": R, "label": L} -> 201
 *                                                   {"id", "token"}: the token shown this once
 *   POST /api/v1/users/{name}/tokens/{id}/revoke      admin
 * (users and passwords are added with `cartgate users` on the machine, or by OpenID Connect
 * sign-in; every change here is audited with the acting admin, access.h)
 * Authentication, roles, CSRF and the transport are the listener's (serve.h): a per-user API
 * token or the shared service token as "Authorization: Bearer ...", or a session cookie (then
 * state changes carry the CSRF token). An action's body may give a reason: JSON
 * {"reason":"..."} or a form field reason. Every action is audited with the acting person
 * (user name and id, the role acted in, source address, time, reason); the log names the
 * user by id only.
 * Errors are JSON: {"error":{"status":404,"message":"..."}} with 400, 401, 403, 404, 405
 * (with Allow), 409 (transition refused) or 500. Responses never go to the logs.
 *
 * The API knows the daemon only through admin_env: the store, and callbacks for the counters
 * (/metrics) and readiness. */
#ifndef ADMIN_H
#define ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"
#include "serve.h"
#include "store.h"

#define ADMIN_MAX_SOURCES 64 /* sources with counters */
#define ADMIN_MAX_STATUS 24  /* distinct HTTP statuses counted per source */
#define ADMIN_MAX_INTAKE_REFUSE 8 /* reasons of refused referral Bundles (a center) */
#define ADMIN_METRICS_MAX (4u << 20) /* bytes of a /metrics answer */
#define ADMIN_RESCREEN_MAX 256u      /* bytes of a re-screen answer ({"patient": id, ...}) */

/* Why a poll failed (poll_source.h says what each means): the fixed label set of
 * cartgate_poll_failures_total{source,reason}; every value is shown for every source. */
#define ADMIN_POLL_FAIL_REASONS                                                              \
    "connect", "network", "timeout", "tls", "auth", "http_4xx", "http_5xx", "parse",         \
        "incomplete", "ingest", "store", "files", "other"
#define ADMIN_N_POLL_FAIL_REASONS 13

/* The counters of one source. */
typedef struct admin_source_metrics {
    char name[72];
    uint64_t polls_ok, polls_failed;
    uint64_t polls_failed_by[ADMIN_N_POLL_FAIL_REASONS]; /* by ADMIN_POLL_FAIL_REASONS index */
    uint64_t resources;             /* resources ingested (new or changed) */
    uint64_t unchanged;             /* resources seen again without change */
    uint64_t deleted;               /* cached resources removed (deleted at the source) */
    uint64_t refused;               /* resources not stored: id not a FHIR id */
    uint64_t unresolved;            /* resources whose patient reference named no patient */
    uint64_t outcome_issues;        /* OperationOutcome issues inside searchset pages */
    uint64_t bulk_issues;           /* issues in bulk manifests' error[] files */
    bool since_ignored;             /* the server was seen ignoring _since / _lastUpdated */
    int64_t last_success_ms;        /* 0 = never */
    long status[ADMIN_MAX_STATUS];  /* HTTP statuses seen (0 = no response) */
    uint64_t status_n[ADMIN_MAX_STATUS];
    size_t n_status;
} admin_source_metrics;

/* The daemon's counters as /metrics shows them (the gauges are read from the store). */
typedef struct admin_metrics {
    admin_source_metrics src[ADMIN_MAX_SOURCES];
    size_t n_src;
    uint64_t patients_screened;
    uint64_t verdicts[4];           /* screenings by elig_category */
    uint64_t screen_errors;
    uint64_t screen_partial;        /* verdicts made from part of the chart (screen.partial) */
    uint64_t referrals_created;
    uint64_t reloads_ok, reloads_failed;
    uint64_t retention_resources;   /* cached resources removed by store.retention */
    uint64_t notices_sent[2], notices_failed[2], notices_retried[2]; /* [0] email, [1] webhook */
    uint64_t notices_unknown;       /* interrupted while sending, not sent again */
    int64_t started_ms;
    /* the CDS Hooks service (cds.h), when enabled */
    bool cds_enabled;
    uint64_t cds_calls, cds_cards, cds_unauthorized, cds_precondition, cds_bad_request, cds_internal,
        cds_fetches, cds_suppressed;
    /* a center's intake (intake.h), when role center; the inbox gauges come from the store */
    bool intake_enabled;
    uint64_t intake_received, intake_repeated, intake_unauthorized, intake_tokens;
    const char *const *intake_refuse_reasons; /* static names, n_intake_refuse of them */
    size_t n_intake_refuse;                   /* at most ADMIN_MAX_INTAKE_REFUSE */
    uint64_t intake_refused[ADMIN_MAX_INTAKE_REFUSE];
} admin_metrics;

/* The counters of the source called name (a slot is created on first use; the last slot is
 * shared once all are taken). Borrowed from m. */
admin_source_metrics *admin_metrics_source(admin_metrics *m, const char *name);
/* Counts one failed poll of a source by its reason (a name not in ADMIN_POLL_FAIL_REASONS
 * counts as "other"). */
void admin_metrics_count_failure(admin_source_metrics *s, const char *reason);
/* Counts one HTTP status of a source. */
void admin_metrics_count_status(admin_source_metrics *s, long status);

/* What the API may use; everything borrowed until admin_free. */
typedef struct admin_env {
    store *st;
    void *ud;             /* first argument of the callbacks */
    /* The daemon's counters (borrowed for the duration of one request). */
    const admin_metrics *(*metrics)(void *ud);
    /* true once every source completed a poll; *n_sources gets their number. */
    bool (*ready)(void *ud, size_t *n_sources);
    /* The patient's clinical profile as JSON, built now from the cached resources (verdict
     * rows do not keep it): appended to out (owned by the caller). 1, 0 when nothing is
     * cached for the patient, or -1 with err. NULL: the API shows a stored one or null. */
    int (*profile)(void *ud, const char *patient_id, fhir_buf *out, fhir_error *err);
} admin_env;

typedef struct admin admin;

/* The API over env. Caller frees with admin_free() after the listener it was added to. */
admin *admin_new(const admin_env *env);
/* Registers the routes on s (borrowed; must outlive nothing of a: requests end with s).
 * 0, or -1 with err. */
int admin_add_routes(admin *a, serve *s, fhir_error *err);
/* The route table (tests check every route has a role). */
const serve_route *admin_routes(size_t *n);
void admin_free(admin *a);

#endif
